// Package nodes holds the go-fuse node types of the imagefs tree: one file
// per node kind. Nodes keep identities (image IDs, names, layer IDs) and
// re-resolve them in the current storageview.Index on every operation, so a
// node never serves data of an image that is gone.
package nodes

import (
	"syscall"

	"github.com/imagefs/imagefs/storageview"
)

// Store is everything the tree needs from the image store.
// *storageview.View implements it; unit tests may use a fake.
type Store interface {
	// Index returns the current snapshot, rebuilt first if the store changed
	// since the last call (a cheap check; safe to call on every operation).
	Index() *storageview.Index

	Manifest(imageID string) ([]byte, error)    // manifest bytes exactly as stored
	Config(imageID string) ([]byte, error)      // config blob exactly as stored; ErrNotFound for lists
	InspectJSON(imageID string) ([]byte, error) // podman image inspect, one object, with trailing newline
	History(imageID string) ([]byte, error)     // podman history-like text
	Instances(imageID string) ([]storageview.Instance, error)
	DF() ([]byte, error)                          // the df file
	LayerInfoJSON(layerID string) ([]byte, error) // layers/<id>/info.json

	// LayerDirs returns where the image's layers live on disk, base first.
	LayerDirs(imageID string) ([]storageview.LayerDir, error)

	// Statfs describes the file system the store keeps its images on.
	Statfs(st *syscall.Statfs_t) error
}
