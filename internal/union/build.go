package union

import (
	"fmt"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Whiteout names of the AUFS format (stores with a mount_program).
const (
	WhiteoutPrefix     = ".wh."
	WhiteoutMetaPrefix = ".wh..wh."
	OpaqueMarker       = ".wh..wh..opq"
)

// The xattrs that mark an opaque directory. The kernel's overlayfs reads
// one, trusted.overlay.opaque or (mounted with userxattr)
// user.overlay.opaque, and wants exactly "y"; fuse-overlayfs reads all
// three in this order (is_directory_opaque).
const (
	trustedOpaqueXattr = "trusted.overlay.opaque"
	userOpaqueXattr    = "user.overlay.opaque"
	fuseOpaqueXattr    = "user.fuseoverlayfs.opaque"
)

var fuseOpaqueXattrs = [...]string{trustedOpaqueXattr, userOpaqueXattr, fuseOpaqueXattr}

// Listing is the merged content of one directory, sorted by name.
type Listing struct {
	Entries []*Entry
}

// Find returns the entry called name, or nil.
func (l *Listing) Find(name string) *Entry {
	i := sort.Search(len(l.Entries), func(i int) bool { return l.Entries[i].Name >= name })
	if i < len(l.Entries) && l.Entries[i].Name == name {
		return l.Entries[i]
	}
	return nil
}

// List returns the merged listing of directory dir, from the cache or
// built now.
func (s *Stack) List(dir *Entry) (*Listing, error) {
	if !dir.IsDir() {
		return nil, unix.ENOTDIR
	}
	key := s.key + "\x00\x00" + dir.Path
	if l := s.cache.get(key); l != nil {
		return l, nil
	}
	l, err := s.build(dir)
	if err != nil {
		return nil, err
	}
	return s.cache.put(key, l), nil
}

// pending is a name while the layers of its directory are merged.
type pending struct {
	e    *Entry // nil: hidden by a whiteout
	open bool   // a directory whose lower copies still merge into it
}

// build merges directory dir from its layers, top first: the first layer
// holding a name supplies it; a whiteout hides the name from the layers
// below; a directory keeps merging lower directories of the same name
// until a whiteout, a non-directory or an opaque marker stops it.
func (s *Stack) build(dir *Entry) (*Listing, error) {
	state := make(map[string]*pending)
	var entries []*Entry
	for _, li := range dir.chain {
		layer := &s.layers[li]
		interpret := !s.raw && !layer.Full
		des, err := readDir(s.backing(int(li), dir.Path))
		if err != nil {
			return nil, fmt.Errorf("reading layer %s: %w", short(layer.ID), err)
		}
		var whiteouts []string
		for _, de := range des {
			name := de.name
			if interpret {
				if layer.AUFS && strings.HasPrefix(name, WhiteoutPrefix) {
					if !strings.HasPrefix(name, WhiteoutMetaPrefix) {
						whiteouts = append(whiteouts, name[len(WhiteoutPrefix):])
					}
					continue
				}
				if de.typ == unix.S_IFCHR {
					var st unix.Stat_t
					if err := unix.Lstat(s.backing(int(li), join(dir.Path, name)), &st); err == nil && st.Rdev == 0 {
						whiteouts = append(whiteouts, name)
						continue
					}
				}
			}
			p := state[name]
			if p == nil {
				e, err := s.newEntry(int(li), dir.Path, de)
				if err != nil {
					return nil, err
				}
				p = &pending{e: e, open: e.IsDir()}
				if p.open {
					e.chain = []int32{li}
				}
				state[name] = p
				entries = append(entries, e)
				continue
			}
			if p.open {
				if de.typ == unix.S_IFDIR {
					p.e.chain = append(p.e.chain, li)
				} else {
					p.open = false
				}
			}
		}
		// A layer's whiteouts hide the layers below it, not its own files.
		for _, w := range whiteouts {
			if p := state[w]; p != nil {
				p.open = false
			} else {
				state[w] = &pending{}
			}
		}
	}
	for _, e := range entries {
		if len(e.chain) > 1 {
			for i, li := range e.chain[:len(e.chain)-1] {
				if s.opaque(int(li), e.Path) {
					e.chain = e.chain[:i+1]
					break
				}
			}
		}
		e.chain = e.chain[:len(e.chain):len(e.chain)]
		if st := e.stat.Load(); st != nil && len(e.chain) > 1 {
			st.Nlink = 1 // read before the chain was known (override layers); not shared yet
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	return &Listing{Entries: entries}, nil
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// newEntry is the entry of name de in directory dirPath of layer li. Its
// lstat data is read now only in a layer with override xattrs: they may
// change the file type the listing shows.
func (s *Stack) newEntry(li int, dirPath string, de dirent) (*Entry, error) {
	e := &Entry{Name: de.name, Path: join(dirPath, de.name), Layer: li, Type: de.typ, Dev: s.dev[li], Ino: de.ino}
	if !s.override[li] {
		return e, nil
	}
	st, err := s.Stat(e)
	if err != nil {
		return nil, err
	}
	e.Type = st.Mode & unix.S_IFMT
	return e, nil
}

// opaque reports whether directory rel of layer li hides the layers
// below, by the markers the store's own mount honours (Layer.AUFS,
// Layer.UserXattr): one getxattr on the kernel's overlayfs.
func (s *Stack) opaque(li int, rel string) bool {
	p := s.backing(li, rel)
	switch s.layers[li].markers() {
	case markTrusted:
		return xattrIsY(p, trustedOpaqueXattr)
	case markUser:
		return xattrIsY(p, userOpaqueXattr)
	}
	// fuse-overlayfs: the first of its xattrs present decides, by the
	// first byte of its value; ".wh..wh..opq" counts only when none is.
	var buf [16]byte
	for _, x := range fuseOpaqueXattrs {
		n, err := unix.Lgetxattr(p, x, buf[:])
		if err == nil {
			return n > 0 && buf[0] == 'y'
		}
		if err == unix.ENOTSUP {
			break
		}
		if err != unix.ENODATA {
			return false
		}
	}
	var st unix.Stat_t
	return unix.Lstat(p+"/"+OpaqueMarker, &st) == nil
}

// xattrIsY reports whether file p has xattr name with value "y", as the
// kernel's overlayfs reads its markers.
func xattrIsY(p, name string) bool {
	var buf [1]byte
	n, err := unix.Lgetxattr(p, name, buf[:])
	return err == nil && n == 1 && buf[0] == 'y'
}
