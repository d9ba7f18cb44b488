package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/imagefs/imagefs/internal/fixture"
	"github.com/imagefs/imagefs/internal/testenv"
	"github.com/imagefs/imagefs/internal/union"
	"github.com/imagefs/imagefs/internal/union/treecmp"
	"github.com/imagefs/imagefs/internal/union/uniontest"
	"github.com/imagefs/imagefs/nodes"
	"github.com/imagefs/imagefs/xattrs"
)

// rootfsImage is an image using the fixture builder's whole vocabulary:
// every file type, setuid/setgid/sticky, owners, xattrs with
// security.capability, hardlinks across several names, 255-byte and
// non-UTF-8 names, depth 100, a large file; then whiteouts of files and
// dirs, an opaque dir, swaps both ways, a modified and a re-added file.
func rootfsImage(wide int) fixture.Image {
	deep, _ := fixture.Deep("deep", 100)
	cap := "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" // cap_net_raw+ep
	l0 := []fixture.Entry{
		fixture.Dir("etc"), fixture.File("etc/passwd", "root:x:0:0\n"), fixture.File("etc/group", "root:x:0:\n"),
		fixture.File("etc/hostname", "zero\n"),
		fixture.File("etc/shadow", "root:!:1::::::\n", fixture.Mode(0)),
		fixture.Dir("bin"), fixture.File("bin/sh", "#!sh\n", fixture.Mode(0o755)),
		fixture.File("bin/su", "su\n", fixture.Mode(0o4755)), fixture.File("bin/wall", "wall\n", fixture.Mode(0o2755), fixture.Owner(0, 5)),
		fixture.File("bin/ping", "ping\n", fixture.Mode(0o755), fixture.Xattr("security.capability", cap)),
		fixture.File("bin/busybox", "busybox\n", fixture.Mode(0o755)),
		fixture.Hardlink("bin/ls", "bin/busybox"), fixture.Hardlink("bin/cat", "bin/busybox"), fixture.Hardlink("bin/rm", "bin/busybox"),
		fixture.Dir("tmp", fixture.Mode(0o1777)),
		fixture.Dir("home"), fixture.Dir("home/user", fixture.Owner(1000, 1000), fixture.Mode(0o700)),
		fixture.File("home/user/notes", "mine\n", fixture.Owner(1000, 1000), fixture.Mode(0o600), fixture.Xattr("user.tag", "blue")),
		fixture.Dir("dev"), fixture.CharDev("dev/null", 1, 3, fixture.Mode(0o666)), fixture.BlockDev("dev/sda", 8, 0, fixture.Mode(0o660)),
		fixture.Fifo("dev/initctl", fixture.Mode(0o600)),
		fixture.Symlink("abs", "/etc/passwd"), fixture.Symlink("dangling", "no/such/target"), fixture.Symlink("bin/rel", "../etc/passwd"),
		fixture.File(fixture.LongName("long-", 255), "long\n"), fixture.File(fixture.NonUTF8Name, "latin-1\n"),
		fixture.Dir("gone"), fixture.Dir("gone/sub"), fixture.File("gone/sub/f", "f\n"),
		fixture.Dir("opq"), fixture.File("opq/a", "a\n"), fixture.File("opq/b", "b\n"),
		fixture.Dir("swapdir"), fixture.File("swapdir/x", "x\n"), fixture.File("swapfile", "file\n"),
		fixture.File("readd", "first\n"),
		fixture.BigFile("big", 24<<20+17),
	}
	l0 = append(l0, deep...)
	if wide > 0 {
		l0 = append(l0, fixture.Tree("wide", wide)...)
	}
	l1 := []fixture.Entry{
		fixture.Whiteout("etc/group"), fixture.File("etc/passwd", "root:x:0:0\nuser:x:1000:1000\n"),
		fixture.Whiteout("gone"), fixture.Whiteout("bin/rm"),
		fixture.Opaque("opq"), fixture.File("opq/c", "c\n"),
		fixture.File("swapdir", "now a file\n"), fixture.Dir("swapfile"), fixture.File("swapfile/inner", "now a dir\n"),
		fixture.Whiteout("readd"), fixture.File("added", "added in 1\n"),
	}
	l2 := []fixture.Entry{
		fixture.File("readd", "second\n"), fixture.File("etc/passwd", "root:x:0:0\nuser:x:1000:1000\n", fixture.Mode(0o600)),
		fixture.File("etc/new", "new in 2\n"), fixture.File("etc/hostname", "two\n"),
	}
	return fixture.Image{Names: []string{"localhost/rootfs-test:1"}, Layers: []fixture.Layer{{Entries: l0}, {Entries: l1}, {Entries: l2}}}
}

// rootfsMount mounts the whole read-side tree of store (nodes.NewRoot, as
// imagefs mount does) and returns the mountpoint; unmounted at cleanup.
func rootfsMount(t *testing.T, store nodes.Store) string {
	t.Helper()
	testenv.RequireFUSE(t)
	mnt := t.TempDir()
	testenv.NoMountsLeft(t, mnt)
	root := nodes.NewRoot(store, nodes.Options{Log: log.New(io.Discard, "", 0)})
	// NullPermissions: show mode 0 as stored (/etc/shadow is 0000 in
	// many images); go-fuse would otherwise turn it into 0644.
	srv, err := nodes.Mount(mnt, root, &fusefs.Options{
		NullPermissions: true,
		RootStableAttr:  &fusefs.StableAttr{Ino: nodes.RootIno, Mode: syscall.S_IFDIR},
		MountOptions: fuse.MountOptions{
			FsName: "imagefs-rootfs-test", Name: "imagefs", DirectMount: true, EnableSymlinkCaching: true,
			Options: []string{"default_permissions"},
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
	return mnt
}

// storeMount mounts the image read-only through the store (podman image
// mount) and returns the directory; unmounted at cleanup.
func storeMount(t *testing.T, s *fixture.Store, id string) string {
	t.Helper()
	dir, err := s.Store.MountImage(id, []string{"ro"}, "")
	if err != nil {
		t.Fatalf("store mount of %s: %v", id, err)
	}
	t.Cleanup(func() {
		if _, err := s.Store.UnmountImage(id, true); err != nil {
			t.Errorf("store unmount: %v", err)
		}
	})
	return dir
}

// kernelOracle returns the image's tree as the kernel shows it: the
// store's own read-only mount, or for ".wh." stores the kernel's overlayfs
// over a copy of the layers converted to overlay format.
func kernelOracle(t *testing.T, s *fixture.Store, store nodes.Store, id string) string {
	t.Helper()
	dirs, err := store.LayerDirs(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 || !dirs[0].AUFSWhiteouts {
		return storeMount(t, s, id)
	}
	var kernel []union.Layer
	for _, d := range dirs {
		k := filepath.Join(t.TempDir(), "layer")
		uniontest.CopyTree(t, d.Path, k)
		uniontest.ToKernel(t, k)
		kernel = append(kernel, union.Layer{ID: d.ID, Path: k})
	}
	return uniontest.KernelMount(t, kernel)
}

func compareRootfs(t *testing.T, oracle, rootfs string) *treecmp.Tree {
	t.Helper()
	start := time.Now()
	want, err := treecmp.Walk(oracle, treecmp.Options{DirNlink: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := treecmp.Walk(rootfs, treecmp.Options{DirNlink: true, IgnoreXattr: func(n string) bool { return strings.HasPrefix(n, "user.imagefs.") }})
	if err != nil {
		t.Fatal(err)
	}
	diffs := treecmp.Diff(want, got)
	for i, d := range diffs {
		if i == 50 {
			t.Errorf("… and %d more differences", len(diffs)-50)
			break
		}
		t.Error(d)
	}
	if len(want.Vanished)+len(got.Vanished) > 0 {
		t.Errorf("names listed but not found: kernel %v, imagefs %v", want.Vanished, got.Vanished)
	}
	t.Logf("%d entries compared in %v", len(got.Nodes), time.Since(start).Round(time.Millisecond))
	return got
}

// TestRootfsMatchesKernel: for the overlay driver, the vfs driver and an
// overlay store with ".wh." whiteouts (mount_program), images/<id>/rootfs
// equals the kernel's view of the same image, entry for entry.
func TestRootfsMatchesKernel(t *testing.T) {
	for _, c := range []struct {
		name   string
		driver string
		opts   []string
		wide   int
	}{
		{"overlay", "overlay", nil, 20000},
		{"vfs", "vfs", nil, 0},
		{"overlay-wh", "overlay", []string{fixture.MountProgramOpt}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			testenv.RequireFUSE(t)
			s := fixture.NewStore(t, c.driver, c.opts...)
			added := s.Add(t, rootfsImage(c.wide))
			store := newTestStore(t, s)
			mnt := rootfsMount(t, store)
			if dirs, err := store.LayerDirs(added.ID); err != nil || dirs[0].AUFSWhiteouts != (c.opts != nil) {
				t.Fatalf("LayerDirs: %+v %v; want AUFSWhiteouts=%v", dirs, err, c.opts != nil)
			}
			got := compareRootfs(t, kernelOracle(t, s, store, added.ID), filepath.Join(mnt, "images", added.ID, "rootfs"))
			if n := len(got.Nodes); n < 100+c.wide {
				t.Errorf("only %d entries: the fixture is not what this test thinks", n)
			}
			for _, p := range []string{"etc/group", "gone", "bin/rm", "opq/a", "swapdir/x"} {
				if got.Nodes[p] != nil {
					t.Errorf("%s is visible", p)
				}
			}
		})
	}
}

// TestRootfsLayerXattr: user.imagefs.layer names the layer that added,
// modified or re-added each file, for both drivers.
func TestRootfsLayerXattr(t *testing.T) {
	for _, driver := range []string{"overlay", "vfs"} {
		t.Run(driver, func(t *testing.T) {
			testenv.RequireFUSE(t)
			s := fixture.NewStore(t, driver)
			added := s.Add(t, rootfsImage(0))
			mnt := filepath.Join(rootfsMount(t, newTestStore(t, s)), "images", added.ID)
			for p, want := range map[string]int{
				"bin/sh": 0, "bin/ls": 0, "etc/passwd": 2, "readd": 2, "added": 1, "opq/c": 1, "opq": 1,
				"swapdir": 1, "swapfile/inner": 1, "etc/new": 2, "big": 0, "etc": 2, "": 2,
				"etc/hostname": 2, // a path podman diff leaves out of its changes
			} {
				p := filepath.Join(mnt, "rootfs", p)
				buf := make([]byte, 100)
				n, err := unix.Lgetxattr(p, xattrs.RootfsLayer, buf)
				if err != nil || string(buf[:n]) != added.LayerIDs[want] {
					t.Errorf("%s: %s = %q, %v; want layer %d (%s)", p, xattrs.RootfsLayer, buf[:max(n, 0)], err, want, added.LayerIDs[want])
				}
				n, err = unix.Lgetxattr(p, xattrs.RootfsLayerIndex, buf)
				if err != nil || string(buf[:n]) != fmt.Sprintf("%03d", want) {
					t.Errorf("%s: %s = %q, %v; want %03d", p, xattrs.RootfsLayerIndex, buf[:max(n, 0)], err, want)
				}
				if _, err := unix.Lgetxattr(p, "user.not-there", buf); !errors.Is(err, unix.ENODATA) {
					t.Errorf("%s: absent xattr: %v, want ENODATA", p, err)
				}
				lb := make([]byte, 4096)
				ln, _ := unix.Llistxattr(p, lb)
				if strings.Contains(string(lb[:max(ln, 0)]), "user.imagefs.") {
					t.Errorf("%s: listxattr lists %q", p, lb[:ln])
				}
			}
			// The kernel answers user.* on symlinks itself: ENODATA.
			if _, err := unix.Lgetxattr(filepath.Join(mnt, "rootfs/abs"), xattrs.RootfsLayer, make([]byte, 100)); !errors.Is(err, unix.ENODATA) {
				t.Errorf("user.imagefs.layer on a symlink: %v, want ENODATA (kernel rule for user.*)", err)
			}
			if out, err := exec.Command("getcap", filepath.Join(mnt, "rootfs/bin/ping")).CombinedOutput(); err != nil || !strings.Contains(string(out), "cap_net_raw") {
				t.Errorf("getcap bin/ping: %q %v", out, err)
			}
		})
	}
}

// TestRootfsStoredImagefsXattrs: a layer file that carries user.imagefs.*
// names of its own: rootfs/ answers imagefs's and lists neither, diff/
// serves and lists them as stored.
func TestRootfsStoredImagefsXattrs(t *testing.T) {
	testenv.RequireFUSE(t)
	s := fixture.NewStore(t, "overlay")
	added := s.Add(t, fixture.Image{Layers: []fixture.Layer{{Entries: []fixture.Entry{
		fixture.File("f", "f\n", fixture.Xattr(xattrs.RootfsLayer, "fake"), fixture.Xattr(xattrs.RootfsLayerIndex, "999"), fixture.Xattr("user.other", "o")),
	}}}})
	mnt := rootfsMount(t, newTestStore(t, s))
	get := func(p, name string) string {
		buf := make([]byte, 100)
		n, err := unix.Lgetxattr(p, name, buf)
		if err != nil {
			return err.Error()
		}
		return string(buf[:n])
	}
	list := func(p string) string {
		buf := make([]byte, 4096)
		n, err := unix.Llistxattr(p, buf)
		if err != nil {
			return err.Error()
		}
		return strings.ReplaceAll(string(buf[:n]), "\x00", " ")
	}
	rootfs := filepath.Join(mnt, "images", added.ID, "rootfs", "f")
	if got := get(rootfs, xattrs.RootfsLayer) + " " + get(rootfs, xattrs.RootfsLayerIndex); got != added.LayerIDs[0]+" 000" {
		t.Errorf("rootfs/f: imagefs's xattrs are %q, want %s 000", got, added.LayerIDs[0])
	}
	if got := list(rootfs); got != "user.other " {
		t.Errorf("rootfs/f lists %q, want only user.other", got)
	}
	diff := filepath.Join(mnt, "layers", added.LayerIDs[0], "diff", "f")
	if got := get(diff, xattrs.RootfsLayer) + " " + get(diff, xattrs.RootfsLayerIndex); got != "fake 999" {
		t.Errorf("diff/f: the stored xattrs are %q, want fake 999", got)
	}
	if got := list(diff); !strings.Contains(got, xattrs.RootfsLayer+" ") || !strings.Contains(got, xattrs.RootfsLayerIndex+" ") {
		t.Errorf("diff/f lists %q, want the stored user.imagefs.* names", got)
	}
}

// TestRootfsRemovalNotBlocked: with a file open inside rootfs, removing
// the image from the store succeeds, and the open file keeps reading or
// fails cleanly.
func TestRootfsRemovalNotBlocked(t *testing.T) {
	testenv.RequireFUSE(t)
	s := fixture.NewStore(t, "overlay")
	added := s.Add(t, rootfsImage(0))
	mnt := rootfsMount(t, newTestStore(t, s))
	img := filepath.Join(mnt, "images", added.ID)
	f, err := os.Open(filepath.Join(img, "rootfs/big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 4096)
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatal(err)
	}
	// podman rmi, a separate process, as a user would run it.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := podmanShortRunrootCtx(ctx, t, s, "rmi", added.ID); err != nil {
		t.Fatalf("podman rmi while a rootfs file is open: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(s.GraphRoot, "overlay", added.LayerIDs[0])); !os.IsNotExist(err) {
		t.Errorf("layer directory still there after removal: %v", err)
	}
	n, err := io.Copy(io.Discard, f)
	if err != nil && !errors.Is(err, syscall.EIO) && !errors.Is(err, syscall.ENOENT) {
		t.Errorf("reading on after removal: %v", err)
	}
	t.Logf("read %d more bytes after removal (err %v)", n, err)
	if _, err := os.Stat(filepath.Join(img, "rootfs/etc/never-looked-up")); err == nil {
		t.Error("lookup of a missing name succeeded after removal")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := os.Stat(img)
		if os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("images/<id> still there 10s after removal: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Once imagefs (this process) has seen the removal, it holds no layer
	// file open: a descriptor would keep the deleted file's blocks.
	f.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		held := deletedLayerFiles(t, added.LayerIDs)
		if len(held) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("removed layer files still held open: %v", held)
		}
	}
}

// deletedLayerFiles lists the deleted files of these layers this process
// holds open. (Their paths show relative to the mount they were opened
// through: the overlay driver's bind mount of its home, gone by now.)
func deletedLayerFiles(t *testing.T, layerIDs []string) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var held []string
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasSuffix(target, " (deleted)") &&
			slices.ContainsFunc(layerIDs, func(id string) bool { return strings.Contains(target, id) }) {
			held = append(held, target)
		}
	}
	return held
}

// TestLayerChangesMatchPodmanDiff: layers/<id>/changes of the top layer
// lists what `podman diff IMAGE` lists; diff/ shows the layer as stored.
func TestLayerChangesMatchPodmanDiff(t *testing.T) {
	testenv.RequireFUSE(t)
	testenv.RequirePodman(t)
	s := fixture.NewStore(t, "overlay")
	added := s.Add(t, rootfsImage(0))
	store := newTestStore(t, s)
	mnt := rootfsMount(t, store)
	layer := func(i int) string { return filepath.Join(mnt, "layers", added.LayerIDs[i]) }
	changesMatchPodmanDiff(t, s, mnt, added)
	dirs, err := store.LayerDirs(added.ID)
	if err != nil {
		t.Fatal(err)
	}
	want, err := treecmp.Walk(dirs[1].Path, treecmp.Options{DirNlink: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := treecmp.Walk(filepath.Join(layer(1), "diff"), treecmp.Options{DirNlink: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range treecmp.Diff(want, got) {
		t.Error(d)
	}
	if n := got.Nodes["etc/group"]; n == nil || n.Mode&unix.S_IFMT != unix.S_IFCHR || n.Rdev != 0 {
		t.Errorf("layers/<1>/diff does not show the whiteout of etc/group as a 0/0 char device")
	}
}

func sortedLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// podmanShortRunroot runs podman on the fixture store through a short
// symlink to its runroot (podman refuses runroots over 50 characters) and
// returns its stdout; it fails the test when podman fails.
func podmanShortRunroot(t *testing.T, s *fixture.Store, args ...string) string {
	t.Helper()
	out, err := podmanShortRunrootCtx(context.Background(), t, s, args...)
	if err != nil {
		t.Fatalf("podman %v: %v\n%s", args, err, out)
	}
	return out
}

// podmanShortRunrootCtx is podmanShortRunroot returning the error (and
// stderr in place of stdout when it fails).
func podmanShortRunrootCtx(ctx context.Context, t *testing.T, s *fixture.Store, args ...string) (string, error) {
	t.Helper()
	testenv.RequirePodman(t)
	link, err := os.MkdirTemp("/tmp", "rr")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(link)
	short := filepath.Join(link, "r")
	if err := os.Symlink(s.RunRoot, short); err != nil {
		t.Fatal(err)
	}
	flags := s.PodmanArgs()
	for i := range flags {
		if flags[i] == s.RunRoot {
			flags[i] = short
		}
	}
	cmd := exec.CommandContext(ctx, "podman", append(flags, args...)...)
	cmd.Env = s.PodmanEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return stderr.String(), err
	}
	return string(out), nil
}

// TestLayerChangesCornersMatchPodmanDiff: the corners where the overlay
// driver's native diff (kernel-overlayfs stores) and the tree comparison
// (vfs) differ from each other, against podman diff on each: a file
// rewritten with the same size and mtime, an opaque directory over one a
// lower layer has, a dangling symlink replaced by a file, a directory
// whose mtime alone changed, a symlink's new target of the same length,
// devices whose mtime alone changed, and the paths podman diff always
// leaves out.
func TestLayerChangesCornersMatchPodmanDiff(t *testing.T) {
	testenv.RequireFUSE(t)
	testenv.RequirePodman(t)
	later := fixture.MTime(fixture.DefaultMTime.Add(time.Hour))
	img := fixture.Image{Layers: []fixture.Layer{{Entries: []fixture.Entry{
		fixture.File("conf", "aaaa\n"), fixture.Dir("w"), fixture.File("w/a", "a\n"), fixture.File("w/same", "s\n"),
		fixture.Symlink("ds", "nowhere"), fixture.Dir("x"), fixture.File("x/f", "f\n"), fixture.Dir("keep"),
		fixture.Dir("etc"), fixture.File("etc/hostname", "h\n"), fixture.Dir("run"), fixture.Dir("proc"),
		fixture.Symlink("sl", "aa"), fixture.Dir("bdev"), fixture.BlockDev("bdev/loop0", 7, 0), fixture.CharDev("bdev/null", 1, 3),
	}}, {Entries: []fixture.Entry{
		fixture.File("conf", "bbbb\n"), fixture.Opaque("w"), fixture.File("w/b", "b\n"), fixture.File("w/same", "s\n"),
		fixture.File("ds", "a file now\n"), fixture.Dir("x", later), fixture.File("keep/g", "g\n"),
		fixture.File("etc/hostname", "other\n"), fixture.File("run/r", "r\n"), fixture.Dir("proc", later),
		fixture.Dir("run/podman-init"), fixture.Dir("run/notify"),
		fixture.Symlink("sl", "bb"), fixture.BlockDev("bdev/loop0", 7, 0, later), fixture.CharDev("bdev/null", 1, 3, later),
	}}}}
	for _, driver := range []string{"overlay", "vfs"} {
		t.Run(driver, func(t *testing.T) {
			s := fixture.NewStore(t, driver)
			added := s.Add(t, img)
			changesMatchPodmanDiff(t, s, rootfsMount(t, newTestStore(t, s)), added)
		})
	}
}

// changesMatchPodmanDiff compares the changes file of the image's top
// layer with podman diff of the image (which closes the fixture's store).
func changesMatchPodmanDiff(t *testing.T, s *fixture.Store, mnt string, added fixture.Added) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(mnt, "layers", added.LayerIDs[len(added.LayerIDs)-1], "changes"))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	out := podmanShortRunroot(t, s, "diff", added.ID)
	if got, want := sortedLines(string(b)), sortedLines(out); got != want {
		t.Errorf("changes of the top layer:\n%s\npodman diff:\n%s", got, want)
	}
}

// TestLayerDirectoryGone: a layer whose directory is gone while the index
// still lists it (podman removing it, or a store that lost it) reads as
// ENOENT under layers/<id>/, not EIO.
func TestLayerDirectoryGone(t *testing.T) {
	s := fixture.NewStore(t, "overlay")
	added := s.Add(t, fixture.Image{Layers: []fixture.Layer{
		{Entries: []fixture.Entry{fixture.File("a", "a\n")}}, {Entries: []fixture.Entry{fixture.File("b", "b\n")}}}})
	mnt := rootfsMount(t, newTestStore(t, s))
	top := added.LayerIDs[1]
	if err := os.RemoveAll(filepath.Join(s.GraphRoot, "overlay", top, "diff")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"changes", "diff"} {
		if _, err := os.Stat(filepath.Join(mnt, "layers", top, p)); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("layers/<id>/%s of a layer whose directory is gone: %v, want ENOENT", p, err)
		}
	}
}

// TestRootfsImagesApart: each image's rootfs/ is a tree of its own, as each
// `podman image mount` is a file system of its own: a file two images share
// through a layer has an inode number in each (its hardlinks share the
// image's), so du, tar and cp -a given several images do not take one's
// files for hardlinks of the other's.
func TestRootfsImagesApart(t *testing.T) {
	testenv.RequireFUSE(t)
	s := fixture.NewStore(t, "overlay")
	base := fixture.Layer{Entries: []fixture.Entry{
		fixture.File("bin/busybox", strings.Repeat("b", 64<<10), fixture.Mode(0o755)), fixture.Hardlink("bin/ls", "bin/busybox"),
	}}
	a := s.Add(t, fixture.Image{Names: []string{"localhost/a:1"}, Layers: []fixture.Layer{base}})
	b := s.Add(t, fixture.Image{Names: []string{"localhost/b:1"}, Layers: []fixture.Layer{base, {Entries: []fixture.Entry{fixture.File("b", "b\n")}}}})
	mnt := rootfsMount(t, newTestStore(t, s))
	rootA, rootB := filepath.Join(mnt, "images", a.ID, "rootfs"), filepath.Join(mnt, "images", b.ID, "rootfs")
	ino := func(p string) uint64 {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	for _, root := range []string{rootA, rootB} {
		if ino(root+"/bin/busybox") != ino(root+"/bin/ls") {
			t.Errorf("%s: the hardlinks bin/busybox and bin/ls have different inode numbers", root)
		}
	}
	if ino(rootA+"/bin/busybox") == ino(rootB+"/bin/busybox") {
		t.Errorf("bin/busybox has one inode number in both images")
	}
	du := func(dirs ...string) []string {
		out, err := exec.Command("du", append([]string{"-sk"}, dirs...)...).Output()
		if err != nil {
			t.Fatalf("du %v: %v", dirs, err)
		}
		var sizes []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			sizes = append(sizes, strings.Fields(line)[0])
		}
		return sizes
	}
	alone := du(rootB)
	if both := du(rootA, rootB); both[1] != alone[0] {
		t.Errorf("du -s of both images counts %s KiB for the second, %s KiB alone", both[1], alone[0])
	}
}

// fsNodumpFl is FS_NODUMP_FL, chattr's d.
const fsNodumpFl = 0x40

// TestRootfsFileFlags: lsattr's ioctl (FS_IOC_GETFLAGS) answers with the
// layer file's flags, as the kernel's overlayfs passes them on.
func TestRootfsFileFlags(t *testing.T) {
	testenv.RequireFUSE(t)
	s := fixture.NewStore(t, "overlay")
	added := s.Add(t, rootfsImage(0))
	flags := func(p string) (uint32, error) {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, err
		}
		defer unix.Close(fd)
		return unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	}
	// chattr +d (nodump) on the layer's own copy of bin/busybox.
	diff, err := s.DiffDir(added.LayerIDs[0])
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(filepath.Join(diff, "bin/busybox"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, fsNodumpFl)
	unix.Close(fd)
	if err != nil {
		t.Fatalf("chattr +d on the layer's file: %v", err)
	}
	mnt := rootfsMount(t, newTestStore(t, s))
	kernel := storeMount(t, s, added.ID)
	if f, err := flags(filepath.Join(kernel, "bin/busybox")); err != nil || f&fsNodumpFl == 0 {
		t.Fatalf("the kernel's overlayfs shows flags %#x, %v for bin/busybox: the test's premise is gone", f, err)
	}
	// chattr is refused as any change, and changes nothing.
	for _, root := range []string{kernel, filepath.Join(mnt, "images", added.ID, "rootfs")} {
		fd, err := unix.Open(filepath.Join(root, "etc/passwd"), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, fsNodumpFl)
		unix.Close(fd)
		if !errors.Is(err, unix.EROFS) {
			t.Errorf("chattr +d under %s: %v, want EROFS", root, err)
		}
	}
	for _, p := range []string{"", "etc", "etc/passwd", "bin/busybox", "opq", "big"} {
		want, werr := flags(filepath.Join(kernel, p))
		got, err := flags(filepath.Join(mnt, "images", added.ID, "rootfs", p))
		if err != nil || werr != nil || got != want {
			t.Errorf("/%s: flags %#x, %v; the kernel's overlayfs says %#x, %v", p, got, err, want, werr)
		}
	}
}
