package union

import (
	"bytes"
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dirent is one name of a layer directory as getdents(2) gives it.
type dirent struct {
	name string
	typ  uint32 // S_IFMT bits (from an lstat where d_type is DT_UNKNOWN)
	ino  uint64
}

// readDir lists directory path with getdents64, without "." and "..".
func readDir(path string) ([]dirent, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []dirent
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		first := len(out)
		out = parseDirents(buf[:n], out)
		for i := first; i < len(out); i++ {
			if out[i].typ == 0 { // DT_UNKNOWN: the file system keeps no type in directories
				var st unix.Stat_t
				if err := unix.Fstatat(fd, out[i].name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					return nil, err
				}
				out[i].typ = st.Mode & unix.S_IFMT
			}
		}
	}
}

// struct linux_dirent64: d_ino u64, d_off s64, d_reclen u16, d_type u8, d_name.
const direntNameOff = int(unsafe.Offsetof(unix.Dirent{}.Name))

func parseDirents(b []byte, out []dirent) []dirent {
	for len(b) >= direntNameOff {
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < direntNameOff || reclen > len(b) {
			break
		}
		rec := b[:reclen]
		b = b[reclen:]
		name := rec[direntNameOff:]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		if string(name) == "." || string(name) == ".." {
			continue
		}
		out = append(out, dirent{
			name: string(name),
			typ:  uint32(rec[18]) << 12, // DTTOIF: d_type is st_mode's S_IFMT bits >> 12
			ino:  binary.NativeEndian.Uint64(rec[0:8]),
		})
	}
	return out
}
