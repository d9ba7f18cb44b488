package nodes

import (
	"context"
	"syscall"
	"unsafe"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// FS_IOC_FSGETXATTR, _IOR('X', 31, struct fsxattr), and that struct's
// size; FS_IOC_SETFLAGS and FS_IOC_FSSETXATTR, chattr's.
const (
	fsIocFsgetxattr = 0x801c581f
	fsxattrSize     = 28
	fsIocSetflags   = 0x40086602
	fsIocFssetxattr = 0x401c5820
)

var _ = (fusefs.NodeIoctler)((*rootfsNode)(nil))

// Ioctl answers the two questions of lsattr (and of the kernel's
// FS_IOC_GETFLAGS / FS_IOC_FSGETXATTR for any caller) with the supplying
// layer file's answer, as overlayfs passes them on. The kernel asks them
// of regular files and directories only, and only once the caller has
// opened the file. chattr's are EROFS, as everything that would change
// the tree; anything else is ENOTTY, as for any file without ioctls.
func (n *rootfsNode) Ioctl(ctx context.Context, _ fusefs.FileHandle, cmd uint32, _ uint64, _, output []byte) (int32, syscall.Errno) {
	var size int
	switch cmd {
	case fsIocSetflags, fsIocFssetxattr: // chattr
		return 0, n.refuse("chattr", "")
	case unix.FS_IOC_GETFLAGS:
		size = 4 // the kernel's flags are an int, whatever the command's size says
	case fsIocFsgetxattr:
		size = fsxattrSize
	default:
		return 0, syscall.ENOTTY
	}
	if len(output) < size || (n.ent.Type != syscall.S_IFREG && n.ent.Type != syscall.S_IFDIR) {
		return 0, syscall.ENOTTY
	}
	p := n.tree.stack.BackingPath(n.ent)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, n.tree.errno("open", n.ent.Path, err)
	}
	defer unix.Close(fd)
	var buf [32]byte // either answer fits
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(cmd), uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return 0, e
	}
	copy(output, buf[:size])
	return 0, 0
}
