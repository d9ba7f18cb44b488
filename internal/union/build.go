package union

import (
	"fmt"
	"io/fs"
	"os"
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

// Overlay xattrs that mark an opaque directory (value "y").
var opaqueXattrs = []string{"trusted.overlay.opaque", "user.overlay.opaque", "user.fuseoverlayfs.opaque"}

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
	if !dir.Stat.IsDir() {
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
		f, err := os.Open(s.backing(int(li), dir.Path))
		if err != nil {
			return nil, fmt.Errorf("reading layer %s: %w", short(layer.ID), err)
		}
		des, err := f.ReadDir(-1)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("reading layer %s: %w", short(layer.ID), err)
		}
		fd := int(f.Fd())
		var whiteouts []string
		for _, de := range des {
			name := de.Name()
			if interpret {
				if layer.AUFS && strings.HasPrefix(name, WhiteoutPrefix) {
					if !strings.HasPrefix(name, WhiteoutMetaPrefix) {
						whiteouts = append(whiteouts, name[len(WhiteoutPrefix):])
					}
					continue
				}
				if de.Type() == fs.ModeDevice|fs.ModeCharDevice {
					var st unix.Stat_t
					if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Rdev == 0 {
						whiteouts = append(whiteouts, name)
						continue
					}
				}
			}
			p := state[name]
			if p == nil {
				e, err := s.newEntry(fd, int(li), dir.Path, name)
				if err != nil {
					f.Close()
					return nil, err
				}
				p = &pending{e: e, open: e.Stat.IsDir()}
				if p.open {
					e.chain = []int32{li}
				}
				state[name] = p
				entries = append(entries, e)
				continue
			}
			if p.open {
				if de.IsDir() {
					p.e.chain = append(p.e.chain, li)
				} else {
					p.open = false
				}
			}
		}
		f.Close()
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
		if len(e.chain) > 1 {
			e.Stat.Nlink = 1 // as overlayfs: subdirectories of merged directories are not counted
		}
		e.chain = e.chain[:len(e.chain):len(e.chain)]
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	return &Listing{Entries: entries}, nil
}

// newEntry lstats name in directory fd of layer li.
func (s *Stack) newEntry(fd, li int, dirPath, name string) (*Entry, error) {
	rel := name
	if dirPath != "" {
		rel = dirPath + "/" + name
	}
	var st unix.Stat_t
	if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fmt.Errorf("layer %s: lstat %s: %w", short(s.layers[li].ID), rel, err)
	}
	e := &Entry{Name: name, Path: rel, Layer: li, Stat: statFrom(&st)}
	if s.override[li] {
		applyOverride(&e.Stat, s.backing(li, rel))
	}
	return e, nil
}

// opaque reports whether directory rel of layer li hides the layers below.
func (s *Stack) opaque(li int, rel string) bool {
	p := s.backing(li, rel)
	if s.layers[li].AUFS {
		var st unix.Stat_t
		if unix.Lstat(p+"/"+OpaqueMarker, &st) == nil {
			return true
		}
	}
	var buf [2]byte
	for _, x := range opaqueXattrs {
		if n, err := unix.Lgetxattr(p, x, buf[:]); err == nil && n == 1 && buf[0] == 'y' {
			return true
		}
	}
	return false
}
