package nodes

import (
	"context"
	"path"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The read-side tree refuses every change with EROFS. The refusals are
// methods of the embedded node and dirNode types, so a node kind that
// learns a write operation (nodes/*_write.go: Symlink and Unlink in
// names/, Rmdir in images/…) simply defines that method on its own type,
// which takes precedence over the one promoted from here.

// dirNode is embedded by every directory of the read-side tree.
type dirNode struct {
	node
	cookies nameCookies // of its listings (dirstream.go)
}

// access(2) mask bits (W_OK, X_OK).
const (
	accessW = 2
	accessX = 1
)

// Access answers access(2) when the mount does not let the kernel check
// modes itself (no default_permissions): asking for write access is EROFS,
// execute on a file EACCES (all files are 0444), the rest is granted.
func (n *node) Access(ctx context.Context, mask uint32) syscall.Errno {
	if mask&accessW != 0 {
		return syscall.EROFS
	}
	if mask&accessX != 0 && n.StableAttr().Mode == syscall.S_IFREG {
		return syscall.EACCES
	}
	return 0
}

// Setattr (chmod, chown, truncate, utimes) is refused: EROFS.
func (n *node) Setattr(ctx context.Context, f fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return n.refuse("setattr", "")
}

// Writev is refused: EROFS. Opening for writing is not (the kernel does
// not ask, see handleless.go), so the first write is.
func (n *node) Writev(ctx context.Context, f fusefs.FileHandle, data [][]byte, off int64) (uint32, syscall.Errno) {
	dropRefusedPages(n.EmbeddedInode())
	return 0, n.refuse("write", "")
}

// dropRefusedPages drops the kernel's cached pages of a file after a write
// to it was refused. A write through a shared writable mmap changes the
// cached pages first and reaches us only when the kernel writes them back;
// refused, they would stay cached as changed for every reader until the
// mount ends. The kernel waits for that write-back to end before it drops
// a page, so the invalidation is sent once we have answered: from its own
// goroutine.
func dropRefusedPages(ino *fusefs.Inode) {
	go ino.NotifyContent(0, 0)
}

// Allocate (fallocate(2)) is refused: EROFS, like a write.
func (n *node) Allocate(ctx context.Context, f fusefs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	return n.refuse("fallocate", "")
}

// Setxattr is refused: EROFS.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.refuse("setxattr "+attr, "")
}

// Removexattr is refused: EROFS.
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.refuse("removexattr "+attr, "")
}

// Create (open with O_CREAT of a new name) is refused: EROFS.
func (d *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, d.refuse("create", name)
}

// Tmpfile (open with O_TMPFILE) is refused: EROFS.
func (d *dirNode) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, d.refuse("tmpfile", "")
}

// Mkdir is refused: EROFS.
func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.refuse("mkdir", name)
}

// Mknod is refused: EROFS.
func (d *dirNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.refuse("mknod", name)
}

// Link (a hard link) is refused: EROFS.
func (d *dirNode) Link(ctx context.Context, target fusefs.InodeEmbedder, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.refuse("link", name)
}

// Symlink is refused: EROFS.
func (d *dirNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.refuse("symlink", name)
}

// Unlink is refused: EROFS.
func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	return d.refuse("unlink", name)
}

// Rmdir is refused: EROFS.
func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	return d.refuse("rmdir", name)
}

// Rename is refused: EROFS.
func (d *dirNode) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return d.refuse("rename", name+" -> "+newName)
}

// refuse logs a refused change of this node (or of its child name) and
// returns EROFS.
func (n *node) refuse(op, name string) syscall.Errno {
	p := "/" + n.Path(nil)
	if name != "" {
		p = path.Join(p, name)
	}
	n.t.log.Printf("%s %s: refused, this part of the tree is read-only (EROFS)", op, p)
	return syscall.EROFS
}
