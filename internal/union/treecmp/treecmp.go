// Package treecmp walks two directory trees through the kernel and lists
// every difference an image's root filesystem must not have: type, mode
// (with setuid, setgid, sticky), owner, size, mtime, device number,
// symlink target, xattrs, hardlink groups and content. Tests use it to
// hold imagefs's rootfs/ against the kernel's overlayfs.
package treecmp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Options tune a comparison.
type Options struct {
	// IgnoreXattr drops xattr names from both sides (overlay internals
	// the kernel shows in some modes, imagefs's own names…).
	IgnoreXattr func(name string) bool
	// DirNlink compares the link count of directories too.
	DirNlink bool
	// NoContent skips hashing file content.
	NoContent bool
}

// Node is what the walk records of one path.
type Node struct {
	Mode     uint32
	Uid, Gid uint32
	Size     int64
	Nlink    uint64
	Mtime    unix.Timespec
	Rdev     uint64
	Target   string
	Xattrs   map[string]string
	Sum      string
	Links    string // the other names of the same inode, sorted, joined by NUL
	// Dev and Ino identify the inode; only the grouping of names by
	// them (Links) is compared.
	Dev, Ino uint64
}

// Tree is a walked tree: relative path ("" = root) → node.
type Tree struct {
	Nodes map[string]*Node
	// Vanished lists names readdir showed but lstat could not find
	// (overlayfs lists whiteouts of directories that are not merged).
	Vanished []string
}

// Walk records every path below root.
func Walk(root string, o Options) (*Tree, error) {
	t := &Tree{Nodes: make(map[string]*Node)}
	if err := t.walk(root, "", o); err != nil {
		return nil, err
	}
	t.Finish()
	return t, nil
}

// NewTree returns an empty tree to fill by hand (then call Finish).
func NewTree() *Tree { return &Tree{Nodes: make(map[string]*Node)} }

// Finish computes the hardlink groups from Dev and Ino.
func (t *Tree) Finish() {
	groups := make(map[[2]uint64][]string)
	for p, n := range t.Nodes {
		if n.Mode&unix.S_IFMT != unix.S_IFDIR {
			k := [2]uint64{n.Dev, n.Ino}
			groups[k] = append(groups[k], p)
		}
	}
	for _, g := range groups {
		sort.Strings(g)
		for _, p := range g {
			var others []string
			for _, q := range g {
				if q != p {
					others = append(others, q)
				}
			}
			t.Nodes[p].Links = strings.Join(others, "\x00")
		}
	}
	sort.Strings(t.Vanished)
}

func (t *Tree) walk(root, rel string, o Options) error {
	p := filepath.Join(root, rel)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		if errors.Is(err, unix.ENOENT) && rel != "" {
			t.Vanished = append(t.Vanished, rel)
			return nil
		}
		return fmt.Errorf("lstat %s: %w", p, err)
	}
	n := &Node{Mode: st.Mode, Uid: st.Uid, Gid: st.Gid, Size: st.Size, Nlink: uint64(st.Nlink),
		Mtime: st.Mtim, Rdev: st.Rdev, Dev: st.Dev, Ino: st.Ino}
	t.Nodes[rel] = n
	xs, err := xattrs(p, o)
	if err != nil {
		return err
	}
	n.Xattrs = xs
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		n.Size = 0
		if !o.DirNlink {
			n.Nlink = 0
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return fmt.Errorf("readdir %s: %w", p, err)
		}
		for _, e := range ents {
			if err := t.walk(root, filepath.Join(rel, e.Name()), o); err != nil {
				return err
			}
		}
	case unix.S_IFLNK:
		if n.Target, err = os.Readlink(p); err != nil {
			return err
		}
	case unix.S_IFREG:
		if !o.NoContent {
			if n.Sum, err = sum(p); err != nil {
				return err
			}
		}
	}
	return nil
}

func sum(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func xattrs(p string, o Options) (map[string]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, fmt.Errorf("listxattr %s: %w", p, err)
	}
	out := make(map[string]string)
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if name == "" || (o.IgnoreXattr != nil && o.IgnoreXattr(name)) {
			continue
		}
		vs, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", p, name, err)
		}
		v := make([]byte, vs)
		vs, err = unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", p, name, err)
		}
		out[name] = string(v[:vs])
	}
	return out, nil
}

// Diff lists the differences between want and got, sorted by path.
func Diff(want, got *Tree) []string {
	var out []string
	for p, w := range want.Nodes {
		g, ok := got.Nodes[p]
		if !ok {
			out = append(out, fmt.Sprintf("%q: missing (want %s)", "/"+p, w))
			continue
		}
		if d := w.diff(g); d != "" {
			out = append(out, fmt.Sprintf("%q: %s", "/"+p, d))
		}
	}
	for p, g := range got.Nodes {
		if _, ok := want.Nodes[p]; !ok {
			out = append(out, fmt.Sprintf("%q: unexpected %s", "/"+p, g))
		}
	}
	sort.Strings(out)
	return out
}

func (n *Node) String() string {
	return fmt.Sprintf("mode %o uid %d gid %d size %d", n.Mode, n.Uid, n.Gid, n.Size)
}

func (n *Node) diff(g *Node) string {
	var d []string
	f := func(name string, w, g any) {
		if fmt.Sprint(w) != fmt.Sprint(g) {
			d = append(d, fmt.Sprintf("%s want %v got %v", name, w, g))
		}
	}
	f("mode", fmt.Sprintf("%o", n.Mode), fmt.Sprintf("%o", g.Mode))
	f("uid", n.Uid, g.Uid)
	f("gid", n.Gid, g.Gid)
	f("size", n.Size, g.Size)
	f("nlink", n.Nlink, g.Nlink)
	f("mtime", n.Mtime, g.Mtime)
	f("rdev", n.Rdev, g.Rdev)
	f("target", n.Target, g.Target)
	f("xattrs", sortedMap(n.Xattrs), sortedMap(g.Xattrs))
	f("sha256", n.Sum, g.Sum)
	f("hardlinks", strings.ReplaceAll(n.Links, "\x00", ","), strings.ReplaceAll(g.Links, "\x00", ","))
	return strings.Join(d, "; ")
}

func sortedMap(m map[string]string) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q ", k, m[k])
	}
	return b.String()
}
