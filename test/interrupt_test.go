package test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/internal/testenv"
	"github.com/imagefs/imagefs/storageview"
)

// TestWriteInterruptedWhilePodmanWrites: a write through the mount waits
// while another process holds the store's records locked for writing, as
// podman's own commands do, but a signal ends the wait (the kernel's
// INTERRUPT, EINTR) and the store is left as it was; once the lock is
// free the same write goes through.
func TestWriteInterruptedWhilePodmanWrites(t *testing.T) {
	// podman holds layers.lock while it imports a layer, images.lock
	// while it writes image records (ln -s reads those to find its target).
	for _, lock := range []string{"overlay-layers/layers.lock", "overlay-images/images.lock"} {
		t.Run(filepath.Dir(lock), func(t *testing.T) { interruptedWhileLocked(t, lock) })
	}
}

func interruptedWhileLocked(t *testing.T, lock string) {
	e := newWenv(t, "overlay", storageview.Options{}, fs.Options{})
	before := e.podmanImages()

	// Hold the lock for writing from another process, as podman does.
	release := testenv.HoldWriteLock(t, filepath.Join(e.s.GraphRoot, lock))

	link := e.p("names/localhost/interrupted:1")
	ln := exec.Command("ln", "-s", "../../images/"+e.base.ID, link)
	if err := ln.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ln.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("ln -s returned while another process held the store's lock: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	ln.Process.Signal(syscall.SIGINT)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		release()
		<-done
		t.Fatal("ln -s did not end on SIGINT while another process held the store's lock")
	}
	var interrupted []string
	for _, l := range e.logs.lines() {
		if strings.Contains(l, "/names/localhost/interrupted:1") {
			interrupted = append(interrupted, l)
		}
	}
	if len(interrupted) != 1 || !strings.Contains(interrupted[0], "EINTR") {
		t.Errorf("log lines of the interrupted ln -s: %q, want one naming EINTR", interrupted)
	}

	release()
	if after := e.podmanImages(); after != before {
		t.Errorf("the interrupted ln -s changed podman's listing:\nbefore %s\nafter  %s", before, after)
	}
	if out, err := exec.Command("ln", "-s", "../../images/"+e.base.ID, link).CombinedOutput(); err != nil {
		t.Fatalf("ln -s once the lock is free: %v %s", err, out)
	}
	if err := readlinkTo(link, e.base.ID); err != nil {
		t.Error(err)
	}
}
