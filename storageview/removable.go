package storageview

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"syscall"

	"go.podman.io/storage"
	"golang.org/x/sys/unix"
)

// checkLayersRemovable makes sure, for a server that is not root, that it
// can delete every layer DeleteImage would delete with img. A rootless
// store keeps files of its user namespace's other users (a 0700 directory
// of uid 100999 on disk): podman deletes them as root of that namespace,
// while this process, outside it, would fail half way through a layer.
// containers/storage then leaves the layer's rest in a temporary
// directory whose removal fails at every later open of the store. Layers
// do not change, so a check before the deletion holds.
func (m *mutator) checkLayersRemovable(img *storage.Image) error {
	if os.Geteuid() == 0 || img.TopLayer == "" {
		return nil
	}
	images, err := m.store.Images()
	if err != nil {
		return err
	}
	layers, err := m.store.Layers()
	if err != nil {
		return err
	}
	usedAsTop := map[string]bool{}
	for _, other := range images {
		if other.ID != img.ID {
			usedAsTop[other.TopLayer] = true
		}
	}
	children := map[string]int{}
	byID := map[string]*storage.Layer{}
	for i := range layers {
		children[layers[i].Parent]++
		byID[layers[i].ID] = &layers[i]
	}
	// As DeleteImage walks: down from the top layer while nothing else
	// uses a layer (another image's top, a child other than the one going).
	for id, removedChildren := img.TopLayer, 0; id != ""; removedChildren = 1 {
		l := byID[id]
		if l == nil || l.ReadOnly || usedAsTop[id] || children[id] > removedChildren {
			return nil
		}
		if err := removableTree(m.layerDir(id)); err != nil {
			return fmt.Errorf("layer %s: %w (only the store's user namespace can remove it: use podman rmi)", short(id), err)
		}
		id = l.Parent
	}
	return nil
}

// layerDir is where the driver keeps a layer's files.
func (m *mutator) layerDir(id string) string {
	if m.store.GraphDriverName() == "vfs" {
		return filepath.Join(m.store.GraphRoot(), "vfs", "dir", id)
	}
	return filepath.Join(m.store.GraphRoot(), m.store.GraphDriverName(), id)
}

// removableTree reports whether this process may delete the tree at root:
// every directory holding entries (root's parent included) lets it remove
// them.
func removableTree(root string) error {
	euid := uint32(os.Geteuid())
	checked := map[string]bool{}
	mayEmpty := func(dir string) error {
		if checked[dir] {
			return nil
		}
		checked[dir] = true
		var st unix.Stat_t
		if err := unix.Lstat(dir, &st); err != nil {
			return err
		}
		if unix.Faccessat(unix.AT_FDCWD, dir, unix.W_OK|unix.X_OK, unix.AT_EACCESS) != nil ||
			st.Mode&unix.S_ISVTX != 0 && st.Uid != euid {
			return fmt.Errorf("user %d may not empty %s (owned by uid %d, mode %04o): %w", euid, dir, st.Uid, st.Mode&0o7777, syscall.EACCES)
		}
		return nil
	}
	err := filepath.WalkDir(root, func(p string, _ iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return mayEmpty(filepath.Dir(p))
	})
	if errors.Is(err, iofs.ErrNotExist) {
		return nil // nothing of it on disk
	}
	return err
}
