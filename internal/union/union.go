// Package union computes the merged view of an image's layers the way the
// kernel's overlayfs (and fuse-overlayfs) shows it, straight from the layer
// directories on disk: no mount, no store lock.
//
// A Stack is the ordered layers of one image (or one layer shown raw, for
// layers/<id>/diff/). Directory listings are merged lazily, one directory at
// a time on first visit, and kept in a Cache shared by all stacks that
// evicts the least recently used listings once a bound on the number of
// cached entries is passed. A listing is read with getdents alone: every
// Entry knows its name, file type and backing inode from it, and its lstat
// data is read on first use (Stack.Stat), so walking names (find, a
// listing) costs what the kernel's overlayfs pays, not an lstat per entry.
//
// The package knows nothing about FUSE; nodes/rootfs*.go serves it.
package union

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Layer is one layer directory of a stack.
type Layer struct {
	ID   string
	Path string // the directory holding the layer's files
	// Full is true when Path holds the whole merged tree (vfs): it is
	// shown as it is, and only the top layer of a stack is used.
	Full bool
	// AUFS is true in stores with a mount_program, whose own mount is
	// fuse-overlayfs: whiteouts are ".wh.<name>" files (0/0 devices
	// too), and a directory is opaque by ".wh..wh..opq" or by the first
	// of trusted.overlay.opaque, user.overlay.opaque and
	// user.fuseoverlayfs.opaque it carries; xattrs under those three
	// prefixes are hidden.
	AUFS bool
	// UserXattr is true, when AUFS is not, in stores whose own mount is
	// the kernel's overlayfs with the userxattr option (rootless, no
	// mount_program): user.overlay.opaque marks opaque directories and
	// user.overlay.* is hidden. Otherwise (rootful kernel overlayfs) only
	// trusted.overlay.opaque does and trusted.overlay.* is hidden; the
	// other overlay names are ordinary xattrs in either case.
	UserXattr bool
	// NativeDiff is true when the store's driver computes the layer's
	// changes from its directory alone (NativeChanges): a kernel-overlayfs
	// store whose driver found the native diff usable.
	NativeDiff bool
}

// markers names the overlay markers the store's own mount honours in a
// layer: one byte, also part of a stack's cache key.
func (l *Layer) markers() byte {
	switch {
	case l.AUFS:
		return markFuse
	case l.UserXattr:
		return markUser
	}
	return markTrusted
}

const (
	markTrusted = 't' // kernel overlayfs: trusted.overlay.*
	markUser    = 'u' // kernel overlayfs mounted with userxattr: user.overlay.*
	markFuse    = 'f' // fuse-overlayfs: trusted.overlay.*, user.overlay.*, user.fuseoverlayfs.*
)

// Stat is the lstat data an entry shows, with user.containers.override_stat
// applied. Dev and Ino identify the backing file.
type Stat struct {
	Mode                uint32 // file type and permission bits, as st_mode
	Uid, Gid            uint32
	Nlink               uint32
	Rdev                uint64
	Size                int64
	Blocks              int64
	Atime, Mtime, Ctime unix.Timespec
	Dev, Ino            uint64
}

// IsDir reports whether the entry is a directory.
func (s *Stat) IsDir() bool { return s.Mode&unix.S_IFMT == unix.S_IFDIR }

// Entry is one name of the merged tree.
type Entry struct {
	Name  string // "" for the root
	Path  string // relative to the root, no leading slash; "" for the root
	Layer int    // index of the layer supplying the entry, 0 = base
	// Type is the file type (the S_IFMT bits of st_mode); Dev and Ino
	// identify the backing file. All three come with the listing.
	Type     uint32
	Dev, Ino uint64

	stat atomic.Pointer[Stat] // set by Stack.Stat on first use
	// chain lists, top first, the layers whose copies of this directory
	// are merged into it (opaque markers and whiteouts applied).
	chain []int32
	xattr atomic.Pointer[xattrSet]
}

// IsDir reports whether the entry is a directory.
func (e *Entry) IsDir() bool { return e.Type == unix.S_IFDIR }

// Merged reports how many layers contribute to a directory (0 for others).
func (e *Entry) Merged() int { return len(e.chain) }

// ErrUnreadable says the union cannot serve a stack from its directories
// (a layer directory missing or not a directory); the caller falls back.
var ErrUnreadable = errors.New("layer directory not readable")

// Stack is the merged view of ordered layers.
type Stack struct {
	layers   []Layer  // base first
	dev      []uint64 // st_dev of each layer directory
	override []bool   // layer stores user.containers.override_stat
	raw      bool     // show the one layer exactly as stored
	key      string   // cache key prefix
	cache    *Cache
	root     *Entry
	// paths, once Relocate set them, are where the layers are read now:
	// other copies of the same layers.
	paths atomic.Pointer[[]string]
}

// NewStack returns the merged view of layers (base first). When the top
// layer is Full (vfs) only it is used. A stack with no layers is an empty
// directory. cache may be shared by many stacks; nil gets a private one.
func NewStack(layers []Layer, cache *Cache) (*Stack, error) {
	if n := len(layers); n > 0 && layers[n-1].Full {
		layers = layers[n-1:]
	}
	s := &Stack{layers: append([]Layer(nil), layers...), cache: cache}
	s.key = "m"
	for _, l := range layers {
		s.key += "\x00" + string(l.markers()) + l.Path
	}
	return s, s.init()
}

// NewRaw returns the view of one layer directory exactly as stored:
// whiteout devices, ".wh." files and overlay xattrs are shown, not applied.
func NewRaw(layer Layer, cache *Cache) (*Stack, error) {
	s := &Stack{layers: []Layer{layer}, raw: true, cache: cache, key: "r\x00" + layer.Path}
	return s, s.init()
}

func (s *Stack) init() error {
	if s.cache == nil {
		s.cache = NewCache(0)
	}
	s.override = make([]bool, len(s.layers))
	s.dev = make([]uint64, len(s.layers))
	root := &Entry{Layer: len(s.layers) - 1, Type: unix.S_IFDIR}
	var rootStat Stat
	for i, l := range s.layers {
		var st unix.Stat_t
		if err := unix.Lstat(l.Path, &st); err != nil {
			return fmt.Errorf("%w: layer %s: %s: %v", ErrUnreadable, short(l.ID), l.Path, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("%w: layer %s: %s is not a directory", ErrUnreadable, short(l.ID), l.Path)
		}
		if !s.raw {
			_, err := unix.Lgetxattr(l.Path, OverrideXattr, nil)
			s.override[i] = err == nil
		}
		s.dev[i] = st.Dev
		if i == len(s.layers)-1 {
			rootStat = statFrom(&st)
			root.Dev, root.Ino = st.Dev, st.Ino
		}
	}
	s.root = root
	if len(s.layers) == 0 {
		root.Layer = -1
		root.stat.Store(&Stat{Mode: unix.S_IFDIR | 0o755, Nlink: 2})
		return nil
	}
	for i := len(s.layers) - 1; i >= 0; i-- {
		root.chain = append(root.chain, int32(i))
		// fuse-overlayfs honours an opaque marker on a layer's root; the
		// kernel's overlayfs does not.
		if i > 0 && !s.raw && s.layers[i].markers() == markFuse && s.opaque(i, "") {
			break
		}
	}
	s.finish(root, &rootStat)
	return nil
}

// Stat returns the lstat data entry e shows: read from its backing file on
// first use, with user.containers.override_stat applied.
func (s *Stack) Stat(e *Entry) (*Stat, error) {
	if st := e.stat.Load(); st != nil {
		return st, nil
	}
	var raw unix.Stat_t
	if err := unix.Lstat(s.BackingPath(e), &raw); err != nil {
		return nil, fmt.Errorf("layer %s: lstat %s: %w", short(s.layers[e.Layer].ID), e.Path, err)
	}
	st := statFrom(&raw)
	return s.finish(e, &st), nil
}

// finish completes lstat data st of e and keeps it (a racing first use
// keeps equal data).
func (s *Stack) finish(e *Entry, st *Stat) *Stat {
	if s.override[e.Layer] {
		applyOverride(st, s.BackingPath(e))
	}
	// overlayfs does not count the subdirectories of merged directories,
	// and containers/storage mounts an image of one layer with an empty
	// directory as a second lower one: its root is merged too.
	if len(e.chain) > 1 || e == s.root && !s.raw && !s.layers[e.Layer].Full {
		st.Nlink = 1
	}
	e.stat.Store(st)
	return st
}

// Root is the entry of the top directory.
func (s *Stack) Root() *Entry { return s.root }

// Layers returns the layers in use, base first.
func (s *Stack) Layers() []Layer { return s.layers }

// Raw reports whether the stack shows one layer as stored.
func (s *Stack) Raw() bool { return s.raw }

// BackingPath is where the file supplying e lives.
func (s *Stack) BackingPath(e *Entry) string {
	return s.backing(e.Layer, e.Path)
}

// LayerPath is where layer i (base first) is read.
func (s *Stack) LayerPath(i int) string {
	if p := s.paths.Load(); p != nil {
		return (*p)[i]
	}
	return s.layers[i].Path
}

// Relocate reads the layers from paths (base first, one per layer) from
// now on: copies of the same layers elsewhere, when the ones the stack was
// made on go (the graph root's copy of a layer an additional store also
// has). What was read already stays: it is the same content.
func (s *Stack) Relocate(paths []string) error {
	if len(paths) != len(s.layers) {
		return fmt.Errorf("relocating %d layers to %d paths", len(s.layers), len(paths))
	}
	p := slices.Clone(paths)
	s.paths.Store(&p)
	return nil
}

func (s *Stack) backing(layer int, rel string) string {
	if layer < 0 {
		return ""
	}
	if rel == "" {
		return s.LayerPath(layer)
	}
	return s.LayerPath(layer) + "/" + rel
}

// Lookup returns the child name of directory dir, or nil when there is none.
func (s *Stack) Lookup(dir *Entry, name string) (*Entry, error) {
	l, err := s.List(dir)
	if err != nil {
		return nil, err
	}
	return l.Find(name), nil
}

// LookupPath resolves a relative slash-separated path from the root
// without following symlinks; nil when some component is missing.
func (s *Stack) LookupPath(rel string) (*Entry, error) {
	e := s.root
	if rel == "" || rel == "." {
		return e, nil
	}
	for _, c := range splitPath(rel) {
		if !e.IsDir() {
			return nil, nil
		}
		child, err := s.Lookup(e, c)
		if err != nil || child == nil {
			return nil, err
		}
		e = child
	}
	return e, nil
}

func splitPath(rel string) []string {
	clean := strings.Trim(path.Clean("/"+rel), "/")
	if clean == "" {
		return nil
	}
	return strings.Split(clean, "/")
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func statFrom(st *unix.Stat_t) Stat {
	return Stat{
		Mode:   st.Mode,
		Uid:    st.Uid,
		Gid:    st.Gid,
		Nlink:  uint32(st.Nlink),
		Rdev:   st.Rdev,
		Size:   st.Size,
		Blocks: st.Blocks,
		Atime:  st.Atim,
		Mtime:  st.Mtim,
		Ctime:  st.Ctim,
		Dev:    st.Dev,
		Ino:    st.Ino,
	}
}

// Readlink returns the target of symlink e as stored.
func (s *Stack) Readlink(e *Entry) (string, error) {
	if e.Type != unix.S_IFLNK {
		return "", unix.EINVAL
	}
	return os.Readlink(s.BackingPath(e))
}
