package storageview

import (
	"errors"
	"log"

	digest "github.com/opencontainers/go-digest"
)

// Options says which store to open. Empty fields take the values podman
// would use (storage.DefaultStoreOptions: containers-storage.conf,
// CONTAINERS_STORAGE_CONF).
type Options struct {
	GraphRoot     string   // --root
	RunRoot       string   // --runroot
	Driver        string   // --storage-driver
	DriverOptions []string // --storage-opt, repeatable
	ReadOnly      bool     // refuse every change (mount --read-only)

	// Log receives one line per refusal, fallback or store error the view
	// meets; nil is log.Default().
	Log *log.Logger
}

// Errors the view returns; nodes map them to errno (see nodes/errno.go).
var (
	ErrNotFound    = errors.New("no such image, name, digest or layer") // ENOENT
	ErrInUse       = errors.New("image is in use by a container")       // EBUSY
	ErrReadOnly    = errors.New("read-only image store")                // EROFS
	ErrInvalidName = errors.New("invalid image name")                   // EINVAL
	ErrAmbiguous   = errors.New("ambiguous image ID prefix")            // ENOENT
)

// Instance is one entry of a manifest list, as images/<id>/instances/platforms shows it.
type Instance struct {
	Digest  digest.Digest
	OS      string
	Arch    string
	Variant string
}

// LayerDir is where a layer's own files live on disk, for rootfs/ and diff/.
type LayerDir struct {
	ID   string
	Path string // overlay: <graphroot>/overlay/<id>/diff; vfs: <graphroot>/vfs/dir/<id>
	// Full is true when Path holds the whole merged tree (vfs), not a diff.
	Full bool
	// AUFSWhiteouts is true when whiteouts are stored as ".wh.<name>" files
	// (stores with a mount_program) rather than 0/0 character devices.
	AUFSWhiteouts bool
	// UserXattr is true when the store's own mount is the kernel's
	// overlayfs with the userxattr option (rootless, no mount_program):
	// user.overlay.* are its markers rather than trusted.overlay.*.
	UserXattr bool
	// NativeDiff is true when podman diff of the layer is the overlay
	// driver's native diff (the layer's directory against the lower ones)
	// rather than a comparison of the two trees: kernel overlayfs, no
	// mount_program, and the driver found the native diff usable.
	NativeDiff bool
}
