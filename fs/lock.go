package fs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The serving process of a mount holds an flock on a small file named after
// the mount point, from before the mount until after the store is closed.
// `imagefs umount` unmounts, then waits for that lock: when it gets it, the
// server has stopped and the store's locks are released. (The kernel tells
// nobody which process serves a FUSE mount.)

// RunDirVar names the environment variable that overrides RunDir.
const RunDirVar = "IMAGEFS_RUN_DIR"

// RunDir is where the serving processes keep their lock files:
// $IMAGEFS_RUN_DIR, else /run/imagefs for root, else
// $XDG_RUNTIME_DIR/imagefs, else $TMPDIR/imagefs-<uid>.
func RunDir() string {
	if d := os.Getenv(RunDirVar); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/run/imagefs"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "imagefs")
	}
	return filepath.Join(os.TempDir(), "imagefs-"+strconv.Itoa(os.Geteuid()))
}

// LockPath is the lock file of the server of the mount at mountpoint
// (absolute, clean).
func LockPath(mountpoint string) string {
	sum := sha256.Sum256([]byte(mountpoint))
	return filepath.Join(RunDir(), hex.EncodeToString(sum[:12])+".lock")
}

// MountLock is the held lock of a serving process.
type MountLock struct {
	f *os.File
}

// LockMountpoint takes the server lock for mountpoint and records our pid
// in it. It fails when another process holds it, i.e. serves that mount.
func LockMountpoint(mountpoint string) (*MountLock, error) {
	path := LockPath(mountpoint)
	if err := makeRunDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := readPid(path)
			if m, err := FindMount(mountpoint); err == nil && (m == nil || m.FSType != FSType) {
				return nil, fmt.Errorf("mountpoint %s: imagefs process %s holds it with nothing mounted there: it is starting, or still serves the mount detached from it (umount --lazy) until its last user lets go; wait for it to exit, or kill it", mountpoint, pid)
			}
			return nil, fmt.Errorf("mountpoint %s: already served by imagefs process %s", mountpoint, pid)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &MountLock{f: f}, nil
}

// makeRunDir makes the run directory, or checks the one there: it must be
// ours and closed to others. The fallback in the shared temporary
// directory has a name anyone can take first, and a directory another user
// can write to could hold a symlink where the lock file goes, which the
// server would truncate and write its pid into.
func makeRunDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating run directory: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil {
		return fmt.Errorf("run directory %s: %w", dir, err)
	}
	var why string
	switch {
	case st.Mode&syscall.S_IFMT != syscall.S_IFDIR:
		why = "it is not a directory (a symlink?)"
	case int(st.Uid) != os.Geteuid():
		why = fmt.Sprintf("it belongs to uid %d", st.Uid)
	case st.Mode&0o022 != 0:
		why = fmt.Sprintf("others may write to it (mode %04o)", st.Mode&0o7777)
	default:
		return nil
	}
	return fmt.Errorf("run directory %s is not safe to use: %s; remove it, or set XDG_RUNTIME_DIR or %s to a directory of your own", dir, why, RunDirVar)
}

// Release removes the lock file and drops the lock. Call it last, after
// the store is closed.
func (l *MountLock) Release() {
	if l == nil || l.f == nil {
		return
	}
	_ = os.Remove(l.f.Name())
	l.f.Close()
	l.f = nil
}

// lockPaths lists where the server of mountpoint, run by user uid, may
// keep its lock file: in our run directory, then in that user's usual
// ones (root unmounting a user's mount, a user in another session).
func lockPaths(mountpoint string, uid int) []string {
	own := LockPath(mountpoint)
	dirs := []string{filepath.Join("/run/user", strconv.Itoa(uid), "imagefs"), filepath.Join("/tmp", "imagefs-"+strconv.Itoa(uid))}
	if uid == 0 {
		dirs = []string{"/run/imagefs"}
	}
	paths := []string{own}
	for _, d := range dirs {
		if p := filepath.Join(d, filepath.Base(own)); p != own {
			paths = append(paths, p)
		}
	}
	return paths
}

// WaitServerExit waits until no process holds the server lock of
// mountpoint, mounted by user uid (the server has stopped and closed the
// store), at most timeout. On timeout it returns an error naming the pid.
func WaitServerExit(mountpoint string, uid int, timeout time.Duration) error {
	var f *os.File
	var path string
	var err error
	for _, path = range lockPaths(mountpoint, uid) {
		if f, err = os.Open(path); !errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil // released and removed
	}
	if err != nil {
		return fmt.Errorf("waiting for the imagefs process: %w", err)
	}
	defer f.Close()
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("waiting for the imagefs process: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("unmounted %s, but imagefs process %s has not exited after %s "+
				"(if it goes on serving, a copy of the mount in another mount namespace, a podman pause process's, keeps it: "+
				"podman system migrate by that process's user ends it)", mountpoint, readPid(path), timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ServerPid returns the pid recorded by the server of mountpoint, or 0.
func ServerPid(mountpoint string) int {
	pid, _ := strconv.Atoi(readPid(LockPath(mountpoint)))
	return pid
}

func readPid(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	if s := strings.TrimSpace(string(b)); s != "" {
		return s
	}
	return "?"
}
