package nodes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/internal/union"
	"github.com/imagefs/imagefs/storageview"
)

// LayerChainDirser is implemented by stores that can say where any
// layer's chain lives on disk, base first, ending with the layer itself,
// including layers no image uses. Without it layers/<id>/diff and
// changes are found through an image that uses the layer.
type LayerChainDirser interface {
	LayerChainDirs(layerID string) ([]storageview.LayerDir, error)
}

// layerChain returns the union layers of layerID's chain, base first,
// ending with the layer itself.
func (r *Rootfs) layerChain(layerID string) ([]union.Layer, error) {
	if s, ok := r.store.(LayerChainDirser); ok {
		dirs, err := s.LayerChainDirs(layerID)
		if err != nil {
			return nil, err
		}
		return toUnionLayers(dirs), nil
	}
	l := r.store.Index().Layer(layerID)
	if l == nil {
		return nil, storageview.ErrNotFound
	}
	for _, img := range l.Images {
		dirs, err := r.store.LayerDirs(img)
		if err != nil {
			continue
		}
		for i, d := range dirs {
			if d.ID == layerID {
				return toUnionLayers(dirs[:i+1]), nil
			}
		}
	}
	return nil, fmt.Errorf("layer %s: no image using it says where it is stored", rootfsShort(layerID))
}

// LayerDiff returns layers/<id>/diff/ as a child of parent (the
// layers/<id>/ node): the layer's directory exactly as stored — whiteout
// devices, ".wh." files and opaque markers shown, not applied. For vfs
// layers that directory holds the whole tree (docs/ROOTFS.md).
func (r *Rootfs) LayerDiff(ctx context.Context, parent *fusefs.Inode, layerID string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if in, ok, errno := r.knownRoot(parent, "diff", out); ok {
		return in, errno
	}
	chain, err := r.layerChain(layerID)
	if err != nil {
		return nil, r.layerErrno("diff", layerID, err)
	}
	st, err := union.NewRaw(chain[len(chain)-1], r.cache)
	if err != nil {
		return nil, r.layerErrno("diff", layerID, err)
	}
	t := &rootfsTree{r: r, stack: st, all: st.Layers(), key: "l" + layerID, noLayerXattrs: true}
	return r.newRoot(ctx, parent, "diff", t, out)
}

// layerErrno maps an error of layers/<id>/what: ENOENT for a layer that
// is gone, also when only its directory is (removed while the index still
// had it: logged, in case the store lost it).
func (r *Rootfs) layerErrno(what, layerID string, err error) syscall.Errno {
	if errors.Is(err, storageview.ErrNotFound) {
		return syscall.ENOENT
	}
	r.log.Printf("layers/%s/%s: %v", layerID, what, err)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, os.ErrPermission):
		return syscall.EACCES // a server that is not root, in a rootless store
	}
	return syscall.EIO
}

// LayerChanges returns layers/<id>/changes as a child of parent.
func (r *Rootfs) LayerChanges(ctx context.Context, parent *fusefs.Inode, layerID string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	l := r.store.Index().Layer(layerID)
	if l == nil {
		return nil, syscall.ENOENT
	}
	n := &layerChangesFile{r: r, layerID: layerID}
	if errno := n.Getattr(ctx, nil, &fuse.AttrOut{}); errno != 0 {
		return nil, errno
	}
	var a fuse.AttrOut
	n.Getattr(ctx, nil, &a)
	out.Attr = a.Attr
	setRootfsTimeouts(out)
	return parent.NewInode(ctx, n, stableAttr(syscall.S_IFREG, rootfsChangesIno(layerID))), 0
}

// changesOf returns (computed once per layer) the changes file and
// whether it names what the image's modes hide from others.
func (r *Rootfs) changesOf(layerID string) ([]byte, bool, error) {
	c, err := r.layerChangeSet(layerID, nil)
	if err != nil {
		return nil, false, err
	}
	return c.text, c.hidden, nil
}

// changeSet is what one layer changes, as a list and as the file.
type changeSet struct {
	list   []union.Change // sorted by path; what the file leaves out too
	text   []byte
	hidden bool // a name in it is hidden from others by the image's modes
}

// has reports whether the layer added or changed path ("/etc/passwd").
func (c *changeSet) has(path string) bool {
	i := sort.Search(len(c.list), func(i int) bool { return c.list[i].Path >= path })
	return i < len(c.list) && c.list[i].Path == path && c.list[i].Kind != 'D'
}

// layerChangeSet computes (once per layer) what the layer changes; chain
// is the layer's chain (base first, ending with it) when the caller knows
// it, nil to look it up.
func (r *Rootfs) layerChangeSet(layerID string, chain []union.Layer) (*changeSet, error) {
	r.mu.Lock()
	c, ok := r.changes[layerID]
	r.mu.Unlock()
	if ok {
		return c, nil
	}
	if chain == nil {
		var err error
		if chain, err = r.layerChain(layerID); err != nil {
			return nil, err
		}
	}
	var list []union.Change
	var err error
	if top := len(chain) - 1; chain[top].NativeDiff {
		list, err = union.NativeChanges(chain, top)
	} else {
		list, err = union.Changes(chain, top, r.cache)
	}
	if err != nil {
		return nil, err
	}
	c = &changeSet{list: list}
	var sb strings.Builder
	for _, ch := range list {
		if podmanDiffHides[ch.Path] {
			continue // from the file only: has still knows the layer holds it
		}
		sb.WriteString(ch.String())
		sb.WriteByte('\n')
		c.hidden = c.hidden || ch.Hidden
	}
	c.text = []byte(sb.String())
	r.mu.Lock()
	r.changes[layerID] = c
	r.mu.Unlock()
	return c, nil
}

// podmanDiffHides are the paths podman diff leaves out of every result:
// those a container's runtime mounts over (libpod's initInodes).
var podmanDiffHides = map[string]bool{
	"/dev": true, "/etc/hostname": true, "/etc/hosts": true, "/etc/resolv.conf": true, "/etc/mtab": true,
	"/proc": true, "/run": true, "/run/.containerenv": true, "/run/secrets": true, "/run/notify": true,
	"/run/podman-init": true, "/sys": true,
}

// layerChangesFile is layers/<id>/changes: "A /path", "C /path" or
// "D /path" per line, sorted by path, as podman diff prints the changes of
// a layer against its parent.
type layerChangesFile struct {
	fusefs.Inode
	r       *Rootfs
	layerID string
}

var _ = (fusefs.NodeGetattrer)((*layerChangesFile)(nil))

// Getattr gives the exact size, computing the changes on first use. A
// list naming what lies in directories others may not read (a 0700
// /root) is the mounting user's alone: with --allow-other it would tell
// others the names that the image's modes keep from them in rootfs/ and
// diff/.
func (f *layerChangesFile) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	b, hidden, err := f.r.changesOf(f.layerID)
	if err != nil {
		return f.r.layerErrno("changes", f.layerID, err)
	}
	out.Mode = syscall.S_IFREG | 0o444 // -r--r--r--
	if hidden {
		out.Mode = syscall.S_IFREG | 0o400 // -r--------
	}
	out.Owner = f.r.owner
	out.Nlink = 1
	out.Size = uint64(len(b))
	out.Blksize = 4096 // else go-fuse counts the blocks of 4 KiB pages
	out.Blocks = (out.Size + 511) / 512
	if l := f.r.store.Index().Layer(f.layerID); l != nil && !l.Created.IsZero() {
		t := l.Created
		out.SetTimes(&t, &t, &t)
	}
	out.SetTimeout(RootfsTimeout)
	return 0
}

var _ = (fusefs.NodeReader)((*layerChangesFile)(nil))

func (f *layerChangesFile) Read(ctx context.Context, fh fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	b, _, err := f.r.changesOf(f.layerID)
	if err != nil {
		return nil, f.r.layerErrno("changes", f.layerID, err)
	}
	if off >= int64(len(b)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(b)))
	return fuse.ReadResultData(b[off:end]), 0
}

// Every change of the changes file is refused, as under diff/.
var (
	_ = (fusefs.NodeWritever)((*layerChangesFile)(nil))
	_ = (fusefs.NodeSetattrer)((*layerChangesFile)(nil))
	_ = (fusefs.NodeAllocater)((*layerChangesFile)(nil))
	_ = (fusefs.NodeSetxattrer)((*layerChangesFile)(nil))
	_ = (fusefs.NodeRemovexattrer)((*layerChangesFile)(nil))
)

func (f *layerChangesFile) Writev(ctx context.Context, fh fusefs.FileHandle, data [][]byte, off int64) (uint32, syscall.Errno) {
	dropRefusedPages(f.EmbeddedInode())
	return 0, f.refuse("write")
}

func (f *layerChangesFile) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.refuse("setattr")
}

func (f *layerChangesFile) Allocate(ctx context.Context, fh fusefs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	return f.refuse("fallocate")
}

func (f *layerChangesFile) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return f.refuse("setxattr " + attr)
}

func (f *layerChangesFile) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return f.refuse("removexattr " + attr)
}

func (f *layerChangesFile) refuse(op string) syscall.Errno {
	f.r.log.Printf("%s /%s: refused, read-only (EROFS)", op, f.Path(nil))
	return syscall.EROFS
}
