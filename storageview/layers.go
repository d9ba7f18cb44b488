package storageview

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.podman.io/storage/pkg/unshare"
)

// layerSize is the layer's size as containers/storage counts it: the
// recorded uncompressed size when the record has one (with its digest),
// else the size of its files on disk, measured once.
func (v *View) layerSize(l *Layer) int64 {
	if l.UncompressedSize >= 0 {
		return l.UncompressedSize
	}
	v.cache.mu.Lock()
	n, ok := v.cache.layerSize[l.ID]
	v.cache.mu.Unlock()
	if ok || v.closed.Load() {
		return n
	}
	n, err := v.store.DiffSize("", l.ID)
	if err != nil {
		v.log.Printf("storageview: layer %s: measuring its size: %v (counting 0)", short(l.ID), err)
		n = 0
	}
	v.cache.mu.Lock()
	v.cache.layerSize[l.ID] = n
	v.cache.mu.Unlock()
	return n
}

// imageSize is containers/storage's ImageSize: every layer of the chain
// once, plus the image's big data items (manifests, config, signatures).
func (v *View) imageSize(ix *Index, img *Image) int64 {
	n := img.metaSize
	for _, id := range img.Layers {
		if l := ix.Layer(id); l != nil {
			n += v.layerSize(l)
		}
	}
	return n
}

type layerInfo struct {
	ID                   string   `json:"id"`
	Parent               string   `json:"parent"`
	DiffDigest           string   `json:"diff-digest"`
	CompressedDiffDigest string   `json:"compressed-diff-digest"`
	UncompressedSize     int64    `json:"uncompressed-size"`
	CompressedSize       int64    `json:"compressed-size"`
	Created              string   `json:"created"`
	Images               []string `json:"images"`
}

// LayerInfoJSON returns layers/<id>/info.json: the layer's record (sizes
// -1 when the store does not know them; parent and digests "" when absent)
// and the IDs of the images whose chain uses it, indented, with a trailing
// newline.
func (v *View) LayerInfoJSON(layerID string) ([]byte, error) {
	ix := v.Index()
	l := ix.Layer(layerID)
	if l == nil {
		return nil, fmt.Errorf("layer %q: %w", layerID, ErrNotFound)
	}
	k := docKey{docLayerInfo, l.ID}
	if b, ok := v.cache.doc(ix.Generation, k); ok {
		return b, nil
	}
	li := layerInfo{
		ID:                   l.ID,
		Parent:               l.Parent,
		DiffDigest:           l.DiffDigest.String(),
		CompressedDiffDigest: l.CompressedDigest.String(),
		UncompressedSize:     l.UncompressedSize,
		CompressedSize:       l.CompressedSize,
		Created:              l.Created.UTC().Format(time.RFC3339Nano),
		Images:               l.Images,
	}
	if li.Images == nil {
		li.Images = []string{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(li); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	v.cache.putDoc(ix.Generation, k, b)
	return b, nil
}

// LayerDirs returns where the image's layers keep their files, base first
// (none for a manifest list).
func (v *View) LayerDirs(imageID string) ([]LayerDir, error) {
	_, img, err := v.image(imageID)
	if err != nil {
		return nil, err
	}
	dirs := make([]LayerDir, 0, len(img.Layers))
	for _, id := range img.Layers {
		d, err := v.LayerDir(id)
		if err != nil {
			return nil, err
		}
		dirs = append(dirs, d)
	}
	return dirs, nil
}

// LayerChainDirs returns the directories of layerID's chain, base first,
// ending with the layer itself.
func (v *View) LayerChainDirs(layerID string) ([]LayerDir, error) {
	ix := v.Index()
	var chain []string
	for id := layerID; id != ""; {
		l := ix.Layer(id)
		if l == nil {
			return nil, fmt.Errorf("layer %q: %w", id, ErrNotFound)
		}
		if len(chain) > len(ix.Layers) {
			return nil, fmt.Errorf("layer %s: parent chain loops", short(layerID))
		}
		chain = append(chain, id)
		id = l.Parent
	}
	dirs := make([]LayerDir, len(chain))
	for i, id := range chain {
		d, err := v.LayerDir(id)
		if err != nil {
			return nil, err
		}
		dirs[len(chain)-1-i] = d
	}
	return dirs, nil
}

// LayerDir returns where the layer keeps its files, found the way the
// graph driver finds them (its own home first, then the image store and
// the additional image stores), without mounting anything:
// overlay <root>/overlay/<id>/diff (the layer's own changes), vfs
// <root>/vfs/dir/<id> (the whole tree up to this layer, Full).
func (v *View) LayerDir(layerID string) (LayerDir, error) {
	v.cache.mu.Lock()
	d, ok := v.cache.layerDirs[layerID]
	v.cache.mu.Unlock()
	// The graph root's copy of a layer an additional store also has can
	// go (podman rmi of the writable store's image) while the layer stays.
	if _, err := os.Stat(d.Path); ok && err == nil {
		return d, nil
	}
	if v.Index().Layer(layerID) == nil {
		return LayerDir{}, fmt.Errorf("layer %q: %w", layerID, ErrNotFound)
	}
	roots := append(v.writableRoots(), v.roRoots...)
	d = LayerDir{ID: layerID}
	var tried []string
	for _, r := range roots {
		var p string
		switch v.driver {
		case "overlay":
			p = filepath.Join(r, "overlay", layerID, "diff")
		case "vfs":
			p = filepath.Join(r, "vfs", "dir", layerID)
			d.Full = true
		default:
			return LayerDir{}, fmt.Errorf("layer %s: the %s driver's layer directories are not known to imagefs", short(layerID), v.driver)
		}
		fi, err := os.Stat(p)
		if err != nil {
			tried = append(tried, p)
			continue
		}
		if !fi.IsDir() {
			return LayerDir{}, fmt.Errorf("layer %s: %s is not a directory", short(layerID), p)
		}
		d.Path = p
		if v.driver == "overlay" {
			d.AUFSWhiteouts = v.usesMountProgram(filepath.Join(r, "overlay"))
			d.UserXattr = !d.AUFSWhiteouts && kernelUserXattr()
			d.NativeDiff = !d.AUFSWhiteouts && v.nativeDiff()
		}
		break
	}
	if d.Path == "" {
		return LayerDir{}, fmt.Errorf("layer %s: no directory (looked at %s): %w", short(layerID), strings.Join(tried, ", "), os.ErrNotExist)
	}
	v.cache.mu.Lock()
	v.cache.layerDirs[layerID] = d
	v.cache.mu.Unlock()
	return d, nil
}

// usesMountProgram tells whether the overlay driver home records that it
// is used with a mount program (fuse-overlayfs), in which case layers keep
// whiteouts as ".wh." files: the driver's own ".has-mount-program" flag.
func (v *View) usesMountProgram(home string) bool {
	v.cache.mu.Lock()
	is, ok := v.cache.aufs[home]
	v.cache.mu.Unlock()
	if ok {
		return is
	}
	b, err := os.ReadFile(filepath.Join(home, ".has-mount-program"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		v.log.Printf("storageview: %s: reading the mount program flag: %v", home, err)
	}
	is = strings.TrimSpace(string(b)) == "true"
	v.cache.mu.Lock()
	v.cache.aufs[home] = is
	v.cache.mu.Unlock()
	return is
}

// nativeDiff tells whether the overlay driver diffs layers natively
// (Driver.useNaiveDiff false): as it recorded under the run root
// ("native-diff(<mount options>)-true" or "-false" in <runroot>/overlay)
// when it checked; without a record, as its check would find: not when
// the kernel's overlayfs makes redirects or metacopy by default.
func (v *View) nativeDiff() bool {
	v.nativeOnce.Do(func() {
		home := filepath.Join(v.store.RunRoot(), "overlay")
		if f, _ := filepath.Glob(filepath.Join(home, "native-diff(*)-false")); len(f) > 0 {
			return
		}
		if f, _ := filepath.Glob(filepath.Join(home, "native-diff(*)-true")); len(f) > 0 {
			v.native = true
			return
		}
		for _, p := range []string{"redirect_dir", "metacopy"} {
			if b, err := os.ReadFile("/sys/module/overlay/parameters/" + p); err == nil && strings.TrimSpace(string(b)) == "Y" {
				return
			}
		}
		v.native = true
	})
	return v.native
}

// kernelUserXattr tells whether the overlay driver, run by this process,
// mounts layers with the kernel's overlayfs "userxattr" option when the
// store has no mount program: drivers/overlay adds it exactly when
// unshare.IsRootless() (Driver.get), and the store records it nowhere.
// Such a mount honours user.overlay.opaque, not trusted.overlay.opaque,
// and hides user.overlay.* instead of trusted.overlay.* (the layers of a
// rootless store are written with user.overlay.* markers for the same
// reason: archive.GetOverlayXattrName).
func kernelUserXattr() bool { return unshare.IsRootless() }

// MountImage mounts the image read-only through the store (for rootfs/
// when its layers cannot be read directly) and returns the mount point.
// Every MountImage needs an UnmountImage; Close unmounts what is left.
func (v *View) MountImage(imageID string) (string, error) {
	if _, _, err := v.image(imageID); err != nil {
		return "", err
	}
	v.mountsMu.Lock()
	defer v.mountsMu.Unlock()
	dir, err := v.store.MountImage(imageID, []string{"ro"}, "")
	if err != nil {
		return "", fmt.Errorf("mounting image %s: %w", short(imageID), err)
	}
	if v.ourMounts == nil {
		v.ourMounts = make(map[string]int)
	}
	v.ourMounts[imageID]++
	return dir, nil
}

// UnmountImage undoes one MountImage (after Close there is nothing left
// to undo: Close unmounted everything).
func (v *View) UnmountImage(imageID string) error {
	if v.closed.Load() {
		return nil
	}
	v.mountsMu.Lock()
	defer v.mountsMu.Unlock()
	if v.ourMounts[imageID] == 0 {
		return fmt.Errorf("unmounting image %s: not mounted by imagefs", short(imageID))
	}
	if _, err := v.store.UnmountImage(imageID, false); err != nil {
		return fmt.Errorf("unmounting image %s: %w", short(imageID), err)
	}
	if v.ourMounts[imageID]--; v.ourMounts[imageID] == 0 {
		delete(v.ourMounts, imageID)
	}
	return nil
}

// unmountOurs undoes every MountImage still standing (at Close).
func (v *View) unmountOurs() {
	v.mountsMu.Lock()
	defer v.mountsMu.Unlock()
	for id, n := range v.ourMounts {
		for ; n > 0; n-- {
			if _, err := v.store.UnmountImage(id, false); err != nil {
				v.log.Printf("imagefs: unmounting image %s at close: %v", short(id), err)
				break
			}
		}
		delete(v.ourMounts, id)
	}
}
