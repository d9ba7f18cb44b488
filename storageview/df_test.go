package storageview

import (
	"testing"

	digest "github.com/opencontainers/go-digest"
	"go.podman.io/storage"
)

// TestUsageLayerInTwoStores: a layer the writable store and an additional
// store both hold is on disk twice. The writable store's copy goes with
// its last writable image (an image of the read-only store keeps its own
// copy), unless a container uses the layer.
func TestUsageLayerInTwoStores(t *testing.T) {
	layer := func(id, parent string, size int64, ro bool) storage.Layer {
		return storage.Layer{ID: id, Parent: parent, ReadOnly: ro, UncompressedSize: size, UncompressedDigest: digest.FromString(id)}
	}
	layers := []storage.Layer{ // the writable store's first
		layer("shared", "", 100, false), layer("own", "shared", 10, false),
		layer("shared", "", 100, true),
	}
	images := []storage.Image{
		{ID: "rw", TopLayer: "own", Names: []string{"localhost/rw:1"}},
		{ID: "ro", TopLayer: "shared", ReadOnly: true, Names: []string{"localhost/ro:1"}},
	}
	v := &View{}
	for _, tc := range []struct {
		name              string
		containers        []storage.Container
		size, reclaimable int64
	}{
		{"no containers", nil, 210, 110},
		{"a container of the writable image", []storage.Container{{ID: "c", ImageID: "rw", LayerID: "cl"}}, 210, 0},
		{"a container of the read-only image", []storage.Container{{ID: "c", ImageID: "ro", LayerID: "cl"}}, 210, 10},
	} {
		du := v.Usage(buildIndex(1, images, layers, tc.containers, nil))
		if du.Size != tc.size || du.Reclaimable != tc.reclaimable {
			t.Errorf("%s: size %d, reclaimable %d; want %d, %d", tc.name, du.Size, du.Reclaimable, tc.size, tc.reclaimable)
		}
	}
}
