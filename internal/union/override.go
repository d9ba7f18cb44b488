package union

import (
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// OverrideXattr holds the ownership, mode and file type that rootless
// stores with force_mask keep out of the real inode ("uid:gid:mode[:type]",
// mode in octal, type "file", "dir", "symlink", "pipe", "socket",
// "block-MAJ-MIN" or "char-MAJ-MIN"), as containers/storage writes it.
const OverrideXattr = "user.containers.override_stat"

// applyOverride replaces ownership, mode and type with what the
// override xattr of path says, when it has one that parses.
func applyOverride(st *Stat, path string) {
	var buf [128]byte
	n, err := unix.Lgetxattr(path, OverrideXattr, buf[:])
	if err != nil {
		return
	}
	uid, gid, mode, rdev, ok := parseOverride(string(buf[:n]))
	if !ok {
		return
	}
	st.Uid, st.Gid = uid, gid
	if mode&unix.S_IFMT == 0 {
		mode |= st.Mode & unix.S_IFMT
	}
	st.Mode = mode
	if mode&unix.S_IFMT == unix.S_IFCHR || mode&unix.S_IFMT == unix.S_IFBLK {
		st.Rdev = rdev
	}
}

// parseOverride decodes an override xattr value. The mode it returns has
// no file type bits when the value names none.
func parseOverride(v string) (uid, gid, mode uint32, rdev uint64, ok bool) {
	parts := strings.Split(v, ":")
	if len(parts) < 3 {
		return 0, 0, 0, 0, false
	}
	u, err1 := strconv.ParseUint(parts[0], 10, 32)
	g, err2 := strconv.ParseUint(parts[1], 10, 32)
	m, err3 := strconv.ParseUint(parts[2], 8, 32)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, 0, 0, false
	}
	mode = uint32(m) & 0o7777
	if len(parts) > 3 {
		typ := parts[3]
		switch {
		case strings.HasPrefix(typ, "file"):
			mode |= unix.S_IFREG
		case strings.HasPrefix(typ, "dir"):
			mode |= unix.S_IFDIR
		case strings.HasPrefix(typ, "symlink"):
			mode |= unix.S_IFLNK
		case strings.HasPrefix(typ, "pipe"):
			mode |= unix.S_IFIFO
		case strings.HasPrefix(typ, "socket"):
			mode |= unix.S_IFSOCK
		case strings.HasPrefix(typ, "block"), strings.HasPrefix(typ, "char"):
			f := strings.Split(typ, "-")
			if len(f) < 3 {
				return 0, 0, 0, 0, false
			}
			maj, err1 := strconv.ParseUint(f[1], 10, 32)
			min, err2 := strconv.ParseUint(f[2], 10, 32)
			if err1 != nil || err2 != nil {
				return 0, 0, 0, 0, false
			}
			rdev = unix.Mkdev(uint32(maj), uint32(min))
			if f[0] == "block" {
				mode |= unix.S_IFBLK
			} else {
				mode |= unix.S_IFCHR
			}
		default:
			return 0, 0, 0, 0, false
		}
	}
	return uint32(u), uint32(g), mode, rdev, true
}
