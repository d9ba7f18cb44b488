package union_test

import (
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagefs/imagefs/internal/testenv"
	"github.com/imagefs/imagefs/internal/union"
	"github.com/imagefs/imagefs/internal/union/treecmp"
	"github.com/imagefs/imagefs/internal/union/uniontest"
)

// buildMarkerLayers writes two layers whose upper copies of each
// directory carry a different overlay marker, and a file carrying a name
// of each overlay namespace. Which markers count, and which names are
// hidden, depends on the store's own mount only.
func buildMarkerLayers(t *testing.T) (base, top string) {
	t.Helper()
	dirs := []string{"topq", "uopq", "fopq", "wopq", "first", "yes", "nopq"}
	d := t.TempDir()
	l0 := uniontest.NewLayer(t, d, "l0", false)
	for _, dir := range dirs {
		l0.File(dir+"/below", "b", 0o644)
	}
	l0.Stamp()
	l1 := uniontest.NewLayer(t, d, "l1", false)
	for _, dir := range dirs {
		l1.File(dir+"/above", "a", 0o644)
	}
	l1.Xattr("topq", "trusted.overlay.opaque", "y")
	l1.Xattr("uopq", "user.overlay.opaque", "y")
	l1.Xattr("fopq", "user.fuseoverlayfs.opaque", "y")
	l1.File("wopq/.wh..wh..opq", "", 0o444)
	// fuse-overlayfs: the first marker present decides.
	l1.Xattr("first", "trusted.overlay.opaque", "n").Xattr("first", "user.overlay.opaque", "y")
	// The kernel wants exactly "y"; fuse-overlayfs looks at the first byte.
	l1.Xattr("yes", "user.overlay.opaque", "yes")
	for _, x := range []string{"trusted.overlay.x", "user.overlay.x", "user.fuseoverlayfs.x", "user.other", "trusted.other"} {
		l1.Xattr("nopq/above", x, "1")
	}
	l1.Stamp()
	return l0.Dir, l1.Dir
}

// TestMarkersByStoreMount holds each kind of store to the opaque markers
// and hidden xattr names of its own mount: the kernel's overlayfs
// (rootful), the kernel's overlayfs with userxattr (rootless) and
// fuse-overlayfs (mount_program), stated and then compared with a real
// mount of the same directories.
func TestMarkersByStoreMount(t *testing.T) {
	testenv.RequireRoot(t) // trusted.* xattrs
	base, top := buildMarkerLayers(t)
	for _, c := range []struct {
		name   string
		layer  union.Layer       // the flags of both layers
		lists  map[string]string // directory → names
		xattrs map[string]string // path → xattr names
	}{
		{
			name: "kernel",
			lists: map[string]string{
				"topq": "above", "uopq": "above below", "fopq": "above below",
				"wopq": ".wh..wh..opq above below", "first": "above below", "yes": "above below",
			},
			xattrs: map[string]string{
				"topq": "", "uopq": "user.overlay.opaque", "fopq": "user.fuseoverlayfs.opaque",
				"first": "user.overlay.opaque", "yes": "user.overlay.opaque",
				"nopq/above": "trusted.other user.fuseoverlayfs.x user.other user.overlay.x",
			},
		},
		{
			name:  "userxattr",
			layer: union.Layer{UserXattr: true},
			lists: map[string]string{
				"topq": "above below", "uopq": "above", "fopq": "above below",
				"wopq": ".wh..wh..opq above below", "first": "above", "yes": "above below",
			},
			xattrs: map[string]string{
				"topq": "trusted.overlay.opaque", "uopq": "", "fopq": "user.fuseoverlayfs.opaque",
				"first": "trusted.overlay.opaque", "yes": "",
				"nopq/above": "trusted.other trusted.overlay.x user.fuseoverlayfs.x user.other",
			},
		},
		{
			name:  "fuse-overlayfs",
			layer: union.Layer{AUFS: true},
			lists: map[string]string{
				"topq": "above", "uopq": "above", "fopq": "above",
				"wopq": "above", "first": "above below", "yes": "above",
			},
			xattrs: map[string]string{
				"topq": "", "uopq": "", "fopq": "", "first": "", "yes": "",
				"nopq/above": "trusted.other user.other",
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			layers := []union.Layer{c.layer, c.layer}
			layers[0].ID, layers[0].Path = "l0", base
			layers[1].ID, layers[1].Path = "l1", top
			s, err := union.NewStack(layers, nil)
			if err != nil {
				t.Fatal(err)
			}
			for dir, want := range c.lists {
				if got := names(t, s, dir); got != want {
					t.Errorf("%s lists %q, want %q", dir, got, want)
				}
			}
			for p, want := range c.xattrs {
				e := lookup(t, s, p)
				got, err := s.ListXattr(e)
				if err != nil {
					t.Fatal(err)
				}
				sort.Strings(got)
				if strings.Join(got, " ") != want {
					t.Errorf("%s lists xattrs %q, want %q", p, got, want)
				}
				for _, x := range []string{"trusted.overlay.opaque", "user.overlay.opaque", "user.overlay.x", "trusted.overlay.x"} {
					listed := strings.Contains(" "+want+" ", " "+x+" ")
					if _, err := s.GetXattr(e, x); (err == nil) != listed {
						t.Errorf("%s: getxattr %s: %v; listed %v", p, x, err, listed)
					}
				}
			}
			// The store's own mount of the same directories. fuse-overlayfs
			// counts the subdirectories of merged directories, the kernel
			// does not; imagefs shows the kernel's link counts everywhere.
			kernel := !c.layer.AUFS
			want, err := treecmp.Walk(uniontest.StoreMount(t, layers), treecmp.Options{DirNlink: kernel})
			if err != nil {
				t.Fatal(err)
			}
			got := walkStack(t, s)
			for _, n := range got.Nodes {
				if !kernel && n.Mode&unix.S_IFMT == unix.S_IFDIR {
					n.Nlink = 0
				}
			}
			for _, d := range treecmp.Diff(want, got) {
				t.Error(d)
			}
		})
	}
}

// TestMarkersShareCache: stacks over the same directories read with
// different markers keep apart in a shared listing cache.
func TestMarkersShareCache(t *testing.T) {
	testenv.RequireRoot(t)
	base, top := buildMarkerLayers(t)
	cache := union.NewCache(0)
	for _, c := range []struct {
		layer union.Layer
		want  string
	}{
		{union.Layer{}, "above below"},
		{union.Layer{UserXattr: true}, "above"},
		{union.Layer{}, "above below"},
		{union.Layer{AUFS: true}, "above"},
	} {
		layers := []union.Layer{c.layer, c.layer}
		layers[0].ID, layers[0].Path = "l0", base
		layers[1].ID, layers[1].Path = "l1", top
		s, err := union.NewStack(layers, cache)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(t, s, "uopq"); got != c.want {
			t.Errorf("%+v: uopq lists %q, want %q", c.layer, got, c.want)
		}
	}
}
