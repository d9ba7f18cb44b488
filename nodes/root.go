package nodes

import (
	"context"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/storageview"
)

// NewRoot returns the root directory of the tree of store. Mount it with
// fusefs.Options.RootStableAttr = &fusefs.StableAttr{Ino: RootIno,
// Mode: syscall.S_IFDIR}.
func NewRoot(store Store, opts Options) fusefs.InodeEmbedder {
	return &rootDir{dirNode{node: node{t: newTree(store, opts)}}}
}

// rootDir is the mount's root: the fixed directories images/, names/,
// digests/, layers/ and the file df.
type rootDir struct{ dirNode }

// rootEntries are the root's children, sorted by name (df's number
// follows its content: blobfile.go).
var rootEntries = []struct {
	name string
	mode uint32
	ino  uint64
}{
	{"df", syscall.S_IFREG, 0},
	{"digests", syscall.S_IFDIR, digestsIno},
	{"images", syscall.S_IFDIR, imagesIno},
	{"layers", syscall.S_IFDIR, layersIno},
	{"names", syscall.S_IFDIR, namesIno},
}

// OnAdd creates the fixed directories once, as persistent inodes: they
// exist for the life of the mount, and write operations notify the kernel
// through them.
func (r *rootDir) OnAdd(ctx context.Context) {
	t := r.t
	t.root = r.EmbeddedInode()
	add := func(name string, n treeNode) *fusefs.Inode {
		ch := r.NewPersistentInode(ctx, n, n.stable())
		r.AddChild(name, ch, true)
		return ch
	}
	t.images = add("images", &imagesDir{dirNode{node: node{t: t}}})
	t.names = add("names", &namesDir{dirNode: dirNode{node: node{t: t}}})
	t.digests = add("digests", &digestsDir{dirNode{node: node{t: t}}})
	t.layers = add("layers", &layersDir{dirNode{node: node{t: t}}})
}

// unmounted closes the layer files kept open for reads (handleless.go).
func (r *rootDir) unmounted() { r.t.rootfs.files.closeAll() }

// listingVersion changes whenever a listing of the tree may have: with the
// store's index, and with each write through the mount (mkdir in names/
// changes no index). handleless.go keeps no cursor across it.
func (r *rootDir) listingVersion() any {
	return listingVersion{r.t.index(), r.t.writes().done.Load()}
}

type listingVersion struct {
	ix     *storageview.Index
	writes uint64
}

func (r *rootDir) stable() fusefs.StableAttr {
	return stableAttr(syscall.S_IFDIR, RootIno)
}

func (r *rootDir) timeouts() (time.Duration, time.Duration) {
	return r.t.immutableTimeout, r.t.attrTimeout
}

func (r *rootDir) attr(ctx context.Context, ix *storageview.Index, a *fuse.Attr) syscall.Errno {
	r.t.setAttr(a, RootIno, dirMode, 2+4, 0, r.t.fixedTime(ix))
	return 0
}

// Lookup finds the fixed children.
func (r *rootDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	var n treeNode
	if name == "df" {
		n = newDFFile(r.t)
	} else if ch := r.GetChild(name); ch != nil {
		n = ch.Operations().(treeNode)
	} else {
		return nil, syscall.ENOENT
	}
	return lookupChild(ctx, r.EmbeddedInode(), name, r.t.index(), n, out)
}

// Readdir lists the fixed children.
func (r *rootDir) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	ents := make([]fuse.DirEntry, 0, len(rootEntries))
	for _, e := range rootEntries {
		if e.name == "df" {
			e.ino = newDFFile(r.t).stable().Ino
		}
		ents = append(ents, fuse.DirEntry{Name: e.name, Mode: e.mode, Ino: e.ino})
	}
	return r.listing(ents), 0
}

// fixedDir attributes: the directories of the root and names/…
func fixedDirAttr(t *tree, ix *storageview.Index, a *fuse.Attr, ino uint64, mode uint32, subdirs int) {
	t.setAttr(a, ino, mode, uint32(2+subdirs), 0, t.fixedTime(ix))
}
