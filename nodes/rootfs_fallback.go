package nodes

import (
	"fmt"

	"github.com/imagefs/imagefs/internal/union"
)

// ImageMounter is implemented by stores that can mount an image
// read-only through the store (storageview.View). rootfs/ falls back to
// such a mount when the union cannot read an image's layers directly
// (another graph driver, composefs-backed layers, a missing diff dir).
// The mount stays for the life of the imagefs mount; the store undoes it
// when it is closed (storageview.View.Close).
type ImageMounter interface {
	MountImage(imageID string) (dir string, err error)
}

// fallbackTree serves a read-only store mount of the image, saying why in
// the log. The supplying layer of an entry is unknown there, so
// user.imagefs.layer* are not answered.
func (r *Rootfs) fallbackTree(imageID string, cause error) (*rootfsTree, error) {
	m, ok := r.store.(ImageMounter)
	if !ok {
		return nil, fmt.Errorf("layers not readable (%v) and the store cannot mount images", cause)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	dir, mounted := r.mounts[imageID]
	if !mounted {
		r.log.Printf("rootfs: image %s: layers not readable directly (%v); serving a read-only mount of the image", rootfsShort(imageID), cause)
		var err error
		if dir, err = m.MountImage(imageID); err != nil {
			return nil, fmt.Errorf("read-only mount of the image: %w", err)
		}
		r.mounts[imageID] = dir
	}
	st, err := union.NewStack([]union.Layer{{ID: "mount:" + imageID, Path: dir, Full: true}}, r.cache)
	if err != nil {
		return nil, err
	}
	return &rootfsTree{r: r, stack: st, all: st.Layers(), key: "i" + imageID, noLayerXattrs: true}, nil
}
