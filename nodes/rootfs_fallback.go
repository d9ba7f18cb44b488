package nodes

import (
	"errors"
	"fmt"

	"github.com/imagefs/imagefs/internal/union"
)

// ImageMounter is implemented by stores that can mount an image
// read-only through the store (storageview.View). rootfs/ falls back to
// such a mount when the union cannot read an image's layers directly
// (another graph driver, composefs-backed layers, a missing diff dir).
type ImageMounter interface {
	MountImage(imageID string) (dir string, err error)
	UnmountImage(imageID string) error
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

// Close unmounts the images mounted as fallbacks; call it when the
// imagefs mount ends.
func (r *Rootfs) Close() error {
	m, ok := r.store.(ImageMounter)
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for id := range r.mounts {
		if ok {
			if err := m.UnmountImage(id); err != nil {
				errs = append(errs, fmt.Errorf("unmounting image %s: %w", rootfsShort(id), err))
			}
		}
		delete(r.mounts, id)
	}
	return errors.Join(errs...)
}
