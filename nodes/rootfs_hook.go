package nodes

import (
	"context"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/storageview"
)

// The rootfs issue's entries join the read-side tree here:
// images/<id>/rootfs/ (not for manifest lists), layers/<id>/diff/ and
// layers/<id>/changes.
func init() {
	imageChildren = append(imageChildren, imageChild{
		name: "rootfs", mode: syscall.S_IFDIR, in: notList,
		lookup: func(ctx context.Context, d *imageDir, img *storageview.Image, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
			return rootfsFor(d.t).ImageRootfs(ctx, d.EmbeddedInode(), img.ID, out)
		},
		ino: func(imageID string) uint64 { return rootfsDirIno("i"+imageID, "") },
	})
	layerChildren = append(layerChildren,
		layerChild{
			name: "diff", mode: syscall.S_IFDIR,
			lookup: func(ctx context.Context, d *layerDir, l *storageview.Layer, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
				return rootfsFor(d.t).LayerDiff(ctx, d.EmbeddedInode(), l.ID, out)
			},
			ino: func(layerID string) uint64 { return rootfsDirIno("l"+layerID, "") },
		},
		layerChild{
			name: "changes", mode: syscall.S_IFREG,
			lookup: func(ctx context.Context, d *layerDir, l *storageview.Layer, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
				return rootfsFor(d.t).LayerChanges(ctx, d.EmbeddedInode(), l.ID, out)
			},
			ino: rootfsChangesIno,
		})
}

// rootfsByTree holds the Rootfs of each mounted tree (*tree → *Rootfs),
// made on first use with the tree's store and log.
var rootfsByTree sync.Map

func rootfsFor(t *tree) *Rootfs {
	if r, ok := rootfsByTree.Load(t); ok {
		return r.(*Rootfs)
	}
	r, _ := rootfsByTree.LoadOrStore(t, NewRootfs(t.store, RootfsOptions{Log: t.log}))
	return r.(*Rootfs)
}
