package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mmapWriteEnv makes a test binary, run again by MmapWrite, do the write
// (RunHelper) instead of its tests.
const mmapWriteEnv = "IMAGEFS_TESTENV_MMAP_WRITE"

// MmapWrite writes data at the start of the file at p through a shared
// writable mapping and returns what msync(2) says of writing it back (a
// read-only file system refuses it there, after the kernel changed its
// cached pages). It runs in a process of its own, the test binary run
// again (its TestMain must call RunHelper): a fault on a page of a file
// that this very process serves through FUSE can deadlock it, as the
// faulting thread holds the address space's lock while the server's
// threads may need it to grow the heap.
func MmapWrite(p string, data []byte) error {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), mmapWriteEnv+"="+p, mmapWriteEnv+"_DATA="+string(data))
	out, err := cmd.CombinedOutput()
	var errno int
	if _, serr := fmt.Sscanf(string(out), "mmap write: errno %d", &errno); serr != nil {
		return fmt.Errorf("mmap write helper (does TestMain call testenv.RunHelper?): %v: %s", err, out)
	}
	if errno != 0 {
		return syscall.Errno(errno)
	}
	return nil
}

// RunHelper does what MmapWrite ran the test binary again for, and exits;
// otherwise it returns. TestMain calls it first.
func RunHelper() {
	p := os.Getenv(mmapWriteEnv)
	if p == "" {
		return
	}
	var errno syscall.Errno
	if err := mmapWrite(p, []byte(os.Getenv(mmapWriteEnv+"_DATA"))); err != nil && !errors.As(err, &errno) {
		errno = syscall.EIO
	}
	fmt.Printf("mmap write: errno %d\n", int(errno))
	os.Exit(0)
}

func mmapWrite(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, len(data), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	defer unix.Munmap(m)
	copy(m, data)
	return unix.Msync(m, unix.MS_SYNC)
}

// WaitContent fails the test unless the file at p reads want within a
// second (what a refused write changed in the kernel's cache is dropped
// asynchronously).
func WaitContent(t testing.TB, p, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile(p)
		if got = string(b); err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s reads %q (%v), want %q", p, got, err, strings.TrimSpace(want))
			return
		}
	}
}
