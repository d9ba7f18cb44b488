package union

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// xattrSet is the visible xattrs of an entry, read once.
type xattrSet struct {
	names  []string
	values map[string][]byte
}

// ListXattr returns the names of e's visible xattrs, in the order the
// backing file lists them. The first call for an entry reads them all;
// later calls, and GetXattr, are answered from memory.
func (s *Stack) ListXattr(e *Entry) ([]string, error) {
	x, err := s.xattrs(e)
	if err != nil {
		return nil, err
	}
	return x.names, nil
}

// GetXattr returns the value of xattr name of e, or unix.ENODATA.
func (s *Stack) GetXattr(e *Entry, name string) ([]byte, error) {
	x, err := s.xattrs(e)
	if err != nil {
		return nil, err
	}
	v, ok := x.values[name]
	if !ok {
		return nil, unix.ENODATA
	}
	return v, nil
}

// Hidden reports whether xattr name of an entry from layer li is kept out
// of the view: the names the store's own mount keeps to itself
// (trusted.overlay.* on the kernel's overlayfs, user.overlay.* on it
// mounted with userxattr, both and user.fuseoverlayfs.* on
// fuse-overlayfs), and the override xattr once applied.
func (s *Stack) Hidden(li int, name string) bool {
	if s.raw || li < 0 || s.layers[li].Full {
		return false
	}
	switch s.layers[li].markers() {
	case markTrusted:
		if strings.HasPrefix(name, "trusted.overlay.") {
			return true
		}
	case markUser:
		if strings.HasPrefix(name, "user.overlay.") {
			return true
		}
	case markFuse:
		if strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") ||
			strings.HasPrefix(name, "user.fuseoverlayfs.") {
			return true
		}
	}
	return s.override[li] && name == OverrideXattr
}

func (s *Stack) xattrs(e *Entry) (*xattrSet, error) {
	if x := e.xattr.Load(); x != nil {
		return x, nil
	}
	x := &xattrSet{}
	if e.Layer >= 0 {
		p := s.BackingPath(e)
		names, err := llistxattr(p)
		if err != nil {
			return nil, fmt.Errorf("listxattr %s: %w", p, err)
		}
		for _, n := range names {
			if s.Hidden(e.Layer, n) {
				continue
			}
			v, err := lgetxattr(p, n)
			if errors.Is(err, unix.ENODATA) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("getxattr %s %s: %w", p, n, err)
			}
			if x.values == nil {
				x.values = make(map[string][]byte)
			}
			x.names = append(x.names, n)
			x.values[n] = v
		}
	}
	if !e.xattr.CompareAndSwap(nil, x) {
		return e.xattr.Load(), nil
	}
	return x, nil
}

func llistxattr(p string) ([]string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			sz, err := unix.Llistxattr(p, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz+64)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		var names []string
		for _, n := range strings.Split(string(buf[:n]), "\x00") {
			if n != "" {
				names = append(names, n)
			}
		}
		return names, nil
	}
}

func lgetxattr(p, name string) ([]byte, error) {
	buf := make([]byte, 128)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			sz, err := unix.Lgetxattr(p, name, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz+64)
			continue
		}
		if err != nil {
			return nil, err
		}
		return append([]byte(nil), buf[:n]...), nil
	}
}
