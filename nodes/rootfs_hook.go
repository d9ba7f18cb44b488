package nodes

import (
	"context"
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
			return d.t.rootfs.ImageRootfs(ctx, d.EmbeddedInode(), img.ID, out)
		},
		ino: func(imageID string) uint64 { return rootfsDirIno("i"+imageID, "") },
	})
	layerChildren = append(layerChildren,
		layerChild{
			name: "diff", mode: syscall.S_IFDIR,
			lookup: func(ctx context.Context, d *layerDir, l *storageview.Layer, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
				return d.t.rootfs.LayerDiff(ctx, d.EmbeddedInode(), l.ID, out)
			},
			ino: func(layerID string) uint64 { return rootfsDirIno("l"+layerID, "") },
		},
		layerChild{
			name: "changes", mode: syscall.S_IFREG,
			lookup: func(ctx context.Context, d *layerDir, l *storageview.Layer, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
				return d.t.rootfs.LayerChanges(ctx, d.EmbeddedInode(), l.ID, out)
			},
			ino: rootfsChangesIno,
		})
}
