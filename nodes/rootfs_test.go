package nodes

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/imagefs/imagefs/internal/testenv"
	"github.com/imagefs/imagefs/internal/union"
	"github.com/imagefs/imagefs/internal/union/treecmp"
	"github.com/imagefs/imagefs/internal/union/uniontest"
	"github.com/imagefs/imagefs/storageview"
	"github.com/imagefs/imagefs/xattrs"
)

// rootfsFakeStore is a Store with one image whose layers are directories
// the test wrote.
type rootfsFakeStore struct {
	ix     *storageview.Index
	dirs   []storageview.LayerDir
	broken bool // LayerDirs fails
}

func (s *rootfsFakeStore) Index() *storageview.Index            { return s.ix }
func (s *rootfsFakeStore) Manifest(string) ([]byte, error)      { return nil, storageview.ErrNotFound }
func (s *rootfsFakeStore) Config(string) ([]byte, error)        { return nil, storageview.ErrNotFound }
func (s *rootfsFakeStore) InspectJSON(string) ([]byte, error)   { return nil, storageview.ErrNotFound }
func (s *rootfsFakeStore) History(string) ([]byte, error)       { return nil, storageview.ErrNotFound }
func (s *rootfsFakeStore) DF() ([]byte, error)                  { return nil, nil }
func (s *rootfsFakeStore) LayerInfoJSON(string) ([]byte, error) { return nil, storageview.ErrNotFound }
func (s *rootfsFakeStore) Instances(string) ([]storageview.Instance, error) {
	return nil, storageview.ErrNotFound
}
func (s *rootfsFakeStore) Statfs(*syscall.Statfs_t) error { return syscall.ENOSYS }

func (s *rootfsFakeStore) LayerDirs(id string) ([]storageview.LayerDir, error) {
	if s.broken || s.ix.ImageByID(id) == nil {
		return nil, storageview.ErrNotFound
	}
	return s.dirs, nil
}

const rootfsTestImage = "1111111111111111111111111111111111111111111111111111111111111111"

func newRootfsFakeStore(layers []union.Layer, aufs bool) *rootfsFakeStore {
	s := &rootfsFakeStore{}
	var ids []string
	var ls []*storageview.Layer
	for i, l := range layers {
		id := strings.Repeat(fmt.Sprint(i+2), 64)
		ids = append(ids, id)
		parent := ""
		if i > 0 {
			parent = ids[i-1]
		}
		ls = append(ls, &storageview.Layer{ID: id, Parent: parent})
		s.dirs = append(s.dirs, storageview.LayerDir{ID: id, Path: l.Path, AUFSWhiteouts: aufs})
	}
	img := &storageview.Image{ID: rootfsTestImage, Layers: ids, TopLayer: ids[len(ids)-1]}
	s.ix = storageview.NewIndex(1, []*storageview.Image{img}, ls)
	return s
}

// rootfsTestRoot mounts rootfs/ of the fake image, and diff/ and changes
// of every layer as diff-N and changes-N.
type rootfsTestRoot struct {
	fusefs.Inode
	r     *Rootfs
	store *rootfsFakeStore
}

func (n *rootfsTestRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if name == "rootfs" {
		return n.r.ImageRootfs(ctx, n.EmbeddedInode(), rootfsTestImage, out)
	}
	var i int
	if _, err := fmt.Sscanf(name, "diff-%d", &i); err == nil && i < len(n.store.dirs) {
		return n.r.LayerDiff(ctx, n.EmbeddedInode(), n.store.dirs[i].ID, out)
	}
	if _, err := fmt.Sscanf(name, "changes-%d", &i); err == nil && i < len(n.store.dirs) {
		return n.r.LayerChanges(ctx, n.EmbeddedInode(), n.store.dirs[i].ID, out)
	}
	return nil, syscall.ENOENT
}

// writeFile opens p for writing and writes a byte: refused at the write
// (the kernel does not ask imagefs at open, see handleless.go).
func writeFile(p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write([]byte("x"))
	return err
}

// rootfsTestRoots are the roots of the mounts of mountRootfs.
var rootfsTestRoots = map[string]*rootfsTestRoot{}

// mountRootfs mounts the tree of store; it is unmounted when the test ends.
func mountRootfs(t *testing.T, store *rootfsFakeStore, logw io.Writer) (string, *fuse.Server) {
	t.Helper()
	if logw == nil {
		logw = io.Discard
	}
	return mountRootfsWith(t, store, RootfsOptions{Log: log.New(logw, "", 0)})
}

func mountRootfsWith(t *testing.T, store *rootfsFakeStore, o RootfsOptions) (string, *fuse.Server) {
	t.Helper()
	testenv.RequireFUSE(t)
	mnt := t.TempDir()
	testenv.NoMountsLeft(t, mnt)
	root := &rootfsTestRoot{r: NewRootfs(store, o), store: store}
	rootfsTestRoots[mnt] = root
	// NullPermissions: show mode 0 as stored (/etc/shadow is 0000 in
	// many images); go-fuse would otherwise turn it into 0644.
	srv, err := Mount(mnt, root, &fusefs.Options{NullPermissions: true,
		MountOptions: fuse.MountOptions{
			FsName: "imagefs-test", Name: "imagefs", DirectMount: true,
			Options:              []string{"default_permissions"},
			EnableSymlinkCaching: true,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return mnt, srv
}

var rootfsIgnoreImagefs = func(name string) bool { return strings.HasPrefix(name, "user.imagefs.") }

// TestRootfsMountMatchesKernel walks rootfs/ through a real FUSE mount and
// the same layers mounted by the kernel's overlayfs: zero differences.
func TestRootfsMountMatchesKernel(t *testing.T) {
	for _, aufs := range []bool{false, true} {
		t.Run(fmt.Sprintf("aufs=%v", aufs), func(t *testing.T) {
			testenv.RequireFUSE(t)
			base := t.TempDir()
			layers := uniontest.BuildStack(t, filepath.Join(base, "layers"), aufs)
			kernel := layers
			if aufs {
				kernel = nil
				for _, l := range layers {
					k := filepath.Join(base, "kernel", l.ID)
					uniontest.CopyTree(t, l.Path, k)
					uniontest.ToKernel(t, k)
					kernel = append(kernel, union.Layer{ID: l.ID, Path: k})
				}
			}
			mnt, _ := mountRootfs(t, newRootfsFakeStore(layers, aufs), nil)
			want, err := treecmp.Walk(uniontest.KernelMount(t, kernel), treecmp.Options{DirNlink: true})
			if err != nil {
				t.Fatal(err)
			}
			got, err := treecmp.Walk(filepath.Join(mnt, "rootfs"), treecmp.Options{DirNlink: true, IgnoreXattr: rootfsIgnoreImagefs})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range treecmp.Diff(want, got) {
				t.Error(d)
			}
			if len(got.Vanished) > 0 {
				t.Errorf("rootfs lists names it cannot look up: %v", got.Vanished)
			}
			if len(got.Nodes) < 35 {
				t.Errorf("only %d entries walked", len(got.Nodes))
			}
		})
	}
}

func getxattr(p, name string) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// TestRootfsXattrsAndReadOnly checks the imagefs xattrs, errno of xattr
// calls, and that every change is EROFS.
func TestRootfsXattrsAndReadOnly(t *testing.T) {
	testenv.RequireFUSE(t)
	layers := uniontest.BuildStack(t, t.TempDir(), false)
	store := newRootfsFakeStore(layers, false)
	var logb rootfsLogBuffer
	mnt, _ := mountRootfs(t, store, &logb)
	rfs := filepath.Join(mnt, "rootfs")
	for p, want := range map[string]int{"bin/sh": 0, "etc/passwd": 2, "readd": 2, "opq/c": 1, "swapfile": 1, "merged/a/mid": 1, "": 2} {
		id, err := getxattr(filepath.Join(rfs, p), xattrs.RootfsLayer)
		if err != nil || id != store.dirs[want].ID {
			t.Errorf("%s: %s = %q, %v; want layer %d %s", p, xattrs.RootfsLayer, id, err, want, store.dirs[want].ID)
		}
		idx, err := getxattr(filepath.Join(rfs, p), xattrs.RootfsLayerIndex)
		if err != nil || idx != fmt.Sprintf("%03d", want) {
			t.Errorf("%s: %s = %q, %v; want %03d", p, xattrs.RootfsLayerIndex, idx, err, want)
		}
	}
	passwd := filepath.Join(rfs, "etc/passwd")
	if _, err := getxattr(passwd, "user.absent"); !errors.Is(err, unix.ENODATA) {
		t.Errorf("absent xattr: %v, want ENODATA", err)
	}
	sz, err := unix.Listxattr(filepath.Join(rfs, "bin/ping"), nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, sz)
	n, _ := unix.Listxattr(filepath.Join(rfs, "bin/ping"), buf)
	if got := string(buf[:n]); got != "security.capability\x00" {
		t.Errorf("listxattr bin/ping = %q, want only security.capability (no user.imagefs.*)", got)
	}
	if _, err := unix.Listxattr(filepath.Join(rfs, "bin/ping"), make([]byte, 3)); !errors.Is(err, unix.ERANGE) {
		t.Errorf("listxattr into 3 bytes: %v, want ERANGE", err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(rfs, "bin/ping"), "security.capability", make([]byte, 3)); !errors.Is(err, unix.ERANGE) {
		t.Errorf("getxattr into 3 bytes: %v, want ERANGE", err)
	}
	if n, err := unix.Lgetxattr(filepath.Join(rfs, "bin/ping"), "security.capability", nil); err != nil || n != 20 {
		t.Errorf("getxattr size query: %d %v, want 20", n, err)
	}

	for what, err := range map[string]error{
		"write":       writeFile(passwd),
		"truncate":    os.Truncate(passwd, 0),
		"create":      os.WriteFile(filepath.Join(rfs, "etc/new"), nil, 0o644),
		"mkdir":       os.Mkdir(filepath.Join(rfs, "newd"), 0o755),
		"remove":      os.Remove(passwd),
		"rmdir":       os.Remove(filepath.Join(rfs, "opq")),
		"rename":      os.Rename(passwd, filepath.Join(rfs, "etc/p2")),
		"symlink":     os.Symlink("x", filepath.Join(rfs, "l")),
		"link":        os.Link(passwd, filepath.Join(rfs, "etc/p3")),
		"chmod":       os.Chmod(passwd, 0o777),
		"chown":       os.Lchown(passwd, 1, 1),
		"setxattr":    unix.Lsetxattr(passwd, "user.x", []byte("y"), 0),
		"removexattr": unix.Lremovexattr(filepath.Join(rfs, "bin/ping"), "security.capability"),
		"mknod":       unix.Mknod(filepath.Join(rfs, "fifo"), unix.S_IFIFO|0o644, 0),
		"mmap write":  testenv.MmapWrite(passwd, []byte("HACK")),
		"fallocate":   testenv.Fallocate(passwd),
		"O_TMPFILE":   testenv.OpenTmpfile(filepath.Join(rfs, "etc")),
	} {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", what, err)
		}
	}
	// Each refusal says what and where in one log line.
	for _, line := range []string{
		"write /rootfs/etc/passwd", "setattr /rootfs/etc/passwd", "create /rootfs/etc/new", "mkdir /rootfs/newd",
		"unlink /rootfs/etc/passwd", "rmdir /rootfs/opq", "rename /rootfs/etc/passwd", "symlink /rootfs/l",
		"link /rootfs/etc/p3", "setxattr user.x /rootfs/etc/passwd", "removexattr security.capability /rootfs/bin/ping",
		"mknod /rootfs/fifo", "fallocate /rootfs/etc/passwd", "tmpfile /rootfs/etc",
	} {
		if !strings.Contains(logb.String(), line+": refused, rootfs is read-only (EROFS)") {
			t.Errorf("no log line %q in:\n%s", line+": refused, rootfs is read-only (EROFS)", logb.String())
		}
	}
	testenv.WaitContent(t, passwd, "root:x:0:0\nuser:x:1000:1000\n")
	// There is nothing to sync (sync FILE, programs that fsync what
	// they read): success.
	for _, p := range []string{passwd, filepath.Join(rfs, "etc"), rfs} {
		if err := testenv.Fsync(p); err != nil {
			t.Errorf("fsync %s: %v", p, err)
		}
	}
	if tgt, err := os.Readlink(filepath.Join(rfs, "abs")); err != nil || tgt != "/etc/passwd" {
		t.Errorf("abs symlink: %q %v", tgt, err)
	}
}

// TestRootfsSharedInodes: hardlinks share an inode number; a repeated
// lookup gives the same number.
func TestRootfsSharedInodes(t *testing.T) {
	testenv.RequireFUSE(t)
	mnt, _ := mountRootfs(t, newRootfsFakeStore(uniontest.BuildStack(t, t.TempDir(), false), false), nil)
	ino := func(p string) uint64 {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mnt, "rootfs", p), &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	if ino("bin/hard1") != ino("usr/hard3") {
		t.Error("hardlinks bin/hard1 and usr/hard3 have different inode numbers")
	}
	if ino("bin/hard1") == ino("bin/sh") || ino("etc") == ino("bin") {
		t.Error("distinct files share an inode number")
	}
	if ino("etc") < RootfsInoBase || ino("bin/sh") < RootfsInoBase {
		t.Errorf("inode numbers below RootfsInoBase")
	}
	for _, dir := range []string{"", "bin", "merged/a", "dev"} {
		for name, dino := range rootfsDirentInos(t, filepath.Join(mnt, "rootfs", dir)) {
			if name == "." || name == ".." {
				continue
			}
			if got := ino(filepath.Join(dir, name)); got != dino {
				t.Errorf("%s/%s: readdir inode %d, lookup %d", dir, name, dino, got)
			}
		}
	}
}

// TestLayerDiffAndChanges shows a layer raw and its changes.
func TestLayerDiffAndChanges(t *testing.T) {
	testenv.RequireFUSE(t)
	layers := uniontest.BuildStack(t, t.TempDir(), false)
	mnt, _ := mountRootfs(t, newRootfsFakeStore(layers, false), nil)
	want, err := treecmp.Walk(layers[1].Path, treecmp.Options{DirNlink: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := treecmp.Walk(filepath.Join(mnt, "diff-1"), treecmp.Options{DirNlink: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range treecmp.Diff(want, got) {
		t.Error(d)
	}
	if n := want.Nodes["etc/group"]; n == nil || n.Mode&unix.S_IFMT != unix.S_IFCHR {
		t.Errorf("diff-1 does not show the etc/group whiteout device")
	}
	b, err := os.ReadFile(filepath.Join(mnt, "changes-2"))
	if err != nil {
		t.Fatal(err)
	}
	const want2 = "C /etc\nC /etc/passwd\nC /merged\nC /merged/a\nA /merged/a/top\nA /readd\n"
	if string(b) != want2 {
		t.Errorf("changes-2:\n%s\nwant\n%s", b, want2)
	}
	fi, err := os.Stat(filepath.Join(mnt, "changes-2"))
	if err != nil || fi.Size() != int64(len(want2)) || fi.Mode().Perm() != 0o444 {
		t.Errorf("changes-2: %v %v, want %d bytes, -r--r--r--", fi, err, len(want2))
	}
}

// TestLayerChangesHiddenNames: a changes file that names what lies in a
// directory others may not read (a 0700 /root) is the mounting user's alone, since
// with --allow-other it would tell others what the image's modes keep
// from them in rootfs/.
func TestLayerChangesHiddenNames(t *testing.T) {
	testenv.RequireFUSE(t)
	base, top := t.TempDir(), t.TempDir()
	for _, d := range []string{base, top} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{base + "/root", top + "/root", top + "/root/.ssh"} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(top+"/root/.ssh/key", []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base+"/pub", []byte("p"), 0o644); err != nil {
		t.Fatal(err)
	}
	mnt, _ := mountRootfs(t, newRootfsFakeStore([]union.Layer{{ID: "b", Path: base}, {ID: "t", Path: top}}, false), nil)
	for name, perm := range map[string]os.FileMode{"changes-0": 0o444, "changes-1": 0o400} {
		fi, err := os.Stat(filepath.Join(mnt, name))
		if err != nil || fi.Mode().Perm() != perm {
			t.Errorf("%s: %v %v, want mode %v", name, fi, err, perm)
		}
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "changes-1")); err != nil || !strings.Contains(string(b), "A /root/.ssh/key\n") {
		t.Errorf("changes-1 as root: %q %v", b, err)
	}
}

// TestRootfsReadsAfterLayerRemoval: a file open in rootfs keeps reading
// (or fails cleanly) once the layer directories are gone, and new lookups
// fail without hanging.
func TestRootfsReadsAfterLayerRemoval(t *testing.T) {
	testenv.RequireFUSE(t)
	base := t.TempDir()
	layers := uniontest.BuildStack(t, base, false)
	mnt, _ := mountRootfs(t, newRootfsFakeStore(layers, false), nil)
	f, err := os.Open(filepath.Join(mnt, "rootfs/etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range layers {
		if err := os.RemoveAll(l.Path); err != nil {
			t.Fatal(err)
		}
	}
	b, err := io.ReadAll(f)
	if err == nil && string(b) != "root:x:0:0\nuser:x:1000:1000\n" {
		t.Errorf("open file read %q after removal", b)
	}
	if _, err := os.ReadDir(filepath.Join(mnt, "rootfs/usr/lib")); err == nil {
		t.Log("listing of a never-visited dir still answered after removal")
	}
}

// TestRootfsFallbackRefusal: with layers the union cannot read and no
// way to mount, rootfs/ fails with EIO and says why in the log.
func TestRootfsFallbackRefusal(t *testing.T) {
	testenv.RequireFUSE(t)
	store := newRootfsFakeStore([]union.Layer{{ID: "x", Path: "/nonexistent/layer"}}, false)
	var logb rootfsLogBuffer
	mnt, _ := mountRootfs(t, store, &logb)
	if _, err := os.Stat(filepath.Join(mnt, "rootfs")); !errors.Is(err, syscall.EIO) {
		t.Errorf("stat rootfs: %v, want EIO", err)
	}
	if !strings.Contains(logb.String(), "not readable") {
		t.Errorf("log does not say why: %q", logb.String())
	}
}

// TestRootfsFileContent reads a large file through the mount, then again
// once the layer file is gone: the second time the bytes come from the
// kernel's page cache, which keeps them across opens (handleless.go).
func TestRootfsFileContent(t *testing.T) {
	testenv.RequireFUSE(t)
	l := uniontest.NewLayer(t, t.TempDir(), "l0", false)
	big := make([]byte, 8<<20+123)
	for i := range big {
		big[i] = byte(i*7 + i>>12)
	}
	l.File("big", string(big), 0o644)
	store := newRootfsFakeStore([]union.Layer{{ID: "l0", Path: l.Dir}}, false)
	mnt, _ := mountRootfs(t, store, nil)
	for round := range 2 {
		got, err := os.ReadFile(filepath.Join(mnt, "rootfs/big"))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(big) {
			t.Fatalf("round %d: big file content differs (%d bytes read)", round, len(got))
		}
		rootfsTestRoots[mnt].r.files.closeAll()
		if err := os.Remove(filepath.Join(l.Dir, "big")); err != nil && round == 0 {
			t.Fatal(err)
		}
	}
}

// TestRootfsSplicedReads reads more large files at once than stay open
// (maxBackingFiles): spliced replies are written after Read returns, so
// a layer file evicted meanwhile must stay open until its reply is out,
// or a reused descriptor would splice another file's bytes.
func TestRootfsSplicedReads(t *testing.T) {
	testenv.RequireFUSE(t)
	l := uniontest.NewLayer(t, t.TempDir(), "l0", false)
	const files, size = 3 * maxBackingFiles, 3*spliceMin + 5
	content := func(i int) string {
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(i + j>>10)
		}
		return string(b)
	}
	for i := range files {
		l.File(fmt.Sprintf("f%02d", i), content(i), 0o644)
	}
	store := newRootfsFakeStore([]union.Layer{{ID: "l0", Path: l.Dir}}, false)
	mnt, _ := mountRootfs(t, store, nil)
	var wg sync.WaitGroup
	for i := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := os.ReadFile(filepath.Join(mnt, fmt.Sprintf("rootfs/f%02d", i)))
			if err != nil {
				t.Error(err)
			} else if string(got) != content(i) {
				t.Errorf("f%02d: %d bytes read, content differs", i, len(got))
			}
		}()
	}
	wg.Wait()
}

// TestListingsWithoutFileAttrs: a names-only walk (getdents, as find
// does) makes no inode for the files it sees, only for directories; a
// file looked up afterwards still shows its real attributes, and once a
// client has asked for a file's attributes, listings carry them for the
// files too (rootfsListHandle.Lookup).
func TestListingsWithoutFileAttrs(t *testing.T) {
	testenv.RequireFUSE(t)
	l := uniontest.NewLayer(t, t.TempDir(), "l0", false)
	l.Dirs("a/sub", "b/sub").File("a/f1", "1", 0o600).File("a/f2", "22", 0o644).File("b/g1", "333", 0o640)
	store := newRootfsFakeStore([]union.Layer{{ID: "l0", Path: l.Dir}}, false)
	mnt, _ := mountRootfs(t, store, nil)
	root := rootfsTestRoots[mnt]
	known := func(dir string) []string {
		in := root.GetChild("rootfs")
		for _, c := range strings.Split(dir, "/") {
			in = in.GetChild(c)
		}
		var names []string
		for name := range in.Children() {
			names = append(names, name)
		}
		sort.Strings(names)
		return names
	}
	readNames := func(dir string) string {
		ents, err := os.ReadDir(filepath.Join(mnt, "rootfs", dir))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name()+":"+e.Type().String())
		}
		return strings.Join(names, " ")
	}

	readNames("")
	if got, want := readNames("a"), "f1:---------- f2:---------- sub:d---------"; got != want {
		t.Errorf("a/ lists %q, want %q", got, want)
	}
	if got := strings.Join(known("a"), " "); got != "sub" {
		t.Errorf("after listing a/, the server keeps inodes for %q, want only the directory sub", got)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(mnt, "rootfs/a/f2"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != unix.S_IFREG|0o644 || st.Size != 2 {
		t.Errorf("a/f2 looked up after the listing: mode %o size %d, want file 0644 of 2 bytes", st.Mode, st.Size)
	}
	// That lookup was a client asking for a file's attributes: the next
	// listing carries them.
	readNames("b")
	if got := strings.Join(known("b"), " "); got != "g1 sub" {
		t.Errorf("after a file lookup, listing b/ made inodes for %q, want g1 and sub", got)
	}
}

// TestEvictionBoundsInodes: past MaxInodes, the tree that grew least
// recently is dropped from the kernel's cache (its inodes forgotten, our
// state for them freed), and reads back the same afterwards.
func TestEvictionBoundsInodes(t *testing.T) {
	testenv.RequireFUSE(t)
	const files, max = 30, 40
	l := uniontest.NewLayer(t, t.TempDir(), "l0", false)
	for i := range files {
		l.File(fmt.Sprintf("d/f%02d", i), fmt.Sprint(i), 0o644)
	}
	store := newRootfsFakeStore([]union.Layer{{ID: "l0", Path: l.Dir}}, false)
	mnt, _ := mountRootfsWith(t, store, RootfsOptions{Log: log.New(io.Discard, "", 0), MaxInodes: max})
	root := rootfsTestRoots[mnt]
	statAll := func(tree string) {
		for i := range files {
			if _, err := os.Lstat(filepath.Join(mnt, tree, fmt.Sprintf("d/f%02d", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	statAll("rootfs")
	if n := root.r.live.Load(); n != files+2 {
		t.Fatalf("after a walk of rootfs/, %d inodes live, want %d", n, files+2)
	}
	statAll("diff-0") // the same layer seen raw: a second tree, past the bound
	deadline := time.Now().Add(5 * time.Second)
	for root.GetChild("rootfs") != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if root.GetChild("rootfs") != nil {
		t.Fatalf("rootfs/ still known 5s after the bound (%d) was passed: %d inodes live", max, root.r.live.Load())
	}
	if n := root.r.live.Load(); n > max {
		t.Errorf("%d inodes live after eviction, bound %d", n, max)
	}
	if root.GetChild("diff-0") == nil {
		t.Error("the newest tree was evicted")
	}
	got, err := os.ReadFile(filepath.Join(mnt, "rootfs/d/f07"))
	if err != nil || string(got) != "7" {
		t.Errorf("rootfs/d/f07 after eviction: %q, %v", got, err)
	}
}

// TestSplicedReadHoldsItsFile: the layer file of a spliced read stays
// open until go-fuse is done with the reply, even when newer reads evict
// it from the open files meanwhile; then it is closed.
func TestSplicedReadHoldsItsFile(t *testing.T) {
	l := uniontest.NewLayer(t, t.TempDir(), "l0", false)
	want := strings.Repeat("spliced ", spliceMin/4)
	l.File("big", want, 0o644)
	for i := range 2 * maxBackingFiles {
		l.File(fmt.Sprintf("other%02d", i), "x", 0o644)
	}
	st, err := union.NewStack([]union.Layer{{ID: "l0", Path: l.Dir}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tree := &rootfsTree{r: NewRootfs(nil, RootfsOptions{}), stack: st, key: "itest"}
	e, err := st.Lookup(st.Root(), "big")
	if err != nil || e == nil {
		t.Fatalf("lookup big: %v", err)
	}
	f := &rootfsFile{rootfsNode{tree: tree, ent: e}}
	res, errno := f.Read(context.Background(), nil, make([]byte, 2*len(want)), 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	sr, ok := res.(*splicedRead)
	if !ok {
		t.Fatalf("a %d-byte read answered with %T, want a spliced read", len(want), res)
	}
	for i := range 2 * maxBackingFiles { // evict big from the open files
		b, err := tree.r.files.acquire(filepath.Join(l.Dir, fmt.Sprintf("other%02d", i)))
		if err != nil {
			t.Fatal(err)
		}
		tree.r.files.release(b)
	}
	if got, st := sr.Bytes(make([]byte, 2*len(want))); st != fuse.OK || string(got) != want {
		t.Fatalf("reply bytes after eviction: %v, %d bytes; want the file's %d", st, len(got), len(want))
	}
	fd := sr.b.fd
	sr.Done()
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
		t.Errorf("layer file still open after Done (fcntl: %v)", err)
	}
	tree.r.files.closeAll()
}

// rootfsLogBuffer is a log sink safe for the server's goroutines.
type rootfsLogBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *rootfsLogBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *rootfsLogBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRootfsInTree: the full read-side tree shows images/<id>/rootfs/,
// layers/<id>/diff/ and layers/<id>/changes, with the inode numbers
// readdir gives.
func TestRootfsInTree(t *testing.T) {
	testenv.RequireFUSE(t)
	store := newRootfsFakeStore(uniontest.BuildStack(t, t.TempDir(), false), false)
	mnt := t.TempDir()
	testenv.NoMountsLeft(t, mnt)
	srv, err := Mount(mnt, NewRoot(store, Options{Log: log.New(io.Discard, "", 0)}), &fusefs.Options{
		NullPermissions: true,
		RootStableAttr:  &fusefs.StableAttr{Ino: RootIno, Mode: syscall.S_IFDIR},
		MountOptions:    fuse.MountOptions{FsName: "imagefs-test", Name: "imagefs", DirectMount: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	img := filepath.Join(mnt, "images", rootfsTestImage)
	if b, err := os.ReadFile(filepath.Join(img, "rootfs/etc/passwd")); err != nil || !strings.HasPrefix(string(b), "root:") {
		t.Errorf("images/<id>/rootfs/etc/passwd: %q %v", b, err)
	}
	top := store.dirs[2].ID
	if b, err := os.ReadFile(filepath.Join(mnt, "layers", top, "changes")); err != nil || !strings.Contains(string(b), "A /readd\n") {
		t.Errorf("layers/<top>/changes: %q %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(mnt, "layers", top, "diff/merged/a/top")); err != nil {
		t.Errorf("layers/<top>/diff: %v", err)
	}
	for dir, name := range map[string]string{img: "rootfs", filepath.Join(mnt, "layers", top): "diff"} {
		inos := rootfsDirentInos(t, dir)
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, name), &st); err != nil {
			t.Fatal(err)
		}
		if ino, ok := inos[name]; !ok || ino != st.Ino {
			t.Errorf("%s/%s: readdir gives inode %d (listed %v), lookup %d", dir, name, ino, ok, st.Ino)
		}
	}
}

// rootfsDirentInos reads dir with getdents64: name → d_ino.
func rootfsDirentInos(t *testing.T, dir string) map[string]uint64 {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	out := map[string]uint64{}
	buf := make([]byte, 1<<16)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return out
		}
		for off := 0; off < n; {
			ino := binary.LittleEndian.Uint64(buf[off:])
			reclen := int(binary.LittleEndian.Uint16(buf[off+16:]))
			name := buf[off+19 : off+reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			out[string(name)] = ino
			off += reclen
		}
	}
}

// TestRootfsForgetsRemovedListings: the merged listings of a removed
// layer's trees leave the cache with it (a mount seeing builds and
// removals would otherwise keep them until the cache is full).
func TestRootfsForgetsRemovedListings(t *testing.T) {
	id := strings.Repeat("2", 64)               // what newRootfsFakeStore names the first layer
	p := filepath.Join(t.TempDir(), id, "diff") // containers/storage puts the ID in the path
	if err := os.MkdirAll(filepath.Join(p, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	store := newRootfsFakeStore([]union.Layer{{ID: id, Path: p}}, false)
	mnt, _ := mountRootfs(t, store, nil)
	for _, d := range []string{"rootfs", "rootfs/etc"} {
		if _, err := os.ReadDir(filepath.Join(mnt, d)); err != nil {
			t.Fatal(err)
		}
	}
	r := rootfsTestRoots[mnt].r
	if l, _ := r.cache.Len(); l == 0 {
		t.Fatal("nothing cached after listing the tree")
	}
	r.layersGone([]string{id})
	if l, n := r.cache.Len(); l != 0 {
		t.Errorf("%d listings (%d entries) of the removed layer still cached", l, n)
	}
}
