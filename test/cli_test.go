package test

// End-to-end tests of the imagefs command line: the real binary against a
// real store, real kernel mounts, podman as the witness that the store is
// free again afterwards. Helpers are in harness_test.go.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/internal/fixture"
	"github.com/imagefs/imagefs/internal/testenv"
	"golang.org/x/sys/unix"
)

// topLevel is what the root of every mount holds (docs/LAYOUT.md).
var topLevel = []string{"df", "digests", "images", "layers", "names"}

// checkTree lists the mount and its images/ directory through the kernel.
func checkTree(t *testing.T, mp, id string) {
	t.Helper()
	ents, err := os.ReadDir(mp)
	if err != nil {
		t.Fatalf("ls %s: %v", mp, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	for _, want := range topLevel {
		if !slices.Contains(names, want) {
			t.Errorf("ls %s = %v, missing %q", mp, names, want)
		}
	}
	imgs, err := os.ReadDir(filepath.Join(mp, "images"))
	if err != nil {
		t.Fatalf("ls %s/images: %v", mp, err)
	}
	if len(imgs) != 1 || imgs[0].Name() != id {
		t.Errorf("ls images = %v, want exactly [%s]", imgs, id)
	}
}

// TestCLIMountLsUmount: `imagefs mount` returns once the tree is usable and
// leaves a detached server; `imagefs umount` unmounts and returns after the
// server exited, leaving the store free and nothing mounted.
func TestCLIMountLsUmount(t *testing.T) {
	e, added := newCLIEnv(t)
	mp := e.mkdir("mnt")
	logFile := filepath.Join(e.dir, "imagefs.log")

	pid := e.mountBackground(mp, "--log-file", logFile)
	checkTree(t, mp, added.ID)
	if sid := sessionOf(t, pid); sid != pid {
		t.Errorf("server %d runs in session %d, want its own session (detached)", pid, sid)
	}

	r := e.run(60*time.Second, "umount", mp)
	if r.code != 0 || r.stderr != "" || r.stdout != "" {
		t.Fatalf("imagefs umount: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if isImagefsMount(t, mp) {
		t.Fatalf("%s still mounted after imagefs umount", mp)
	}
	// umount returns once the server has shut the store down: the overlay
	// driver's own mount under the graph root is already gone. The process
	// exit follows at once.
	storeShutDown(t, e)
	waitGone(t, pid, 5*time.Second)
	e.storeUsable(added.ID)

	log, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("--log-file: %v", err)
	}
	if !bytes.Contains(log, []byte(mp)) {
		t.Errorf("log file does not mention the mountpoint:\n%s", log)
	}
	if st, err := os.Stat(logFile); err != nil {
		t.Error(err)
	} else if st.Mode().Perm() != 0o600 {
		t.Errorf("log file mode %v, want 0600 (it names paths inside images)", st.Mode().Perm())
	}
}

// TestCLIForegroundSignals: with -f the command itself serves; SIGTERM and
// SIGINT unmount cleanly and exit 0. The SIGINT run also checks that
// --debug logs FUSE requests to stderr.
func TestCLIForegroundSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			e, added := newCLIEnv(t)
			mp := e.mkdir("mnt")
			debug := sig == syscall.SIGINT
			args := append([]string{"mount", "-f"}, e.storeFlags()...)
			if debug {
				args = append(args, "--debug")
			}
			cmd := exec.Command(e.bin, append(args, mp)...)
			cmd.Env = e.env
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				unmountRetry(t, mp)
			})

			deadline := time.Now().Add(60 * time.Second)
			for !isImagefsMount(t, mp) {
				select {
				case err := <-exited:
					t.Fatalf("imagefs mount -f exited before mounting: %v\nstderr: %s", err, stderr.String())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("imagefs mount -f did not mount within 60s\nstderr: %s", stderr.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			checkTree(t, mp, added.ID)

			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-exited:
				if err != nil {
					t.Fatalf("after %s: %v (want exit 0)\nstderr: %s", sig, err, stderr.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("imagefs mount -f still running 30s after %s\nstderr: %s", sig, stderr.String())
			}
			if isImagefsMount(t, mp) {
				t.Fatalf("%s still mounted after %s", mp, sig)
			}
			storeShutDown(t, e)
			if got := strings.Contains(stderr.String(), "LOOKUP"); got != debug {
				t.Errorf("--debug %v, but FUSE requests in the log: %v\nstderr: %s", debug, got, stderr.String())
			}
			e.storeUsable(added.ID)
		})
	}
}

// TestCLIDefaultStore: without storage flags imagefs opens the store the
// configuration names (CONTAINERS_STORAGE_CONF here), as podman does.
func TestCLIDefaultStore(t *testing.T) {
	e, added := newCLIEnv(t)
	mp := e.mkdir("mnt")
	r := e.run(60*time.Second, "mount", mp)
	if r.code != 0 {
		t.Fatalf("imagefs mount without storage flags: exit %d: %s", r.code, r.stderr)
	}
	t.Cleanup(func() { unmountRetry(t, mp) })
	checkTree(t, mp, added.ID)
	if r := e.run(60*time.Second, "umount", mp); r.code != 0 {
		t.Fatalf("imagefs umount: exit %d: %s", r.code, r.stderr)
	}
}

// TestCLIExternalUnmount: a plain umount or fusermount3 -u ends the
// background server too, and it releases the store.
func TestCLIExternalUnmount(t *testing.T) {
	for _, tc := range []struct {
		name    string
		unmount func(mp string) error
	}{
		{"umount2", func(mp string) error { return syscall.Unmount(mp, 0) }},
		{"fusermount3", func(mp string) error {
			out, err := exec.Command("fusermount3", "-u", mp).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, added := newCLIEnv(t)
			if tc.name == "fusermount3" {
				if _, err := exec.LookPath("fusermount3"); err != nil {
					t.Fatalf("fusermount3 (fuse3, installed by make test) is missing: %v", err)
				}
			}
			mp := e.mkdir("mnt")
			pid := e.mountBackground(mp)
			checkTree(t, mp, added.ID)
			if err := tc.unmount(mp); err != nil {
				t.Fatalf("unmount: %v", err)
			}
			waitGone(t, pid, 10*time.Second)
			storeShutDown(t, e)
			e.storeUsable(added.ID)
			r := e.run(10*time.Second, "umount", mp)
			oneErrorLine(t, "imagefs umount after external unmount", r, "not mounted")
		})
	}
}

// TestCLIMountErrors: errors that stop a mount print one line and exit
// non-zero, in both modes, and leave nothing mounted and no process behind.
func TestCLIMountErrors(t *testing.T) {
	e, _ := newCLIEnv(t)
	file := filepath.Join(e.dir, "a-file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	mp := e.mkdir("mnt")
	missing := filepath.Join(e.dir, "missing")
	badStore := []string{"--root", filepath.Join(file, "store"), "--runroot", filepath.Join(e.dir, "run2"), "--storage-driver", "overlay"}

	newRoot, newRun := filepath.Join(e.dir, "new", "graph"), filepath.Join(e.dir, "newrun")
	badDriver := []string{"--root", newRoot, "--runroot", newRun, "--storage-driver", "no-such-driver"}

	cases := []struct {
		name string
		args []string // after "mount" [-f]
		want string
	}{
		{"missing mountpoint", append(e.storeFlags(), missing), missing + " does not exist"},
		{"mountpoint is a file", append(e.storeFlags(), file), file + " is not a directory"},
		{"store under a regular file", append(badStore, mp), "cannot open the image store: --root " + file + "/store: " + file + " is not a directory"},
		{"unknown storage driver", append(badDriver, mp), "cannot open the image store"},
		{"no mountpoint", e.storeFlags(), "exactly one MOUNTPOINT"},
		{"two mountpoints", append(e.storeFlags(), mp, mp), "exactly one MOUNTPOINT"},
		{"unknown flag", []string{"--no-such-flag", mp}, "unknown flag"},
		{"mountpoint is the graph root", append(e.storeFlags(), e.store.GraphRoot), "would cover the store's graph root " + e.store.GraphRoot},
		{"mountpoint above the run root", append(e.storeFlags(), filepath.Dir(e.store.RunRoot)), "would cover the store's"},
		{"mountpoint inside the graph root", append(e.storeFlags(), filepath.Join(e.store.GraphRoot, "overlay-images")),
			"is inside the store's graph root " + e.store.GraphRoot},
		{"mountpoint is an additional image store", append(e.storeFlags(), "--storage-opt", "overlay.imagestore="+mp, mp),
			"would cover the store's additional image store " + mp},
	}
	for _, mode := range []string{"background", "foreground"} {
		for _, tc := range cases {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				args := []string{"mount"}
				if mode == "foreground" {
					args = append(args, "-f")
				}
				r := e.run(60*time.Second, append(args, tc.args...)...)
				oneErrorLine(t, tc.name, r, tc.want)
				assertNothingLeft(t, e)
				// A refused mount changes nothing: not even the directories
				// of a store it could not open.
				for _, p := range []string{filepath.Join(e.dir, "run2"), filepath.Join(e.dir, "new"), newRun} {
					if _, err := os.Lstat(p); err == nil {
						t.Errorf("the refused mount created %s", p)
					}
				}
			})
		}
	}
}

// TestCLIMountNoFUSE: without /dev/fuse, or with one the user may not
// open (fusermount3 opens it as the user too), or with --allow-other that
// /etc/fuse.conf does not allow users, the mount is refused with one line.
// The test makes its own /dev (and fuse.conf) in a private mount namespace.
func TestCLIMountNoFUSE(t *testing.T) {
	e, _ := newCLIEnv(t)
	for _, tool := range []string{"unshare", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s (util-linux) is needed: %v", tool, err)
		}
	}
	// A mountpoint and a binary another user can reach.
	shared, err := os.MkdirTemp("/tmp", "ifsnf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	testenv.NoMountsLeft(t, shared)
	bin := filepath.Join(shared, "imagefs")
	if out, err := exec.Command("cp", e.bin, bin).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	mp := filepath.Join(shared, "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	nobody := []string{"setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"}
	for _, c := range []struct {
		name, dev string
		as        []string // the command running imagefs
		extra     []string // mount flags
		want      string
	}{
		{"no device", "", nil, nil, "FUSE is not available: open /dev/fuse: no such file or directory"},
		{"device of root's alone, another user", "mknod -m 600 /dev/fuse c 10 229 && ", nobody, nil,
			"FUSE is not available to uid 65534: open /dev/fuse: permission denied"},
		{"allow-other without user_allow_other, another user",
			"mknod -m 666 /dev/fuse c 10 229 && mount --bind /dev/null /etc/fuse.conf && ", nobody, []string{"--allow-other"},
			"--allow-other needs user_allow_other in /etc/fuse.conf for a user other than root"},
	} {
		for _, mode := range []string{"background", "foreground"} {
			t.Run(c.name+"/"+mode, func(t *testing.T) {
				args := append([]string{"-m", "--propagation", "private", "sh", "-c",
					`mount -t tmpfs tmpfs /dev && mknod -m 666 /dev/null c 1 3 && ` + c.dev + `exec "$@"`, "sh"}, c.as...)
				args = append(append(args, bin, "mount"), c.extra...)
				if mode == "foreground" {
					args = append(args, "-f")
				}
				args = append(append(args, e.storeFlags()...), mp)
				cmd := exec.Command("unshare", args...)
				cmd.Env = e.env
				var out, errb bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &errb
				err := cmd.Run()
				r := runResult{stdout: out.String(), stderr: errb.String()}
				if ee, ok := err.(*exec.ExitError); ok {
					r.code = ee.ExitCode()
				} else if err != nil {
					t.Fatal(err)
				}
				oneErrorLine(t, c.name, r, c.want)
				assertNothingLeft(t, e)
			})
		}
	}
}

// TestCLIUmountErrors: imagefs umount refuses what it must not touch, and a
// busy mount stays until it is free (or is detached with --lazy).
func TestCLIUmountErrors(t *testing.T) {
	e, added := newCLIEnv(t)
	plain := e.mkdir("plain")

	r := e.run(10*time.Second, "umount", plain)
	oneErrorLine(t, "umount of a plain directory", r, "not mounted")
	r = e.run(10*time.Second, "umount", "/proc")
	oneErrorLine(t, "umount of /proc", r, "not an imagefs mount")
	r = e.run(10*time.Second, "umount")
	oneErrorLine(t, "umount without argument", r, "exactly one MOUNTPOINT")
	r = e.run(10*time.Second, "umount", "")
	oneErrorLine(t, "umount of an empty path", r, "MOUNTPOINT given is empty")
	r = e.run(10*time.Second, "umount", filepath.Join(plain, "nonexistent"))
	oneErrorLine(t, "umount of a path that does not exist", r, "does not exist")
	r = e.run(10*time.Second, "umount", "--timeout", "0", plain)
	oneErrorLine(t, "umount --timeout 0", r, "give a positive duration")

	mp := e.mkdir("mnt")
	pid := e.mountBackground(mp)
	busy, err := os.Open(filepath.Join(mp, "images"))
	if err != nil {
		t.Fatal(err)
	}
	r = e.runAs(&syscall.Credential{Uid: 65534, Gid: 65534}, 30*time.Second, "umount", mp)
	oneErrorLine(t, "umount by another user", r, "mounted by uid 0: only root or that user may unmount it")
	r = e.run(30*time.Second, "umount", mp)
	oneErrorLine(t, "umount of a busy mount", r, "busy")
	if !isImagefsMount(t, mp) || processGone(pid) {
		t.Fatalf("a refused umount must leave the mount and its server alone")
	}

	// --lazy detaches at once; the server serves the open handle until
	// it is closed, then exits.
	r = e.run(30*time.Second, "umount", "--lazy", mp)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("imagefs umount --lazy: exit %d, stderr %q", r.code, r.stderr)
	}
	if isImagefsMount(t, mp) {
		t.Fatalf("%s still mounted after umount --lazy", mp)
	}
	if _, err := busy.ReadDir(-1); err != nil {
		t.Errorf("reading the open directory after a lazy unmount: %v", err)
	}
	if processGone(pid) {
		t.Errorf("server exited while a handle was still open")
	}
	r = e.run(60*time.Second, append(append([]string{"mount"}, e.storeFlags()...), mp)...)
	oneErrorLine(t, "mount while the detached mount is still served", r, "detached")
	busy.Close()
	waitGone(t, pid, 10*time.Second)
	e.storeUsable(added.ID)
}

// TestCLIAlreadyMounted: a second mount on the same mountpoint is refused
// and the first keeps serving.
func TestCLIAlreadyMounted(t *testing.T) {
	e, added := newCLIEnv(t)
	mp := e.mkdir("mnt")
	pid := e.mountBackground(mp)
	for _, fg := range []bool{false, true} {
		args := []string{"mount"}
		if fg {
			args = append(args, "-f")
		}
		r := e.run(60*time.Second, append(append(args, e.storeFlags()...), mp)...)
		oneErrorLine(t, fmt.Sprintf("second mount (foreground %v)", fg), r, "already mounted")
	}
	if got := imagefsProcesses(t, e.bin, mp); len(got) != 1 || got[0] != pid {
		t.Errorf("imagefs processes for %s = %v, want only %d", mp, got, pid)
	}
	checkTree(t, mp, added.ID)
	e.umount(mp, pid)
}

// TestCLIKilledServer: after the server is killed, a new mount names the
// dead mount left behind (even while the kernel still has the root's
// attributes cached), `imagefs umount` clears it, and a mount works again.
func TestCLIKilledServer(t *testing.T) {
	e, added := newCLIEnv(t)
	mp := e.mkdir("mnt")
	pid := e.mountBackground(mp)
	checkTree(t, mp, added.ID)
	if _, err := os.Stat(mp); err != nil { // the root's attributes, cached for a second
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, 5*time.Second)
	r := e.run(60*time.Second, append(append([]string{"mount"}, e.storeFlags()...), mp)...)
	oneErrorLine(t, "mount over a dead mount", r, "dead FUSE mount is still there (run `imagefs umount "+mp)
	if r := e.run(30*time.Second, "umount", mp); r.code != 0 {
		t.Fatalf("umount of the dead mount: %d %s", r.code, r.stderr)
	}
	pid = e.mountBackground(mp)
	checkTree(t, mp, added.ID)
	e.umount(mp, pid)
}

// TestCLIKilledDuringRemoval: a server killed while it removes an image
// still exits, so the rm waiting for it fails instead of hanging for good.
// The kernel holds names/localhost/ locked until the unlink is answered:
// an invalidation of that directory sent meanwhile would wait for the
// lock in the kernel, and keep the killed process from exiting.
func TestCLIKilledDuringRemoval(t *testing.T) {
	testenv.RequireFUSE(t)
	s := fixture.NewStore(t, "overlay")
	var files []fixture.Entry
	for i := range 60000 { // so that deleting the layer takes a while
		files = append(files, fixture.File(fmt.Sprintf("d%d/f%d", i/1000, i), ""))
	}
	big := s.Add(t, fixture.Image{Names: []string{"localhost/big:1"}, Layers: []fixture.Layer{{Entries: files}}})
	kept := s.Add(t, fixture.Image{Names: []string{"localhost/kept:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("k", "k\n")}}}})
	s.Close()
	e := cliEnvFor(t, s)
	mp := e.mkdir("mnt")
	pid := e.mountBackground(mp)
	name := filepath.Join(mp, "names", "localhost", "big:1")
	if _, err := os.Lstat(name); err != nil {
		t.Fatal(err)
	}
	rm := exec.Command("rm", name)
	if err := rm.Start(); err != nil {
		t.Fatal(err)
	}
	rmDone := make(chan error, 1)
	go func() { rmDone <- rm.Wait() }()
	// The record goes first, then the layer's files: kill in between, once
	// the store's follower has seen the change.
	records := filepath.Join(s.GraphRoot, "overlay-images", "images.json")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if b, err := os.ReadFile(records); err == nil && !bytes.Contains(b, []byte(big.ID)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the image's record is still there 30 s after rm began")
		}
	}
	time.Sleep(20 * time.Millisecond)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-rmDone:
		t.Logf("rm after the kill: %v", err)
	case <-time.After(10 * time.Second):
		states := threadStates(pid)
		if r := e.run(30*time.Second, "umount", "--abort", mp); r.code != 0 { // frees them
			t.Errorf("umount --abort: %d %s", r.code, r.stderr)
		}
		t.Fatalf("rm still waits 10 s after the server was killed (threads: %s)", states)
	}
	if r := e.run(30*time.Second, "umount", mp); r.code != 0 {
		t.Fatalf("umount of the dead mount: %d %s", r.code, r.stderr)
	}
	e.storeUsable(kept.ID)
}

// threadStates lists the states of pid's threads ("D" waits in the kernel).
func threadStates(pid int) string {
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	var states []string
	for _, st := range stats {
		if b, err := os.ReadFile(st); err == nil {
			if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
				states = append(states, string(b[i+2]))
			}
		}
	}
	return strings.Join(states, " ")
}

// TestCLIUmountAbort: umount --abort ends the connection of a mount that
// is busy: the open directory fails with ENOTCONN, the mount is gone and
// the server exits.
func TestCLIUmountAbort(t *testing.T) {
	e, added := newCLIEnv(t)
	mp := e.mkdir("mnt")
	pid := e.mountBackground(mp)
	busy, err := os.Open(filepath.Join(mp, "images", added.ID))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if r := e.run(30*time.Second, "umount", "--abort", mp); r.code != 0 || r.stderr != "" {
		t.Fatalf("imagefs umount --abort: exit %d, stderr %q", r.code, r.stderr)
	}
	if isImagefsMount(t, mp) {
		t.Errorf("%s still mounted after umount --abort", mp)
	}
	waitGone(t, pid, 10*time.Second)
	if _, err := busy.ReadDir(-1); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("reading the open directory after the abort: %v, want ENOTCONN", err)
	}
	e.storeUsable(added.ID)
}

// TestCLIDeadForeignMount: over a dead FUSE mount of another file system
// the refusal says how to clear it (imagefs umount would refuse it).
func TestCLIDeadForeignMount(t *testing.T) {
	e, _ := newCLIEnv(t)
	if _, err := exec.LookPath("fuse-overlayfs"); err != nil {
		if os.Getenv(testenv.RequireAllVar) == "1" {
			t.Fatalf("fuse-overlayfs is missing and %s=1", testenv.RequireAllVar)
		}
		t.Skip("fuse-overlayfs is missing")
	}
	lower, mp := e.mkdir("lower"), e.mkdir("fo")
	fo := exec.Command("fuse-overlayfs", "-f", "-o", "lowerdir="+lower, mp)
	if err := fo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("fusermount3", "-u", mp).Run() })
	deadline := time.Now().Add(10 * time.Second)
	for m, _ := fs.FindMount(mp); m == nil; m, _ = fs.FindMount(mp) {
		if time.Now().After(deadline) {
			t.Fatal("fuse-overlayfs did not mount")
		}
		time.Sleep(20 * time.Millisecond)
	}
	fo.Process.Kill()
	fo.Wait()
	r := e.run(60*time.Second, append(append([]string{"mount"}, e.storeFlags()...), mp)...)
	oneErrorLine(t, "mount over a dead fuse-overlayfs mount", r, "a dead FUSE mount (fuse.fuse-overlayfs) is still there (run `fusermount3 -u "+mp)
}

// TestCLIRecordedDriver: a store made with one driver opened under a
// configuration naming another is opened with the driver it was made
// with, as podman does; asked for the other driver explicitly, the mount
// is refused, and the store gets none of that driver's directories.
func TestCLIRecordedDriver(t *testing.T) {
	e, added := newCLIEnv(t) // an overlay store
	e.useStorageConf("vfs", "")
	mp := e.mkdir("mnt")
	r := e.run(60*time.Second, "mount", mp) // no store flags: the configuration's store
	if r.code != 0 {
		t.Fatalf("imagefs mount: exit %d\nstderr: %s", r.code, r.stderr)
	}
	t.Cleanup(func() { unmountRetry(t, mp) })
	pid := serverPid(t, e.bin, mp)
	checkTree(t, mp, added.ID)
	e.umount(mp, pid)

	r = e.run(60*time.Second, "mount", "--root", e.store.GraphRoot, "--runroot", e.store.RunRoot, "--storage-driver", "vfs", mp)
	oneErrorLine(t, "mount with another driver", r, "holds images of the overlay driver, none of vfs: give --storage-driver overlay")
	if _, err := os.Stat(filepath.Join(e.store.GraphRoot, "vfs-images")); !os.IsNotExist(err) {
		t.Errorf("the refused mount made the vfs driver's directories in the store: %v", err)
	}
}

// TestCLITransientStoreContainers: with transient_store = true, which
// podman 4.3 ignores (it keeps containers in the graph root), an image a
// container of podman's uses is still in use: its removal is EBUSY.
func TestCLITransientStoreContainers(t *testing.T) {
	e, added := newCLIEnv(t)
	e.useStorageConf("overlay", "transient_store = true\n")
	mp := e.mkdir("mnt")
	r := e.run(60*time.Second, "mount", mp)
	if r.code != 0 {
		t.Fatalf("imagefs mount: exit %d\nstderr: %s", r.code, r.stderr)
	}
	t.Cleanup(func() { unmountRetry(t, mp) })
	// The container comes after the mount: the store's own records of
	// containers (in the run root) never change, podman's do.
	create := exec.Command("podman", "create", "--pull=never", "--net", "none", added.ID, "/bin/true")
	create.Env = e.env
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("podman create: %v\n%s", err, out)
	}
	for _, p := range []string{"images/" + added.ID, "names/localhost/cli/hello:latest"} {
		if _, err := os.Lstat(filepath.Join(mp, p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Rmdir(filepath.Join(mp, "images", added.ID)); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("rmdir images/<id> of an image a container uses: %v, want EBUSY", err)
	}
	if _, err := os.Lstat(filepath.Join(mp, "images", added.ID)); err != nil {
		t.Errorf("the image is gone: %v", err)
	}
}

// TestCLIRemoveImageOnAdditionalLayer: an image of the writable store
// whose layer is an additional store's (podman import of a tarball that
// store already holds) is removed without error, as podman rmi does; the
// additional store's image stays.
func TestCLIRemoveImageOnAdditionalLayer(t *testing.T) {
	e, _ := newCLIEnv(t)
	dir := shortTempDir(t)
	tarball := filepath.Join(dir, "a.tar")
	if err := os.WriteFile(tarball, tarOfFiles(t, map[string]string{"a": "a\n"}), 0o644); err != nil {
		t.Fatal(err)
	}
	ro, rw := filepath.Join(dir, "ro"), filepath.Join(dir, "rw")
	flags := func(root string, extra ...string) []string {
		return append([]string{"--root", root + "/g", "--runroot", root + "/r", "--storage-driver", "overlay"}, extra...)
	}
	podman := func(args ...string) string {
		cmd := exec.Command("podman", args...)
		cmd.Env = e.env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("podman %v: %v", args, err)
		}
		for _, root := range []string{ro, rw} { // its private bind mount of the driver home
			syscall.Unmount(filepath.Join(root, "g", "overlay"), 0)
		}
		return strings.TrimPrefix(strings.TrimSpace(string(out)), "sha256:")
	}
	podman(append(flags(ro), "import", "-q", tarball, "localhost/a:1")...)
	addl := "overlay.imagestore=" + ro + "/g"
	id := podman(append(flags(rw, "--storage-opt", addl), "import", "-q", tarball, "localhost/prim:1")...)

	mp := e.mkdir("mnt")
	r := e.run(60*time.Second, append(append([]string{"mount"}, flags(rw, "--storage-opt", addl)...), mp)...)
	if r.code != 0 {
		t.Fatalf("imagefs mount: exit %d\nstderr: %s", r.code, r.stderr)
	}
	t.Cleanup(func() { unmountRetry(t, mp) })
	pid := serverPid(t, e.bin, mp)
	if err := syscall.Unlink(filepath.Join(mp, "names", "localhost", "prim:1")); err != nil {
		t.Errorf("rm of the last name of the image on the additional store's layer: %v", err)
	}
	// The same tarball made the same image in both stores: what is left
	// is the additional store's.
	if _, err := os.Lstat(filepath.Join(mp, "names", "localhost", "prim:1")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the removed name: %v, want ENOENT", err)
	}
	if target, err := os.Readlink(filepath.Join(mp, "names", "localhost", "a:1")); err != nil || !strings.HasSuffix(target, id) {
		t.Errorf("the additional store's image: %q, %v", target, err)
	}
	if out := podman(append(flags(rw, "--storage-opt", addl), "images", "-a", "--format", "{{.ReadOnly}} {{.Names}}")...); out != "true [localhost/a:1]" {
		t.Errorf("podman images after the removal: %q", out)
	}
	e.umount(mp, pid) // it has shut the store down (and its driver's mount)
}

// TestCLIImageStore: with storage.conf's imagestore set, the images and
// their layers live there, not in the graph root. The tree shows their
// files, and removing an image deletes its own layer from the image store
// and keeps the layer another image shares.
func TestCLIImageStore(t *testing.T) {
	s := fixture.NewStoreWithImageStore(t, "overlay")
	base := fixture.Layer{Entries: []fixture.Entry{fixture.File("etc/base", "base\n")}}
	kept := s.Add(t, fixture.Image{Names: []string{"localhost/kept:1"}, Layers: []fixture.Layer{base}})
	gone := s.Add(t, fixture.Image{Names: []string{"localhost/gone:1"}, Layers: []fixture.Layer{base, {Entries: []fixture.Entry{
		fixture.File("etc/own", "own\n"),
	}}}})
	s.Close()
	layerDir := func(id string) string { return filepath.Join(s.ImageStore, "overlay", id) }
	for _, id := range gone.LayerIDs {
		if _, err := os.Stat(layerDir(id)); err != nil {
			t.Fatalf("the fixture's layer is not in the image store: %v", err)
		}
	}
	e := cliEnvFor(t, s)
	mp := e.mkdir("mnt")
	pid := e.mountBackground(mp)
	for path, want := range map[string]string{
		"images/" + gone.ID + "/rootfs/etc/own":           "own\n",
		"names/localhost/kept:1/rootfs/etc/base":          "base\n",
		"layers/" + gone.LayerIDs[1] + "/diff/etc/own":    "own\n",
		"images/" + kept.ID + "/layers/000/diff/etc/base": "base\n",
	} {
		if got, err := os.ReadFile(filepath.Join(mp, path)); err != nil || string(got) != want {
			t.Errorf("cat %s = %q, %v; want %q", path, got, err, want)
		}
	}
	if err := syscall.Unlink(filepath.Join(mp, "names", "localhost", "gone:1")); err != nil {
		t.Fatalf("rm of the image's last name: %v", err)
	}
	e.umount(mp, pid)
	if _, err := os.Stat(layerDir(gone.LayerIDs[1])); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the removed image's own layer is still in the image store: %v", err)
	}
	if _, err := os.Stat(layerDir(gone.LayerIDs[0])); err != nil {
		t.Errorf("the layer the kept image shares: %v", err)
	}
	if _, err := s.Store.Image(kept.ID); err != nil {
		t.Errorf("the kept image: %v", err)
	}
	if _, err := s.Store.Image(gone.ID); err == nil {
		t.Errorf("the removed image is still in the store")
	}
}

// TestCLIVersion: `imagefs version` names itself and the pinned libraries.
func TestCLIVersion(t *testing.T) {
	bin := imagefsBin(t)
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("imagefs version: %v", err)
	}
	s := string(out)
	if !strings.HasPrefix(s, "imagefs ") {
		t.Errorf("imagefs version = %q, want it to start with \"imagefs \"", s)
	}
	for _, want := range []string{"go.podman.io/storage v1.64.2", "go.podman.io/image/v5 v5.41.2", "github.com/hanwen/go-fuse/v2 v2.12.1"} {
		if !strings.Contains(s, want) {
			t.Errorf("imagefs version does not list %q:\n%s", want, s)
		}
	}
}

// assertNothingLeft fails if a mount or an imagefs process for the test's
// scratch dir survives.
func assertNothingLeft(t *testing.T, e *cliEnv) {
	t.Helper()
	if left, err := testenv.MountsUnder(e.dir); err != nil || len(left) > 0 {
		t.Errorf("mounts left under %s: %v %v", e.dir, left, err)
		for _, m := range left {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		procs := imagefsProcesses(t, e.bin, e.dir)
		if len(procs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("imagefs processes left running: %v", procs)
			for _, p := range procs {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// storeShutDown fails unless the store's directory is free of mounts (the
// overlay driver keeps a private bind mount on <graphroot>/overlay while a
// store is open; Shutdown removes it).
func storeShutDown(t *testing.T, e *cliEnv) {
	t.Helper()
	left, err := testenv.MountsUnder(e.store.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("store not shut down: still mounted: %v", left)
	}
}

// sessionOf returns the session id of pid (field 6 of /proc/<pid>/stat).
func sessionOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// state ppid pgrp session
	sid, err := strconv.Atoi(fields[3])
	if err != nil {
		t.Fatal(err)
	}
	return sid
}

// TestCLIReadOnlyStore: a store on a read-only file system cannot be
// opened (containers/storage writes its lock files even to read): the
// mount is refused with one line that says how to browse it, and that
// advice works: the store's images show through an empty writable one.
func TestCLIReadOnlyStore(t *testing.T) {
	e, added := newCLIEnv(t)
	ro := e.mkdir("ro")
	if err := syscall.Mount(e.store.GraphRoot, ro, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(ro, syscall.MNT_DETACH) })
	if err := syscall.Mount("", ro, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	mp := e.mkdir("mnt")
	r := e.run(60*time.Second, "mount", "--root", ro, "--runroot", e.store.RunRoot, "--storage-driver", "overlay", mp)
	lock := filepath.Join(ro, "storage.lock")
	oneErrorLine(t, "mount of a read-only store", r, "open "+lock+": read-only file system (to browse a read-only store, "+
		"give it as an additional image store: --root DIR --runroot DIR/run --storage-opt additionalimagestore="+ro+", DIR empty and writable)")
	if strings.Count(r.stderr, lock) != 1 {
		t.Errorf("the lock file's path is repeated: %s", r.stderr)
	}

	dir := filepath.Join(e.dir, "browse")
	r = e.run(60*time.Second, "mount", "--root", dir, "--runroot", filepath.Join(dir, "run"), "--storage-driver", "overlay",
		"--storage-opt", "additionalimagestore="+ro, mp)
	if r.code != 0 {
		t.Fatalf("imagefs mount as the advice says: exit %d\nstderr: %s", r.code, r.stderr)
	}
	t.Cleanup(func() { unmountRetry(t, mp) })
	pid := serverPid(t, e.bin, mp)
	checkTree(t, mp, added.ID)
	if err := os.Remove(filepath.Join(mp, "names", "localhost", "cli", "hello:1")); !errors.Is(err, syscall.EROFS) {
		t.Errorf("rm of a name of the read-only store: %v, want EROFS", err)
	}
	e.umount(mp, pid)
}

// TestCLILogGuard: the server's log keeps one line per refusal whatever
// the path holds (a newline in a name cannot forge a line), and a flood of
// refusals writes a bounded number of lines.
func TestCLILogGuard(t *testing.T) {
	e, added := newCLIEnv(t)
	mp := e.mkdir("mnt")
	logFile := filepath.Join(e.dir, "imagefs.log")
	pid := e.mountBackground(mp, "--log-file", logFile)
	rootfs := filepath.Join(mp, "images", added.ID, "rootfs")
	forged := "x\nimagefs[1]: a forged line"
	if err := os.WriteFile(filepath.Join(rootfs, "etc", forged), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("create under rootfs/: %v, want EROFS", err)
	}
	for i := range 1000 {
		if err := os.Mkdir(filepath.Join(rootfs, fmt.Sprintf("flood-%d", i)), 0o755); !errors.Is(err, syscall.EROFS) {
			t.Fatalf("mkdir under rootfs/: %v, want EROFS", err)
		}
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	if want := `/etc/x\nimagefs[1]: a forged line: refused`; !strings.Contains(log, want) {
		t.Errorf("the refusal is not logged as %q:\n%s", want, log)
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.HasPrefix(line, "imagefs[1]") {
			t.Errorf("a forged line: %q", line)
		}
	}
	if n := strings.Count(log, "mkdir "); n < 50 || n > 200 {
		t.Errorf("1000 refused mkdirs wrote %d lines, want the first ones only (about 100)", n)
	}
	// The server's own lines are never left out, and it says how many
	// of the others were.
	e.umount(mp, pid)
	if b, err = os.ReadFile(logFile); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if n := len(lines); n < 2 || !strings.Contains(lines[n-2], "lines of refusals and request errors were not logged") ||
		!strings.Contains(lines[n-1], "unmounted "+mp) {
		t.Errorf("the log does not end with the count of lines left out and the unmount:\n%s", strings.Join(lines[max(0, len(lines)-3):], "\n"))
	}
}

// TestCLIReadOnlyMount: `imagefs mount --read-only` is a read-only mount:
// the kernel refuses every change with EROFS, for root as for a mounting
// user whose modes would otherwise say EACCES, and the store is unchanged.
func TestCLIReadOnlyMount(t *testing.T) {
	e, added := newCLIEnv(t)
	mp := e.mkdir("mnt")
	pid := e.mountBackground(mp, "--read-only")
	var st syscall.Statfs_t
	if err := syscall.Statfs(mp, &st); err != nil || st.Flags&0x1 == 0 { // ST_RDONLY
		t.Fatalf("statfs of the --read-only mount: flags %#x, %v; want ST_RDONLY", st.Flags, err)
	}
	checkTree(t, mp, added.ID)
	name := filepath.Join(mp, "names", "localhost", "cli", "hello:1")
	for what, change := range map[string]func() error{
		"rm":     func() error { return os.Remove(name) },
		"ln -s":  func() error { return os.Symlink("../../../images/"+added.ID, name+"x") },
		"rmdir":  func() error { return os.Remove(filepath.Join(mp, "images", added.ID)) },
		"mkdir":  func() error { return os.Mkdir(filepath.Join(mp, "names", "quay.io"), 0o755) },
		"rename": func() error { return os.Rename(name, name+"y") },
	} {
		if err := change(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s on a --read-only mount: %v, want EROFS", what, err)
		}
	}
	if _, err := os.Lstat(name); err != nil {
		t.Errorf("the name is gone: %v", err)
	}
	e.umount(mp, pid)
	e.storeUsable(added.ID)
}

// TestCLIUmountFindsServerElsewhere: imagefs umount waits for the server
// also when the server keeps its lock file in another run directory than
// the caller's: here the default one (/run/imagefs, the server's), while
// umount runs with IMAGEFS_RUN_DIR set, as root unmounting a user's mount
// or a user in another session would.
func TestCLIUmountFindsServerElsewhere(t *testing.T) {
	e, added := newCLIEnv(t)
	mp := e.mkdir("mnt")
	withRunDir := e.env
	e.env = slices.DeleteFunc(slices.Clone(e.env), func(kv string) bool { return strings.HasPrefix(kv, fs.RunDirVar+"=") })
	pid := e.mountBackground(mp)
	checkTree(t, mp, added.ID)
	e.env = withRunDir
	if r := e.run(60*time.Second, "umount", mp); r.code != 0 {
		t.Fatalf("imagefs umount: exit %d: %s", r.code, r.stderr)
	}
	if !processGone(pid) {
		t.Errorf("imagefs umount returned while the server (pid %d) still runs", pid)
		waitGone(t, pid, 10*time.Second)
	}
}

// TestCLIStaleFileHandle: a file handle (name_to_handle_at(2), as NFS
// servers and fanotify take them) opens its file while the mount lasts,
// and is ESTALE after a remount, never another file that got the same
// node ID in the new mount.
func TestCLIStaleFileHandle(t *testing.T) {
	e, added := newCLIEnv(t)
	mp := e.mkdir("mnt")
	pid := e.mountBackground(mp)
	config := filepath.Join(mp, "images", added.ID, "config")
	want, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, config, 0)
	if err != nil {
		t.Fatalf("name_to_handle_at %s: %v", config, err)
	}
	openByHandle := func() ([]byte, error) {
		mfd, err := unix.Open(mp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		defer unix.Close(mfd)
		fd, err := unix.OpenByHandleAt(mfd, h, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC)
		if err != nil {
			return nil, err
		}
		f := os.NewFile(uintptr(fd), "handle")
		defer f.Close()
		return io.ReadAll(f)
	}
	if got, err := openByHandle(); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the handle opens %q, %v; want the config", got, err)
	}
	e.umount(mp, pid)

	pid = e.mountBackground(mp)
	// Other lookups first, so that the handle's node ID is another node's.
	for _, p := range []string{"names", "digests", "layers", "images/" + added.ID, "images/" + added.ID + "/manifest", "images/" + added.ID + "/names", "images/" + added.ID + "/digest", "images/" + added.ID + "/config"} {
		if _, err := os.Lstat(filepath.Join(mp, p)); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := openByHandle(); !errors.Is(err, unix.ESTALE) {
		t.Errorf("after a remount the handle opens %.40q, %v; want ESTALE", got, err)
	}
	e.umount(mp, pid)
}
