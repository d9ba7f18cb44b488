package storageview

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"

	"go.podman.io/storage"
)

// With transient_store = true containers/storage keeps the containers'
// records in the run root. podman 4.3 does not know the setting (it warns
// and ignores it) and keeps them in the graph root, so for a transient
// store the graph root's records count too: their images are in use, and
// removing them is refused, as podman would refuse it.

// graphRootContainers returns the containers recorded in the graph root of
// a transient store (nil for other stores).
func (v *View) graphRootContainers() []storage.Container {
	if !v.store.TransientStore() {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(v.graphRoot, v.driver+"-containers", "containers.json"))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			v.log.Printf("storageview: reading the graph root's containers: %v", err)
		}
		return nil
	}
	var cs []storage.Container
	if err := json.Unmarshal(b, &cs); err != nil {
		v.log.Printf("storageview: reading the graph root's containers: %v", err)
		return nil
	}
	return cs
}

// withGraphRootContainers adds those containers to the store's own.
func (v *View) withGraphRootContainers(cs []storage.Container) []storage.Container {
	for _, c := range v.graphRootContainers() {
		if !slices.ContainsFunc(cs, func(o storage.Container) bool { return o.ID == c.ID }) {
			cs = append(cs, c)
		}
	}
	return cs
}

// graphRootUsers lists the graph root's containers of a transient store
// that use the image.
func (v *View) graphRootUsers(imageID string) []string {
	var ids []string
	for _, c := range v.graphRootContainers() {
		if c.ImageID == imageID {
			ids = append(ids, c.ID)
		}
	}
	return ids
}
