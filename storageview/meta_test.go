package storageview

import (
	"errors"
	"testing"

	"go.podman.io/storage"

	"github.com/imagefs/imagefs/internal/fixture"
)

// TestMetaOfImageRemovedMeanwhile: an image the index still lists but the
// store has lost (podman rmi between the two) reads as ErrNotFound
// (ENOENT), not as a store error (EIO), whichever read the removal
// overtook: the manifest, or the config read through containers/image.
func TestMetaOfImageRemovedMeanwhile(t *testing.T) {
	s := fixture.NewStore(t, "vfs")
	a := s.Add(t, fixture.Image{Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("a", "a\n")}}}})
	v := openView(t, s)
	img := v.Index().ImageByID(a.ID)
	if img == nil {
		t.Fatal("image not indexed")
	}
	manifest, err := v.store.ImageBigData(a.ID, storage.ImageDigestBigDataKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.store.DeleteImage(a.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := v.loadMeta(img); !errors.Is(err, ErrNotFound) {
		t.Errorf("meta of the removed image: %v, want ErrNotFound", err)
	}
	// Removed after its manifest was read: the config.
	if _, err := v.metaOf(img, manifest); !errors.Is(err, ErrNotFound) {
		t.Errorf("meta of the image removed after its manifest was read: %v, want ErrNotFound", err)
	}
}
