package fs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testenv"
	"github.com/imagefs/imagefs/nodes"
	"github.com/imagefs/imagefs/storageview"
)

func TestParseMountInfo(t *testing.T) {
	for _, tc := range []struct {
		line string
		want MountInfo
		ok   bool
	}{
		{"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
			MountInfo{"/mnt2", "ext3", "/dev/root", -1, "98:0"}, true},
		{"42 26 0:38 / /tmp/a\\040b/mnt rw,nosuid,nodev,relatime - fuse.imagefs imagefs rw,user_id=0",
			MountInfo{"/tmp/a b/mnt", "fuse.imagefs", "imagefs", 0, "0:38"}, true},
		{"42 26 0:38 / /m rw - fuse.imagefs imagefs rw,user_id=1000,group_id=1000,default_permissions",
			MountInfo{"/m", "fuse.imagefs", "imagefs", 1000, "0:38"}, true},
		{"42 26 0:38 / /x rw shared:1 master:2 - tmpfs tmpfs rw", MountInfo{"/x", "tmpfs", "tmpfs", -1, "0:38"}, true},
		{"garbage", MountInfo{}, false},
		{"1 2 3:4 / /x rw no-separator here at all", MountInfo{}, false},
	} {
		got, ok := parseMountInfo(tc.line)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseMountInfo(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

func TestFindMount(t *testing.T) {
	m, err := FindMount("/proc")
	if err != nil {
		t.Fatal(err)
	}
	if m == nil || m.FSType != "proc" {
		t.Errorf("FindMount(/proc) = %+v, want a proc mount", m)
	}
	dir := t.TempDir()
	if m, err := FindMount(dir); err != nil || m != nil {
		t.Errorf("FindMount(%s) = %+v, %v; want nil (not a mount point)", dir, m, err)
	}
}

func TestCheckMountpoint(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckMountpoint(dir); err != nil {
		t.Errorf("CheckMountpoint(dir) = %v", err)
	}
	for path, want := range map[string]string{
		file:                         "is not a directory",
		filepath.Join(dir, "none"):   "does not exist",
		filepath.Join(file, "below"): "not a directory",
	} {
		err := CheckMountpoint(path)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("CheckMountpoint(%s) = %v, want one line containing %q", path, err, want)
		}
	}
}

// TestServerLock: the lock refuses a second server, names the pid, and
// WaitServerExit returns exactly when it is released.
func TestServerLock(t *testing.T) {
	t.Setenv(RunDirVar, filepath.Join(t.TempDir(), "run"))
	mp := "/some/mount/point"
	l, err := LockMountpoint(mp)
	if err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(os.Getpid())
	if _, err := LockMountpoint(mp); err == nil || !strings.Contains(err.Error(), "imagefs process "+pid) {
		t.Errorf("second LockMountpoint = %v, want refusal naming pid %s", err, pid)
	}
	if got := ServerPid(mp); got != os.Getpid() {
		t.Errorf("ServerPid = %d, want %d", got, os.Getpid())
	}
	if err := WaitServerExit(mp, os.Geteuid(), 50*time.Millisecond); err == nil || !strings.Contains(err.Error(), pid) {
		t.Errorf("WaitServerExit while locked = %v, want a timeout naming pid %s", err, pid)
	}
	other, err := LockMountpoint("/another/mount/point")
	if err != nil {
		t.Fatalf("a different mountpoint must have its own lock: %v", err)
	}
	other.Release()

	released := make(chan time.Time, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		released <- time.Now()
		l.Release()
	}()
	if err := WaitServerExit(mp, os.Geteuid(), 5*time.Second); err != nil {
		t.Fatalf("WaitServerExit: %v", err)
	}
	if at := <-released; time.Now().Before(at) {
		t.Errorf("WaitServerExit returned before the lock was released")
	}
	if _, err := os.Stat(LockPath(mp)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock file left after Release: %v", err)
	}
	if err := WaitServerExit(mp, os.Geteuid(), time.Second); err != nil {
		t.Errorf("WaitServerExit with no server: %v", err)
	}
}

// fakeStore is a nodes.Store of one image that counts Close calls.
type fakeStore struct {
	ix     *storageview.Index
	closed atomic.Int32
}

const fakeID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func newFakeStore() *fakeStore {
	img := &storageview.Image{ID: fakeID, Names: []string{"localhost/fake:1"}, Created: time.Unix(1700000000, 0)}
	return &fakeStore{ix: storageview.NewIndex(1, []*storageview.Image{img}, nil)}
}

func (f *fakeStore) Index() *storageview.Index { return f.ix }
func (f *fakeStore) Manifest(string) ([]byte, error) {
	return []byte(`{"schemaVersion":2}`), nil
}
func (f *fakeStore) Config(string) ([]byte, error)      { return []byte(`{}`), nil }
func (f *fakeStore) InspectJSON(string) ([]byte, error) { return []byte("{}\n"), nil }
func (f *fakeStore) History(string) ([]byte, error)     { return nil, nil }
func (f *fakeStore) Instances(string) ([]storageview.Instance, error) {
	return nil, storageview.ErrNotFound
}
func (f *fakeStore) DF() ([]byte, error)                  { return []byte("df\n"), nil }
func (f *fakeStore) LayerInfoJSON(string) ([]byte, error) { return nil, storageview.ErrNotFound }
func (f *fakeStore) LayerDirs(string) ([]storageview.LayerDir, error) {
	return nil, nil
}
func (f *fakeStore) Statfs(st *syscall.Statfs_t) error { return syscall.Statfs(os.TempDir(), st) }
func (f *fakeStore) Close() error {
	f.closed.Add(1)
	return nil
}

var _ nodes.Store = (*fakeStore)(nil)

// mountFake mounts a fake store in a temp dir; the cleanup unmounts if the
// test did not, and fails on leftovers.
func mountFake(t *testing.T) (*Server, *fakeStore, string) {
	t.Helper()
	testenv.RequireFUSE(t)
	dir := t.TempDir()
	testenv.NoMountsLeft(t, dir)
	mp := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	st := newFakeStore()
	srv, err := Mount(mp, st, Options{})
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(false); err != nil {
			t.Errorf("cleanup unmount: %v", err)
		}
	})
	return srv, st, mp
}

// TestMountShowsTreeAndOptions: the kernel sees a fuse.imagefs mount with
// the documented options, serving the tree.
func TestMountShowsTreeAndOptions(t *testing.T) {
	srv, st, mp := mountFake(t)
	if srv.Mountpoint() != mp {
		t.Errorf("Mountpoint() = %q, want %q", srv.Mountpoint(), mp)
	}
	m, err := FindMount(mp)
	if err != nil || m == nil {
		t.Fatalf("FindMount: %+v %v", m, err)
	}
	if m.FSType != "fuse.imagefs" || m.Source != "imagefs" {
		t.Errorf("mount is %s from %s, want fuse.imagefs from imagefs", m.FSType, m.Source)
	}
	opts := mountOptions(t, mp)
	for _, want := range []string{"nosuid", "nodev", "default_permissions", fmt.Sprintf("max_read=%d", MaxRead)} {
		if !strings.Contains(","+opts+",", ","+want+",") {
			t.Errorf("mount options %q lack %s", opts, want)
		}
	}
	if _, err := os.Stat(filepath.Join(mp, "images", fakeID)); err != nil {
		t.Errorf("stat images/<id>: %v", err)
	}
	var stt syscall.Stat_t
	if err := syscall.Stat(mp, &stt); err != nil {
		t.Fatal(err)
	}
	if stt.Ino != nodes.RootIno {
		t.Errorf("root inode = %d, want nodes.RootIno (%d)", stt.Ino, nodes.RootIno)
	}
	if n := st.closed.Load(); n != 0 {
		t.Errorf("store closed %d times while mounted", n)
	}
	if err := CheckMountpoint(mp); err == nil || !strings.Contains(err.Error(), "already mounted") {
		t.Errorf("CheckMountpoint on a live imagefs mount = %v, want already mounted", err)
	}
}

// TestUnmountClosesStore: Server.Unmount returns after the store is closed,
// exactly once.
func TestUnmountClosesStore(t *testing.T) {
	srv, st, mp := mountFake(t)
	if err := srv.Unmount(false); err != nil {
		t.Fatal(err)
	}
	if n := st.closed.Load(); n != 1 {
		t.Errorf("store closed %d times after Unmount, want 1", n)
	}
	if m, _ := FindMount(mp); m != nil {
		t.Errorf("still mounted after Unmount: %+v", m)
	}
	if err := srv.Unmount(false); err != nil {
		t.Errorf("second Unmount: %v", err)
	}
	if n := st.closed.Load(); n != 1 {
		t.Errorf("store closed %d times after a second Unmount, want 1", n)
	}
}

// TestExternalUnmountEndsServer: umount(2) from outside ends the serve
// loop and closes the store.
func TestExternalUnmountEndsServer(t *testing.T) {
	srv, st, mp := mountFake(t)
	if err := syscall.Unmount(mp, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("server still running 10s after an external unmount")
	}
	if err := srv.Wait(); err != nil {
		t.Errorf("Wait: %v", err)
	}
	if n := st.closed.Load(); n != 1 {
		t.Errorf("store closed %d times, want 1", n)
	}
}

// TestUnmountBusy: a busy mount is refused with ErrBusy and keeps serving;
// lazy detaches it and the server ends when the last handle closes.
func TestUnmountBusy(t *testing.T) {
	srv, st, mp := mountFake(t)
	d, err := os.Open(filepath.Join(mp, "images"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := srv.Unmount(false); !errors.Is(err, ErrBusy) {
		t.Fatalf("Unmount of a busy mount = %v, want ErrBusy", err)
	}
	if _, err := os.Stat(filepath.Join(mp, "images", fakeID)); err != nil {
		t.Errorf("mount stopped serving after a refused unmount: %v", err)
	}
	if err := srv.Unmount(true); err != nil {
		t.Fatalf("lazy Unmount: %v", err)
	}
	if m, _ := FindMount(mp); m != nil {
		t.Errorf("still visible after lazy unmount: %+v", m)
	}
	select {
	case <-srv.Done():
		t.Fatal("server ended while a handle was open")
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := d.ReadDir(-1); err != nil {
		t.Errorf("reading the open handle after lazy unmount: %v", err)
	}
	d.Close()
	select {
	case <-srv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("server still running 10s after the last handle closed")
	}
	if n := st.closed.Load(); n != 1 {
		t.Errorf("store closed %d times, want 1", n)
	}
}

// TestMountRefusesBadMountpoint: Mount checks before mounting and leaves
// the store open for the caller.
func TestMountRefusesBadMountpoint(t *testing.T) {
	st := newFakeStore()
	if _, err := Mount(filepath.Join(t.TempDir(), "missing"), st, Options{}); err == nil {
		t.Fatal("Mount on a missing directory succeeded")
	}
	if n := st.closed.Load(); n != 0 {
		t.Errorf("a refused Mount closed the store (%d)", n)
	}
}

// mountOptions returns the mount and super-block options of mp's
// mountinfo line, comma-joined.
func mountOptions(t *testing.T, mp string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == mp {
			return f[5] + "," + f[len(f)-1]
		}
	}
	t.Fatalf("%s not in mountinfo", mp)
	return ""
}

// TestServerLockUnsafeRunDir: a run directory another user owns or may
// write to, or a symlink, is refused (the fallback under /tmp has a name
// anyone can take first), and a symlink where the lock file goes is not
// followed: the file it leads to stays as it was.
func TestServerLockUnsafeRunDir(t *testing.T) {
	testenv.RequireRoot(t) // to give a directory to another user
	base := t.TempDir()
	mkdir := func(name string, mode uint32, uid int) string {
		d := filepath.Join(base, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, uid); err != nil {
			t.Fatal(err)
		}
		return d
	}
	own := mkdir("own", 0o700, 0)
	symlinked := filepath.Join(base, "symlinked")
	if err := os.Symlink(own, symlinked); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dir, want string }{
		{mkdir("others", 0o700, 65534), "it belongs to uid 65534"},
		{mkdir("shared", 0o1777, 0), "others may write to it (mode 1777)"},
		{mkdir("group", 0o770, 0), "others may write to it (mode 0770)"},
		{symlinked, "it is not a directory (a symlink?)"},
	} {
		t.Setenv(RunDirVar, tc.dir)
		l, err := LockMountpoint("/some/mount/point")
		if err == nil {
			l.Release()
			t.Errorf("%s: taken", tc.dir)
			continue
		}
		if want := "run directory " + tc.dir + " is not safe to use: " + tc.want; !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", tc.dir, err, want)
		}
	}

	t.Setenv(RunDirVar, own)
	victim := filepath.Join(base, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, LockPath("/some/mount/point")); err != nil {
		t.Fatal(err)
	}
	if l, err := LockMountpoint("/some/mount/point"); err == nil {
		l.Release()
		t.Errorf("a symlink as the lock file was followed")
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("the file the symlink leads to now holds %q", b)
	}
}
