package union

import (
	"errors"
	"io/fs"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// NativeChanges lists what layer k of layers (base first) changes the way
// the overlay driver's own diff does (archive.OverlayChanges), which is
// what podman diff IMAGE prints for a kernel-overlayfs store whose driver
// uses the native diff: every name the layer's directory holds is listed —
// D for a whiteout, and for an opaque directory that a lower layer has
// (the old one was deleted); A when no lower layer has the name (a lower
// whiteout of it or of a directory above it, or a lower file where a
// directory above it is, ends the search); C when one
// has it, except a directory whose size, mode and mtime are the same
// there; and each directory above an A or D that is not listed yet is C.
// The content of a file is not compared: a file the layer holds is C even
// when it did not change. The result is sorted by path; Hidden is set as
// in Changes.
func NativeChanges(layers []Layer, k int) ([]Change, error) {
	top := layers[k]
	var lowers []*lowerDir // nearest first
	for i := k - 1; i >= 0; i-- {
		fd, err := unix.Open(layers[i].Path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		defer unix.Close(fd)
		lowers = append(lowers, &lowerDir{fd: fd, whiteouts: map[string]bool{}})
	}
	opaqueName := trustedOpaqueXattr
	if top.UserXattr {
		opaqueName = userOpaqueXattr
	}
	var st unix.Stat_t
	if err := unix.Lstat(top.Path, &st); err != nil {
		return nil, err
	}
	// hidden tells, per directory walked, whether the names in it are
	// hidden from others (see Change.Hidden).
	hidden := map[string]bool{"": closedToSome(st.Mode, hasACL(top.Path))}
	listed := map[string]bool{} // directories with a change of their own
	var out []Change
	err := filepath.WalkDir(top.Path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, top.Path), "/")
		if rel == "" {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		dir := path.Dir(rel)
		if dir == "." {
			dir = ""
		}
		h := hidden[dir]
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if isDir {
			hidden[rel] = h || closedToSome(st.Mode, hasACL(p))
		}
		kind := byte('A')
		switch {
		case isWhiteout(&st):
			kind = 'D'
		case isDir && xattrIsY(p, opaqueName) && deletedBelow(lowers, rel):
			kind = 'D'
		default:
			for _, l := range lowers {
				if l.whitedOut(rel) {
					break
				}
				var lst unix.Stat_t
				if err := l.lstat(rel, &lst); errors.Is(err, unix.ENOTDIR) {
					break // a file above it in this layer hides the layers below
				} else if err != nil {
					continue
				}
				if isDir && lst.Mode&unix.S_IFMT == unix.S_IFDIR &&
					st.Size == lst.Size && st.Mode == lst.Mode && sameTime(st.Mtim, lst.Mtim) {
					return nil // the same directory: listed only if something below changes
				}
				kind = 'C'
				break
			}
		}
		if isDir {
			listed[rel] = true
		}
		if kind != 'C' {
			// The directories above it changed too, as the driver lists them.
			var above []Change
			for a := dir; a != ""; a = parentOf(a) {
				if listed[a] {
					continue
				}
				listed[a] = true
				above = append(above, Change{'C', "/" + a, hidden[parentOf(a)]})
			}
			out = append(out, above...)
		}
		out = append(out, Change{kind, "/" + rel, h})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// parentOf is the directory above rel ("" for the root's children).
func parentOf(rel string) string {
	if d := path.Dir(rel); d != "." {
		return d
	}
	return ""
}

func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// lowerDir is a lower layer's directory, held open while its names are
// looked up.
type lowerDir struct {
	fd        int
	whiteouts map[string]bool // directories: whether whited out here or above
}

// deletedBelow reports whether an opaque directory rel replaced one of a
// lower layer: the nearest lower layer that has rel, or whites out rel or
// a directory above it, decides.
func deletedBelow(lowers []*lowerDir, rel string) bool {
	for _, l := range lowers {
		var st unix.Stat_t
		err := l.lstat(rel, &st)
		if err == nil {
			return !isWhiteout(&st)
		}
		if errors.Is(err, unix.ENOTDIR) || l.whitedOut(parentOf(rel)) {
			return false
		}
	}
	return false
}

// whitedOut reports whether the layer has a whiteout at rel or at a
// directory above it.
func (l *lowerDir) whitedOut(rel string) bool {
	if rel == "" {
		return false
	}
	var st unix.Stat_t
	if l.lstat(rel, &st) == nil && isWhiteout(&st) {
		return true
	}
	dir := parentOf(rel)
	w, ok := l.whiteouts[dir]
	if !ok {
		w = l.whitedOut(dir)
		l.whiteouts[dir] = w
	}
	return w
}

// lstat is stat of rel inside the layer with every symlink on the way,
// the last one too, resolved inside it, never outside, as the driver of
// today stats it (securejoin.SecureJoin, then lstat of the result): a
// lower symlink counts as what it points to in the layer, a dangling one
// as nothing. (podman 4.3's driver followed such a symlink on the host.)
// ENOTDIR: something above rel is not a directory in the layer.
func (l *lowerDir) lstat(rel string, st *unix.Stat_t) error {
	fd, err := unix.Openat2(l.fd, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fstat(fd, st)
}

// hasACL reports whether the file at p has an access ACL.
func hasACL(p string) bool {
	_, err := unix.Lgetxattr(p, aclAccessXattr, nil)
	return err == nil
}
