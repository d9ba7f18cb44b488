package nodes

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"path"
	"strings"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/internal/union"
)

// Inode numbers of rootfs/ and diff/ entries are hashes of their identity
// in [RootfsInoBase, 2*RootfsInoBase): 2^62 up to (not including) go-fuse's
// automatic numbers at 2^63. The rest of the tree must stay below 2^62.
const RootfsInoBase = uint64(1) << 62

// ino is the inode number of e in this tree. Directories are merged per
// image, so they are numbered by tree and path. Other files are numbered
// by tree and backing inode (layer ID, device, inode), so the names of one
// inode (hardlinks) share a number, as overlayfs shows them, while a file
// two images share through a layer is a file of each: every image's
// rootfs/ is a file system of its own, as each podman image mount is, and
// du, tar or cp -a of several images must not take it for a hardlink.
func (t *rootfsTree) ino(e *union.Entry) uint64 {
	if e.IsDir() {
		return rootfsDirIno(t.key, e.Path)
	}
	h := fnv.New64a()
	h.Write([]byte(t.key))
	h.Write([]byte{0})
	if e.Layer >= 0 {
		h.Write([]byte(t.stack.Layers()[e.Layer].ID))
	}
	var b [17]byte
	b[0] = 'f'
	binary.LittleEndian.PutUint64(b[1:], e.Dev)
	binary.LittleEndian.PutUint64(b[9:], e.Ino)
	h.Write(b[:])
	return h.Sum64()&(RootfsInoBase-1) | RootfsInoBase
}

// rootfsDirIno numbers directory path of the tree key ("i"+image ID for
// rootfs/, "l"+layer ID for diff/).
func rootfsDirIno(key, path string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0, 'd', 0})
	h.Write([]byte(path))
	return h.Sum64()&(RootfsInoBase-1) | RootfsInoBase
}

// rootfsChangesIno numbers layers/<id>/changes.
func rootfsChangesIno(layerID string) uint64 {
	h := fnv.New64a()
	h.Write([]byte("changes\x00" + layerID))
	return h.Sum64()&(RootfsInoBase-1) | RootfsInoBase
}

// fillAttr copies the entry's lstat data.
func (n *rootfsNode) fillAttr(a *fuse.Attr) syscall.Errno {
	st, err := n.tree.stack.Stat(n.ent)
	if err != nil {
		return n.tree.errno("lstat", n.ent.Path, err)
	}
	a.Ino = n.tree.ino(n.ent)
	a.Mode = st.Mode
	a.Nlink = st.Nlink
	a.Owner = fuse.Owner{Uid: st.Uid, Gid: st.Gid}
	a.Size = uint64(st.Size)
	a.Blocks = uint64(st.Blocks)
	a.Blksize = 4096
	a.Rdev = encodeDev(st.Rdev)
	a.Atime, a.Atimensec = uint64(st.Atime.Sec), uint32(st.Atime.Nsec)
	a.Mtime, a.Mtimensec = uint64(st.Mtime.Sec), uint32(st.Mtime.Nsec)
	a.Ctime, a.Ctimensec = uint64(st.Ctime.Sec), uint32(st.Ctime.Nsec)
	return 0
}

// encodeDev turns a dev_t into the 32-bit form FUSE carries (the kernel's
// new_encode_dev: 12 bits of major, 20 of minor).
func encodeDev(dev uint64) uint32 {
	major := uint32((dev>>8)&0xfff) | uint32(dev>>32)&^0xfff
	minor := uint32(dev&0xff) | uint32(dev>>12)&^0xff
	return (minor & 0xff) | (major << 8) | ((minor &^ 0xff) << 12)
}

var _ = (fusefs.NodeGetattrer)((*rootfsNode)(nil))

// Getattr answers from the index: the backing file's lstat data.
func (n *rootfsNode) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if errno := n.fillAttr(&out.Attr); errno != 0 {
		return errno
	}
	out.SetTimeout(RootfsTimeout)
	return 0
}

// Everything under rootfs/ and diff/ is read-only: every change is EROFS,
// with one log line naming the operation and the path (name, when given,
// is the entry of directory n the operation is about).
func (n *rootfsNode) refuse(op, name string) syscall.Errno {
	p := "/" + n.Path(nil)
	if name != "" {
		p = path.Join(p, name)
	}
	what := "rootfs"
	if strings.HasPrefix(n.tree.key, "l") {
		what = "a layer's diff"
	}
	n.tree.r.log.Printf("%s %s: refused, %s is read-only (EROFS)", op, p, what)
	return syscall.EROFS
}

var _ = (fusefs.NodeSetattrer)((*rootfsNode)(nil))

func (n *rootfsNode) Setattr(ctx context.Context, f fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return n.refuse("setattr", "")
}

var _ = (fusefs.NodeWritever)((*rootfsNode)(nil))

// Writev is refused: opening for writing is not (handleless.go).
func (n *rootfsNode) Writev(ctx context.Context, f fusefs.FileHandle, data [][]byte, off int64) (uint32, syscall.Errno) {
	dropRefusedPages(n.EmbeddedInode())
	return 0, n.refuse("write", "")
}

var _ = (fusefs.NodeAllocater)((*rootfsNode)(nil))

func (n *rootfsNode) Allocate(ctx context.Context, f fusefs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	return n.refuse("fallocate", "")
}

var _ = (fusefs.NodeAccesser)((*rootfsNode)(nil))

// Access refuses write access with EROFS and grants the rest (the mount
// uses default_permissions, so the kernel checks modes itself).
func (n *rootfsNode) Access(ctx context.Context, mask uint32) syscall.Errno {
	if mask&2 != 0 { // W_OK
		return syscall.EROFS
	}
	return 0
}

var _ = (fusefs.NodeSetxattrer)((*rootfsNode)(nil))

func (n *rootfsNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.refuse("setxattr "+attr, "")
}

var _ = (fusefs.NodeRemovexattrer)((*rootfsNode)(nil))

func (n *rootfsNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.refuse("removexattr "+attr, "")
}

var _ = (fusefs.NodeMkdirer)((*rootfsDir)(nil))

func (d *rootfsDir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.refuse("mkdir", name)
}

var _ = (fusefs.NodeMknoder)((*rootfsDir)(nil))

func (d *rootfsDir) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.refuse("mknod", name)
}

var _ = (fusefs.NodeLinker)((*rootfsDir)(nil))

func (d *rootfsDir) Link(ctx context.Context, target fusefs.InodeEmbedder, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.refuse("link", name)
}

var _ = (fusefs.NodeSymlinker)((*rootfsDir)(nil))

func (d *rootfsDir) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.refuse("symlink", name)
}

var _ = (fusefs.NodeCreater)((*rootfsDir)(nil))

func (d *rootfsDir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, d.refuse("create", name)
}

var _ = (fusefs.NodeTmpfiler)((*rootfsDir)(nil))

func (d *rootfsDir) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, d.refuse("tmpfile", "")
}

var _ = (fusefs.NodeUnlinker)((*rootfsDir)(nil))

func (d *rootfsDir) Unlink(ctx context.Context, name string) syscall.Errno {
	return d.refuse("unlink", name)
}

var _ = (fusefs.NodeRmdirer)((*rootfsDir)(nil))

func (d *rootfsDir) Rmdir(ctx context.Context, name string) syscall.Errno {
	return d.refuse("rmdir", name)
}

var _ = (fusefs.NodeRenamer)((*rootfsDir)(nil))

func (d *rootfsDir) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return d.refuse("rename", name)
}
