// Package uniontest builds layer directories for tests of the union and
// of rootfs/: the same tree in overlay format (0/0 char device whiteouts,
// opaque xattr) or AUFS format (".wh." files), and mounts them with the
// kernel's overlayfs as the oracle.
package uniontest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefs/imagefs/internal/testenv"
	"github.com/imagefs/imagefs/internal/union"
)

// Builder writes one layer directory the way containers/storage
// stores it: overlay format (0/0 char device whiteouts, opaque xattr) or
// AUFS format (".wh." files).
type Builder struct {
	t     *testing.T
	Dir   string    // the layer directory
	aufs  bool      // AUFS-format whiteouts
	Mtime time.Time // given to every file and directory written
}

// NewLayer creates directory base/name for a layer.
func NewLayer(t *testing.T, base string, name string, aufs bool) *Builder {
	t.Helper()
	d := filepath.Join(base, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return &Builder{t: t, Dir: d, aufs: aufs, Mtime: time.Unix(1700000000, 123456789)}
}

func (b *Builder) p(rel string) string { return filepath.Join(b.Dir, rel) }

func (b *Builder) check(err error) {
	b.t.Helper()
	if err != nil {
		b.t.Fatal(err)
	}
}

func (b *Builder) parents(rel string) {
	b.t.Helper()
	b.check(os.MkdirAll(filepath.Dir(b.p(rel)), 0o755))
}

func (b *Builder) touch(rel string) {
	b.t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(b.Mtime.UnixNano()), unix.NsecToTimespec(b.Mtime.UnixNano())}
	b.check(unix.UtimesNanoAt(unix.AT_FDCWD, b.p(rel), ts, unix.AT_SYMLINK_NOFOLLOW))
}

func (b *Builder) Dirs(rels ...string) *Builder {
	b.t.Helper()
	for _, rel := range rels {
		b.check(os.MkdirAll(b.p(rel), 0o755))
	}
	return b
}

func (b *Builder) File(rel, content string, mode os.FileMode) *Builder {
	b.t.Helper()
	b.parents(rel)
	b.check(os.WriteFile(b.p(rel), []byte(content), 0o600))
	b.check(os.Chmod(b.p(rel), mode))
	b.touch(rel)
	return b
}

func (b *Builder) Chmod(rel string, mode uint32) *Builder {
	b.t.Helper()
	b.check(unix.Chmod(b.p(rel), mode))
	return b
}

func (b *Builder) Chown(rel string, uid, gid int) *Builder {
	b.t.Helper()
	b.check(os.Lchown(b.p(rel), uid, gid))
	return b
}

func (b *Builder) Link(oldrel, newrel string) *Builder {
	b.t.Helper()
	b.parents(newrel)
	b.check(os.Link(b.p(oldrel), b.p(newrel)))
	return b
}

func (b *Builder) Symlink(target, rel string) *Builder {
	b.t.Helper()
	b.parents(rel)
	b.check(os.Symlink(target, b.p(rel)))
	b.touch(rel)
	return b
}

func (b *Builder) Mknod(rel string, mode uint32, major, minor uint32) *Builder {
	b.t.Helper()
	b.parents(rel)
	b.check(unix.Mknod(b.p(rel), mode, int(unix.Mkdev(major, minor))))
	if mode&unix.S_IFMT != unix.S_IFSOCK {
		b.check(unix.Chmod(b.p(rel), mode&0o7777)) // no umask
	}
	b.touch(rel)
	return b
}

func (b *Builder) Xattr(rel, name, value string) *Builder {
	b.t.Helper()
	b.check(unix.Lsetxattr(b.p(rel), name, []byte(value), 0))
	return b
}

func (b *Builder) Whiteout(rel string) *Builder {
	b.t.Helper()
	b.parents(rel)
	if b.aufs {
		b.check(os.WriteFile(filepath.Join(filepath.Dir(b.p(rel)), ".wh."+filepath.Base(rel)), nil, 0o444))
		return b
	}
	b.check(unix.Mknod(b.p(rel), unix.S_IFCHR|0o600, 0))
	return b
}

func (b *Builder) Opaque(rel string) *Builder {
	b.t.Helper()
	b.Dirs(rel)
	if b.aufs {
		b.check(os.WriteFile(filepath.Join(b.p(rel), ".wh..wh..opq"), nil, 0o444))
		return b
	}
	return b.Xattr(rel, "trusted.overlay.opaque", "y")
}

// stamp sets every directory's mtime, after all content is written.
func (b *Builder) Stamp() {
	b.t.Helper()
	b.check(filepath.Walk(b.Dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() {
			rel, _ := filepath.Rel(b.Dir, p)
			b.touch(rel)
		}
		return nil
	}))
}

// toKernel converts an AUFS-format layer copy to overlay format in place.
func ToKernel(t *testing.T, dir string) {
	t.Helper()
	var opq, wh []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		name := fi.Name()
		switch {
		case name == ".wh..wh..opq":
			opq = append(opq, p)
		case strings.HasPrefix(name, ".wh..wh."):
			wh = append(wh, p+"\x00")
		case strings.HasPrefix(name, ".wh."):
			wh = append(wh, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range opq {
		d := filepath.Dir(p)
		var st unix.Stat_t
		if err := unix.Lstat(d, &st); err != nil {
			t.Fatal(err)
		}
		os.Remove(p)
		if err := unix.Lsetxattr(d, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
			t.Fatal(err)
		}
		unix.UtimesNanoAt(unix.AT_FDCWD, d, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
	}
	for _, p := range wh {
		if strings.HasSuffix(p, "\x00") {
			os.Remove(strings.TrimSuffix(p, "\x00"))
			continue
		}
		d := filepath.Dir(p)
		var st unix.Stat_t
		unix.Lstat(d, &st)
		os.Remove(p)
		target := filepath.Join(d, strings.TrimPrefix(filepath.Base(p), ".wh."))
		if err := unix.Mknod(target, unix.S_IFCHR|0o600, 0); err != nil {
			t.Fatal(err)
		}
		unix.UtimesNanoAt(unix.AT_FDCWD, d, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
	}
}

var long255 = strings.Repeat("n", 255)

// BuildStack writes three layers exercising every rule of the merge and
// returns them base first.
func BuildStack(t *testing.T, base string, aufs bool) []union.Layer {
	t.Helper()
	l0 := NewLayer(t, base, "l0", aufs)
	l0.Dirs("etc/sub", "bin", "usr/lib", "gone/inner", "opq", "swapdir/in", "dev", "tmp", "sgid", "merged/a")
	l0.File("etc/passwd", "root:x:0:0\n", 0o644).File("etc/group", "root:x:0:\n", 0o644).File("etc/shadow", "x", 0).File("etc/sub/deep", "deep", 0o600)
	l0.File("bin/sh", "#!sh", 0o755).File("bin/su", "su", 0o4755).File("bin/ping", "ping", 0o755)
	l0.Xattr("bin/ping", "security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
	l0.File("bin/hard1", "hard", 0o644).Link("bin/hard1", "bin/hard2").Link("bin/hard1", "usr/hard3")
	l0.File("usr/lib/owned", "o", 0o640).Chown("usr/lib/owned", 1000, 2000)
	l0.Xattr("etc/passwd", "user.origin", "base").Xattr("etc/passwd", "trusted.kept", "t")
	l0.File("gone/inner/f", "f", 0o644).File("opq/a", "a", 0o644).File("opq/b", "b", 0o644)
	l0.File("swapfile", "was a file", 0o644).File("swapdir/in/x", "x", 0o644).File("readd", "first", 0o644)
	l0.Mknod("dev/null", unix.S_IFCHR|0o666, 1, 3).Mknod("dev/sda", unix.S_IFBLK|0o660, 8, 0)
	l0.Mknod("dev/fifo", unix.S_IFIFO|0o644, 0, 0).Mknod("dev/sock", unix.S_IFSOCK|0o755, 0, 0)
	l0.Symlink("/etc/passwd", "abs").Symlink("nowhere/at/all", "dangling").Symlink("../etc/passwd", "bin/rel")
	l0.Chmod("tmp", 0o1777).Chmod("sgid", 0o2775)
	l0.File(long255, "long name", 0o644).File("bad\xff\xfename", "not utf-8", 0o644)
	l0.File("merged/a/base", "b", 0o644)
	l0.Stamp()

	l1 := NewLayer(t, base, "l1", aufs)
	l1.Mtime = l1.Mtime.Add(3600e9)
	l1.Dirs("etc", "bin", "usr", "merged/a")
	l1.Whiteout("etc/group").Whiteout("gone").Whiteout("bin/hard2").Whiteout("readd")
	l1.File("etc/passwd", "root:x:0:0\nuser:x:1000:1000\n", 0o644)
	l1.Opaque("opq").File("opq/c", "c", 0o644)
	l1.File("swapdir", "now a file", 0o600)
	l1.Dirs("swapfile").File("swapfile/x", "now a dir", 0o644)
	l1.Dirs("newdir").File("newdir/f", "new", 0o644).Whiteout("newdir/never-existed")
	l1.File("merged/a/mid", "m", 0o644)
	l1.Stamp()

	l2 := NewLayer(t, base, "l2", aufs)
	l2.Mtime = l2.Mtime.Add(7200e9)
	l2.Dirs("etc", "merged/a")
	l2.File("readd", "second", 0o644)
	l2.File("etc/passwd", "root:x:0:0\nuser:x:1000:1000\n", 0o600)
	l2.File("merged/a/top", "t", 0o644)
	l2.Stamp()

	var out []union.Layer
	for i, b := range []*Builder{l0, l1, l2} {
		out = append(out, union.Layer{ID: fmt.Sprintf("layer%d", i), Path: b.Dir, AUFS: aufs})
	}
	return out
}

// KernelMount mounts layers read-only with the kernel's overlayfs.
func KernelMount(t *testing.T, layers []union.Layer) string {
	t.Helper()
	return kernelMount(t, layers, "")
}

// StoreMount mounts layers read-only the way their store's own mount
// would: fuse-overlayfs for AUFS layers (stores with a mount_program),
// otherwise the kernel's overlayfs, with the userxattr option for
// UserXattr layers (rootless stores). It needs root, and FUSE and
// /usr/bin/fuse-overlayfs for AUFS layers.
func StoreMount(t *testing.T, layers []union.Layer) string {
	t.Helper()
	switch {
	case len(layers) > 0 && layers[0].AUFS:
		return fuseOverlayMount(t, layers)
	case len(layers) > 0 && layers[0].UserXattr:
		return kernelMount(t, layers, ",userxattr")
	}
	return kernelMount(t, layers, "")
}

func kernelMount(t *testing.T, layers []union.Layer, extra string) string {
	t.Helper()
	testenv.RequireRoot(t)
	mnt := t.TempDir()
	testenv.NoMountsLeft(t, mnt)
	opts := "lowerdir=" + lowerdir(layers) + extra
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, opts); err != nil {
		t.Fatalf("mounting overlay -o %s: %v", opts, err)
	}
	t.Cleanup(func() { unmount(t, mnt) })
	return mnt
}

func fuseOverlayMount(t *testing.T, layers []union.Layer) string {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireFUSE(t)
	bin, err := exec.LookPath("fuse-overlayfs")
	if err != nil {
		if os.Getenv(testenv.RequireAllVar) == "1" {
			t.Fatalf("fuse-overlayfs is missing and %s=1: %v", testenv.RequireAllVar, err)
		}
		t.Skipf("fuse-overlayfs is missing: %v", err)
	}
	mnt := t.TempDir()
	testenv.NoMountsLeft(t, mnt)
	opts := "lowerdir=" + lowerdir(layers)
	if out, err := exec.Command(bin, "-o", opts, mnt).CombinedOutput(); err != nil {
		t.Fatalf("fuse-overlayfs -o %s %s: %v %s", opts, mnt, err, out)
	}
	t.Cleanup(func() { unmount(t, mnt) })
	return mnt
}

// lowerdir is overlay's lowerdir= value for layers: top layer first.
func lowerdir(layers []union.Layer) string {
	var lower []string
	for i := len(layers) - 1; i >= 0; i-- {
		lower = append(lower, layers[i].Path)
	}
	return strings.Join(lower, ":")
}

func unmount(t *testing.T, mnt string) {
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Errorf("unmounting %s: %v", mnt, err)
	}
}

// CopyTree copies src to dst with cp -a (hardlinks, xattrs, devices kept).
func CopyTree(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v %s", src, dst, err, out)
	}
}
