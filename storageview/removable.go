package storageview

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"go.podman.io/storage"
	"golang.org/x/sys/unix"
)

// openLayersForRemoval makes sure, for a server that is not root, that it
// can delete every layer DeleteImage would delete with img, one of the
// store's images (the image's mapped copies of its top layer included),
// and lets it:
// containers/storage deletes with this process's rights and does not
// change modes, but its overlay driver makes every layer's diff directory
// 0555, and images have 0555 directories of their own. Directories of the
// user get u+wx until the deletion is over (restore puts back the modes of
// those still there, should a layer stay after all). A directory the user
// may not empty refuses the removal, changing nothing: a rootless store
// keeps files of its user namespace's other users (a 0700 directory of
// uid 100999 on disk), which podman deletes as root of that namespace.
// containers/storage, failing half way through a layer, would leave its
// rest in a temporary directory whose removal fails at every later open of
// the store. Layers do not change, so a check before the deletion holds.
func (m *mutator) openLayersForRemoval(img *storage.Image, images []storage.Image) (restore func(), err error) {
	restore = func() {}
	if os.Geteuid() == 0 || img.TopLayer == "" {
		return restore, nil
	}
	layers, err := m.store.Layers()
	if err != nil {
		return restore, err
	}
	// As DeleteImage decides: the image's mapped copies of its top layer
	// (made for containers of other ID mappings), then down from the top
	// layer while nothing else uses a layer (another image's top, a child
	// not being deleted).
	usedAsTop := map[string]bool{}
	for _, other := range images {
		if other.ID != img.ID {
			usedAsTop[other.TopLayer] = true
			for _, ml := range other.MappedTopLayers {
				usedAsTop[ml] = true
			}
		}
	}
	children := map[string][]string{}
	byID := map[string]*storage.Layer{}
	for i := range layers {
		children[layers[i].Parent] = append(children[layers[i].Parent], layers[i].ID)
		byID[layers[i].ID] = &layers[i]
	}
	deleting := map[string]bool{}
	doomed := slices.Clone(img.MappedTopLayers)
	for _, ml := range doomed {
		deleting[ml] = true
	}
	for id := img.TopLayer; id != ""; {
		l := byID[id]
		if l == nil || l.ReadOnly || usedAsTop[id] {
			break
		}
		parents := []string{id}
		if id == img.TopLayer {
			parents = append(parents, img.MappedTopLayers...)
		}
		kept := false
		for _, p := range parents {
			for _, c := range children[p] {
				kept = kept || !deleting[c]
			}
		}
		if kept {
			break
		}
		deleting[id] = true
		doomed = append(doomed, id)
		id = l.Parent
	}
	var closed []closedDir
	for _, id := range doomed {
		dirs, err := closedDirs(m.layerDir(id))
		if err != nil {
			return restore, fmt.Errorf("layer %s: %w (only the store's user namespace can remove it: use podman rmi)", short(id), err)
		}
		closed = append(closed, dirs...)
	}
	restore = func() {
		for _, d := range closed {
			_ = unix.Chmod(d.path, d.mode) // gone with its layer: ENOENT
		}
	}
	for _, d := range closed {
		if err := unix.Chmod(d.path, d.mode|0o300); err != nil {
			restore()
			return func() {}, fmt.Errorf("opening %s for the removal: %w", d.path, err)
		}
	}
	return restore, nil
}

// layerDir is where the driver keeps a layer's files: under the graph
// root, or under storage.conf's imagestore, where image layers go when
// one is set.
func (m *mutator) layerDir(id string) string {
	var dir string
	for _, root := range []string{m.store.GraphRoot(), m.store.ImageStore()} {
		if root == "" {
			continue
		}
		if m.store.GraphDriverName() == "vfs" {
			dir = filepath.Join(root, "vfs", "dir", id)
		} else {
			dir = filepath.Join(root, m.store.GraphDriverName(), id)
		}
		if _, err := os.Lstat(dir); err == nil {
			break
		}
	}
	return dir
}

// closedDir is a directory of ours that holds entries we may not remove
// yet, and its mode.
type closedDir struct {
	path string
	mode uint32
}

// closedDirs walks the tree at root, which this process is to delete: it
// lists the directories holding entries (root's parent included) that it
// must open (u+wx) first, and fails on one it may not empty at all.
func closedDirs(root string) ([]closedDir, error) {
	euid := uint32(os.Geteuid())
	seen := map[string]bool{}
	var closed []closedDir
	check := func(dir string) error {
		if seen[dir] {
			return nil
		}
		seen[dir] = true
		var st unix.Stat_t
		if err := unix.Lstat(dir, &st); err != nil {
			return err
		}
		writable := unix.Faccessat(unix.AT_FDCWD, dir, unix.W_OK|unix.X_OK, unix.AT_EACCESS) == nil
		switch {
		case st.Uid == euid:
			if !writable {
				closed = append(closed, closedDir{dir, st.Mode & 0o7777})
			}
		case !writable || st.Mode&unix.S_ISVTX != 0:
			return fmt.Errorf("user %d may not empty %s (owned by uid %d, mode %04o): %w", euid, dir, st.Uid, st.Mode&0o7777, syscall.EACCES)
		}
		return nil
	}
	err := filepath.WalkDir(root, func(p string, _ iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return check(filepath.Dir(p))
	})
	if errors.Is(err, iofs.ErrNotExist) {
		return nil, nil // nothing of it on disk
	}
	return closed, err
}
