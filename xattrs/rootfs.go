package xattrs

// Xattrs answered on every entry under images/<id>/rootfs/ but never
// listed by listxattr, so that cp -a, rsync -X and tar --xattrs out of a
// rootfs do not copy them (docs/XATTRS.md).
const (
	// RootfsLayer is the full ID of the layer that supplied the entry.
	RootfsLayer = "user.imagefs.layer"
	// RootfsLayerIndex is that layer's name in images/<id>/layers/: its
	// position in the image's chain, base layer 000.
	RootfsLayerIndex = "user.imagefs.layer-index"
)
