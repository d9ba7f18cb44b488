package union_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagefs/imagefs/internal/testenv"
	"github.com/imagefs/imagefs/internal/union"
	"github.com/imagefs/imagefs/internal/union/treecmp"
	"github.com/imagefs/imagefs/internal/union/uniontest"
)

// stat is s.Stat(e), failing the test on an error.
func stat(t *testing.T, s *union.Stack, e *union.Entry) *union.Stat {
	t.Helper()
	st, err := s.Stat(e)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// walkStack records the union through the union API, as treecmp would
// through a mount of it.
func walkStack(t *testing.T, s *union.Stack) *treecmp.Tree {
	t.Helper()
	tree := treecmp.NewTree()
	var walk func(e *union.Entry)
	walk = func(e *union.Entry) {
		st := stat(t, s, e)
		if e.Type != st.Mode&unix.S_IFMT || e.Ino != st.Ino || e.Dev != st.Dev {
			t.Errorf("%s: listing says type %o, inode %d:%d; lstat %o, %d:%d", e.Path, e.Type, e.Dev, e.Ino, st.Mode&unix.S_IFMT, st.Dev, st.Ino)
		}
		n := &treecmp.Node{Mode: st.Mode, Uid: st.Uid, Gid: st.Gid, Size: st.Size, Nlink: uint64(st.Nlink),
			Mtime: st.Mtime, Rdev: st.Rdev, Dev: st.Dev, Ino: st.Ino}
		tree.Nodes[e.Path] = n
		names, err := s.ListXattr(e)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range names {
			v, err := s.GetXattr(e, x)
			if err != nil {
				t.Fatal(err)
			}
			if n.Xattrs == nil {
				n.Xattrs = map[string]string{}
			}
			n.Xattrs[x] = string(v)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			n.Size = 0
			l, err := s.List(e)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range l.Entries {
				walk(c)
			}
		case unix.S_IFLNK:
			if n.Target, err = s.Readlink(e); err != nil {
				t.Fatal(err)
			}
		case unix.S_IFREG:
			b, err := os.ReadFile(s.BackingPath(e))
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.Sum256(b)
			n.Sum = hex.EncodeToString(h[:])
		}
	}
	walk(s.Root())
	tree.Finish()
	return tree
}

func compareWithKernel(t *testing.T, layers, kernelLayers []union.Layer) {
	t.Helper()
	s, err := union.NewStack(layers, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := walkStack(t, s)
	want, err := treecmp.Walk(uniontest.KernelMount(t, kernelLayers), treecmp.Options{DirNlink: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range treecmp.Diff(want, got) {
		t.Error(d)
	}
	// overlayfs lists the whiteouts of directories it does not merge
	// (newdir/ exists in one layer only) but cannot look them up.
	if v := strings.Join(want.Vanished, ","); v != "newdir/never-existed" {
		t.Errorf("kernel listed but could not find %q; want newdir/never-existed", v)
	}
	if len(got.Nodes) < 35 {
		t.Errorf("only %d entries: the fixture did not build", len(got.Nodes))
	}
}

// TestMergeMatchesKernel holds the merge of overlay-format layers to the
// kernel's overlayfs over the same directories.
func TestMergeMatchesKernel(t *testing.T) {
	testenv.RequireRoot(t)
	layers := uniontest.BuildStack(t, t.TempDir(), false)
	compareWithKernel(t, layers, layers)
}

// TestMergeAUFSMatchesKernel merges ".wh."-format layers and compares
// with the kernel's overlayfs over a copy converted to overlay format.
func TestMergeAUFSMatchesKernel(t *testing.T) {
	testenv.RequireRoot(t)
	base := t.TempDir()
	layers := uniontest.BuildStack(t, filepath.Join(base, "aufs"), true)
	var kernel []union.Layer
	for _, l := range layers {
		k := filepath.Join(base, "kernel", l.ID)
		os.MkdirAll(filepath.Dir(k), 0o755)
		if out, err := exec.Command("cp", "-a", l.Path, k).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		uniontest.ToKernel(t, k)
		kernel = append(kernel, union.Layer{ID: l.ID, Path: k})
	}
	compareWithKernel(t, layers, kernel)
}

func lookup(t *testing.T, s *union.Stack, p string) *union.Entry {
	t.Helper()
	e, err := s.LookupPath(p)
	if err != nil {
		t.Fatalf("lookup %s: %v", p, err)
	}
	return e
}

func names(t *testing.T, s *union.Stack, dir string) string {
	t.Helper()
	l, err := s.List(lookup(t, s, dir))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range l.Entries {
		out = append(out, e.Name)
	}
	return strings.Join(out, " ")
}

// TestMergeRules states the rules directly, for both whiteout formats.
func TestMergeRules(t *testing.T) {
	for _, aufs := range []bool{false, true} {
		t.Run(fmt.Sprintf("aufs=%v", aufs), func(t *testing.T) {
			if !aufs {
				testenv.RequireRoot(t) // trusted.overlay.opaque and mknod need root
			}
			testenv.RequireRoot(t)
			s, err := union.NewStack(uniontest.BuildStack(t, t.TempDir(), aufs), nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, gone := range []string{"etc/group", "gone", "gone/inner/f", "bin/hard2", "opq/a", "newdir/never-existed", "swapdir/in"} {
				if e := lookup(t, s, gone); e != nil {
					t.Errorf("%s is visible (layer %d); a whiteout or opaque dir hides it", gone, e.Layer)
				}
			}
			if got := names(t, s, "opq"); got != "c" {
				t.Errorf("opaque dir lists %q, want only c", got)
			}
			if got := names(t, s, "merged/a"); got != "base mid top" {
				t.Errorf("merged dir lists %q", got)
			}
			if got := names(t, s, "etc"); got != "passwd shadow sub" {
				t.Errorf("etc lists %q", got)
			}
			for p, want := range map[string]int{"readd": 2, "etc/passwd": 2, "opq/c": 1, "opq": 1, "swapdir": 1,
				"swapfile": 1, "swapfile/x": 1, "bin/sh": 0, "merged": 2, "merged/a": 2} {
				if e := lookup(t, s, p); e == nil || e.Layer != want {
					t.Errorf("%s: layer %v, want %d", p, e, want)
				}
			}
			if st := stat(t, s, lookup(t, s, "swapdir")); st.Mode&unix.S_IFMT != unix.S_IFREG {
				t.Errorf("swapdir mode %o, want a file", st.Mode)
			}
			if e := lookup(t, s, "swapfile"); !e.IsDir() {
				t.Errorf("swapfile mode %o, want a dir", stat(t, s, e).Mode)
			}
			if e := lookup(t, s, "merged/a"); stat(t, s, e).Nlink != 1 || e.Merged() != 3 {
				t.Errorf("merged/a nlink %d from %d layers; want nlink 1 (overlayfs) from 3", stat(t, s, e).Nlink, e.Merged())
			}
			if e := lookup(t, s, "opq"); e.Merged() != 1 {
				t.Errorf("opaque dir merges %d layers", e.Merged())
			}
			if st := stat(t, s, lookup(t, s, "bin/hard1")); st.Nlink != 3 {
				t.Errorf("hard1 nlink %d, want 3 as stored", st.Nlink)
			}
			if st := stat(t, s, lookup(t, s, "dev/sda")); st.Rdev != unix.Mkdev(8, 0) || st.Mode != unix.S_IFBLK|0o660 {
				t.Errorf("dev/sda: mode %o rdev %x", st.Mode, st.Rdev)
			}
			e := lookup(t, s, "etc/passwd")
			if v, err := s.GetXattr(e, "user.origin"); err != unix.ENODATA {
				t.Errorf("etc/passwd from layer 2 has user.origin=%q (%v); the xattr was on layer 0's copy", v, err)
			}
			// The answer for an absent name comes from memory: remove the
			// backing file's xattrs behind the index's back.
			ping := lookup(t, s, "bin/ping")
			if v, err := s.GetXattr(ping, "security.capability"); err != nil || len(v) != 20 {
				t.Errorf("security.capability: %q %v", v, err)
			}
			if err := unix.Lremovexattr(s.BackingPath(ping), "security.capability"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetXattr(ping, "security.capability"); err != nil {
				t.Errorf("cached xattr re-read from disk: %v", err)
			}
			if _, err := s.GetXattr(ping, "security.selinux"); err != unix.ENODATA {
				t.Errorf("absent xattr: %v, want ENODATA", err)
			}
		})
	}
}

// TestOverrideStat applies user.containers.override_stat (force_mask
// stores) and hides it.
func TestOverrideStat(t *testing.T) {
	testenv.RequireRoot(t)
	l := uniontest.NewLayer(t, t.TempDir(), "l0", true)
	l.File("f", "x", 0o700).File("dev-as-file", "", 0o700).File("plain", "p", 0o640)
	l.Xattr("", union.OverrideXattr, "0:0:0555:dir")
	l.Xattr("f", union.OverrideXattr, "12:34:4755:file").Xattr("f", "user.kept", "k")
	l.Xattr("dev-as-file", union.OverrideXattr, "0:5:0620:char-4-64")
	s, err := union.NewStack([]union.Layer{{ID: "l0", Path: l.Dir, AUFS: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := stat(t, s, s.Root()); st.Mode != unix.S_IFDIR|0o555 {
		t.Errorf("root mode %o, want dir 0555", st.Mode)
	}
	f := lookup(t, s, "f")
	if st := stat(t, s, f); st.Uid != 12 || st.Gid != 34 || st.Mode != unix.S_IFREG|0o4755 {
		t.Errorf("f: %d:%d %o", st.Uid, st.Gid, st.Mode)
	}
	if x, _ := s.ListXattr(f); strings.Join(x, ",") != "user.kept" {
		t.Errorf("f xattrs %v, want only user.kept", x)
	}
	if st := stat(t, s, lookup(t, s, "dev-as-file")); st.Mode != unix.S_IFCHR|0o620 || st.Rdev != unix.Mkdev(4, 64) || st.Gid != 5 {
		t.Errorf("dev-as-file: mode %o rdev %x gid %d", st.Mode, st.Rdev, st.Gid)
	}
	if st := stat(t, s, lookup(t, s, "plain")); st.Mode != unix.S_IFREG|0o640 {
		t.Errorf("plain (no override) mode %o", st.Mode)
	}
}

// TestRaw shows a layer as stored.
func TestRaw(t *testing.T) {
	testenv.RequireRoot(t)
	layers := uniontest.BuildStack(t, t.TempDir(), false)
	s, err := union.NewRaw(layers[1], nil)
	if err != nil {
		t.Fatal(err)
	}
	g := lookup(t, s, "etc/group")
	if g == nil || stat(t, s, g).Mode&unix.S_IFMT != unix.S_IFCHR || stat(t, s, g).Rdev != 0 {
		t.Fatalf("whiteout etc/group not shown as a 0/0 char device: %+v", g)
	}
	o := lookup(t, s, "opq")
	if v, err := s.GetXattr(o, "trusted.overlay.opaque"); err != nil || string(v) != "y" {
		t.Errorf("opaque marker not shown: %q %v", v, err)
	}
	if got := names(t, s, "opq"); got != "c" {
		t.Errorf("raw opq lists %q", got)
	}
}

// TestCacheBound builds many directories through a small cache: it never
// holds more than its bound, and evicted listings are rebuilt right.
func TestCacheBound(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 40; i++ {
		for j := 0; j < 5; j++ {
			p := filepath.Join(dir, fmt.Sprintf("d%02d", i), fmt.Sprintf("f%d", j))
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, nil, 0o644)
		}
	}
	c := union.NewCache(30)
	s, err := union.NewStack([]union.Layer{{ID: "x", Path: dir}}, c)
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ {
		for i := 0; i < 40; i++ {
			if got := names(t, s, fmt.Sprintf("d%02d", i)); got != "f0 f1 f2 f3 f4" {
				t.Fatalf("d%02d lists %q", i, got)
			}
			if _, n := c.Len(); n > 30 {
				t.Fatalf("cache holds %d entries, bound 30", n)
			}
		}
	}
	if l, n := c.Len(); l == 0 || n == 0 {
		t.Errorf("cache empty after use: %d listings %d entries", l, n)
	}
	// A listing bigger than the bound is still served.
	big := union.NewCache(3)
	s2, _ := union.NewStack([]union.Layer{{ID: "x", Path: dir}}, big)
	if got := len(strings.Fields(names(t, s2, ""))); got != 40 {
		t.Errorf("root of 40 listed %d", got)
	}
}

// TestCacheForget: the listings of the stacks on a forgotten layer go, the
// others' stay.
func TestCacheForget(t *testing.T) {
	dir := t.TempDir()
	c := union.NewCache(0)
	var stacks []*union.Stack
	for _, id := range []string{"aaaa", "bbbb"} {
		p := filepath.Join(dir, id, "diff")
		if err := os.MkdirAll(filepath.Join(p, "d"), 0o755); err != nil {
			t.Fatal(err)
		}
		s, err := union.NewStack([]union.Layer{{ID: id, Path: p}}, c)
		if err != nil {
			t.Fatal(err)
		}
		names(t, s, "")
		names(t, s, "d")
		stacks = append(stacks, s)
	}
	if l, _ := c.Len(); l != 4 {
		t.Fatalf("%d listings cached, want 4", l)
	}
	c.Forget([]string{"aaaa"})
	if l, n := c.Len(); l != 2 || n != 3 {
		t.Errorf("after forgetting one layer: %d listings, %d entries; want the other's 2 and 3", l, n)
	}
	if got := names(t, stacks[0], ""); got != "d" {
		t.Errorf("the forgotten layer's root lists %q again", got)
	}
}

// TestChanges checks the changes of each layer against what the fixture
// did in it.
func TestChanges(t *testing.T) {
	testenv.RequireRoot(t)
	layers := uniontest.BuildStack(t, t.TempDir(), false)
	got := func(k int) string {
		cs, err := union.Changes(layers, k, nil)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		for _, c := range cs {
			fmt.Fprintln(&b, c)
		}
		return b.String()
	}
	want1 := strings.Join([]string{
		"C /bin", "D /bin/hard2", "C /etc", "D /etc/group", "C /etc/passwd", "D /gone",
		"C /merged", "C /merged/a", "A /merged/a/mid", "A /newdir", "A /newdir/f",
		"C /opq", "D /opq/a", "D /opq/b", "A /opq/c", "D /readd", "C /swapdir", "C /swapfile", "A /swapfile/x",
	}, "\n") + "\n" // not /usr: only its mtime differs, which does not count for a directory
	if g := got(1); g != sortLines(want1) {
		t.Errorf("layer 1 changes:\n%s\nwant:\n%s", g, sortLines(want1))
	}
	want2 := "C /etc\nC /etc/passwd\nC /merged\nC /merged/a\nA /merged/a/top\nA /readd\n"
	if g := got(2); g != sortLines(want2) {
		t.Errorf("layer 2 changes:\n%s\nwant:\n%s", g, sortLines(want2))
	}
	if g := got(0); !strings.Contains(g, "A /etc/passwd\n") || strings.Contains(g, "C ") || strings.Contains(g, "D ") {
		t.Errorf("base layer changes must all be A:\n%s", g)
	}
}

func sortLines(s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	sort.Slice(lines, func(i, j int) bool { return lines[i][2:] < lines[j][2:] })
	return strings.Join(lines, "\n") + "\n"
}

// aclEntry is an entry of a POSIX ACL as system.posix_acl_access holds it.
type aclEntry struct {
	tag, perm uint16
	id        uint32
}

// posixACL encodes entries as the kernel's xattr form of an ACL (version 2).
func posixACL(entries ...aclEntry) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		id := e.id
		if e.tag != 0x02 && e.tag != 0x08 { // only named users and groups have one
			id = ^uint32(0)
		}
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, id)
	}
	return b
}

// TestChangesHidden: a change is Hidden when a directory above it in the
// new tree lacks r-x for some users (by its mode or an ACL), so the image's
// own permissions keep its name from them.
func TestChangesHidden(t *testing.T) {
	testenv.RequireRoot(t)
	base, top := t.TempDir(), t.TempDir()
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{
		{base, 0o755}, {top, 0o755},
		{base + "/root", 0o700}, {base + "/pub", 0o755},
		{top + "/root", 0o700}, {top + "/root/.ssh", 0o700}, {top + "/pub", 0o755}, {top + "/pub/x", 0o750},
		{top + "/acl", 0o755}, {top + "/grp", 0o705},
	} {
		if err := os.Mkdir(d.path, d.mode); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	for _, f := range []string{top + "/root/.ssh/key", top + "/pub/f", top + "/pub/x/y", top + "/acl/in", top + "/grp/in"} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// acl is 0755, but its ACL keeps user 1001 out (setfacl -m u:1001:- acl).
	if err := unix.Setxattr(top+"/acl", "system.posix_acl_access", posixACL(
		aclEntry{tag: 0x01, perm: 7}, aclEntry{tag: 0x02, perm: 0, id: 1001}, aclEntry{tag: 0x04, perm: 5},
		aclEntry{tag: 0x10, perm: 5}, aclEntry{tag: 0x20, perm: 5}), 0); err != nil {
		t.Fatalf("setting an ACL: %v", err)
	}
	layers := []union.Layer{{ID: "b", Path: base}, {ID: "t", Path: top}}
	want := []string{
		"A /acl false", "A /acl/in true", "A /grp false", "A /grp/in true",
		"C /pub false", "A /pub/f false", "A /pub/x false", "A /pub/x/y true",
		"C /root false", "A /root/.ssh true", "A /root/.ssh/key true",
	}
	for what, changes := range map[string]func() ([]union.Change, error){
		"Changes":       func() ([]union.Change, error) { return union.Changes(layers, 1, nil) },
		"NativeChanges": func() ([]union.Change, error) { return union.NativeChanges(layers, 1) },
	} {
		cs, err := changes()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range cs {
			got = append(got, fmt.Sprintf("%s %v", c, c.Hidden))
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s:\n%s\nwant:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

// TestNativeChangesUnderReplacedFile: a name below a directory that
// replaced a lower layer's file is new (A): the file hides what the layers
// under it had at that path.
func TestNativeChangesUnderReplacedFile(t *testing.T) {
	l0, l1, l2 := t.TempDir(), t.TempDir(), t.TempDir()
	for _, f := range []struct{ path, content string }{
		{l0 + "/opt/d/f", "1"}, {l1 + "/opt/d", "2"}, {l2 + "/opt/d/f", "3"},
	} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.path, []byte(f.content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := union.NativeChanges([]union.Layer{{ID: "0", Path: l0}, {ID: "1", Path: l1}, {ID: "2", Path: l2}}, 2)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cs {
		got = append(got, c.String())
	}
	if want := []string{"C /opt", "C /opt/d", "A /opt/d/f"}; !slices.Equal(got, want) {
		t.Errorf("changes %q, want %q", got, want)
	}
}

// TestOpaqueRootFuseOverlayfs: an opaque marker on a layer's root hides
// the layers below it in a fuse-overlayfs store, as fuse-overlayfs does,
// and not in a kernel-overlayfs one, as the kernel does.
func TestOpaqueRootFuseOverlayfs(t *testing.T) {
	base, top := t.TempDir(), t.TempDir()
	for _, f := range []string{base + "/a", base + "/b", top + "/" + union.OpaqueMarker, top + "/only"} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for aufs, want := range map[bool]string{true: "only", false: union.OpaqueMarker + " a b only"} { // the kernel: an ordinary file
		s, err := union.NewStack([]union.Layer{{ID: "b", Path: base, AUFS: aufs}, {ID: "t", Path: top, AUFS: aufs}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(t, s, ""); got != want {
			t.Errorf("fuse-overlayfs store %v: the root lists %q, want %q", aufs, got, want)
		}
	}
}

// TestOneLayerRootNlink: containers/storage mounts an image of one layer
// with an empty directory as a second lower one (lowerdir=diff:empty), so
// the kernel's overlayfs merges its root and counts it 1 link; the root of
// a one-layer stack does too. A raw (diff/) tree shows the real count.
func TestOneLayerRootNlink(t *testing.T) {
	l := uniontest.NewLayer(t, t.TempDir(), "l0", false)
	l.Dirs("a", "b")
	l.Stamp()
	empty := t.TempDir()
	mnt := uniontest.KernelMount(t, []union.Layer{{ID: "empty", Path: empty}, {ID: "l0", Path: l.Dir}})
	var kernel unix.Stat_t
	if err := unix.Lstat(mnt, &kernel); err != nil {
		t.Fatal(err)
	}
	layer := union.Layer{ID: "l0", Path: l.Dir}
	for _, raw := range []bool{false, true} {
		s, err := union.NewStack([]union.Layer{layer}, nil)
		want := uint32(kernel.Nlink)
		if raw {
			s, err = union.NewRaw(layer, nil)
			want = 4 // ., .., a/.., b/..
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := stat(t, s, s.Root()).Nlink; got != want {
			t.Errorf("raw %v: root nlink %d, want %d", raw, got, want)
		}
	}
}
