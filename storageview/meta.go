package storageview

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/manifest"
	istorage "go.podman.io/image/v5/storage"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage"
)

// imageMeta is what an image's blobs say, read once per (image ID,
// manifest digest): the blobs are immutable for a given digest.
type imageMeta struct {
	digest       digest.Digest // the manifest digest this was read for
	manifest     []byte        // the "manifest" item as stored
	mimeType     string        // guessed from the manifest, as containers/image does
	configDigest digest.Digest // "" for lists (and schema1 images)
	config       []byte        // the config blob as stored; nil for lists

	// Images (not lists): the config as podman reads it.
	oci         *imgspecv1.Image // OCIConfig: docker configs converted as podman does
	info        *types.ImageInspectInfo
	comment     string
	annotations map[string]string
	health      *manifest.Schema2HealthConfig
	ociErr      error // why oci/info could not be read

	// Lists.
	instances []Instance
}

// isList tells whether the image's "manifest" item is a manifest list or
// image index. Used while building an index, for layerless images only.
func (v *View) isList(si *storage.Image) bool {
	d := si.BigDataDigests[storage.ImageDigestBigDataKey]
	v.cache.mu.Lock()
	e, ok := v.cache.lists[si.ID]
	v.cache.mu.Unlock()
	if ok && e.digest == d && d != "" {
		return e.isList
	}
	blob, err := v.store.ImageBigData(si.ID, storage.ImageDigestBigDataKey)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			v.log.Printf("storageview: image %s: reading its manifest: %v", short(si.ID), err)
		}
		return false
	}
	is := manifest.MIMETypeIsMultiImage(manifest.GuessMIMEType(blob))
	v.cache.mu.Lock()
	v.cache.lists[si.ID] = listEntry{digest: d, isList: is}
	v.cache.mu.Unlock()
	return is
}

// image resolves an ID in the current index.
func (v *View) image(id string) (*Index, *Image, error) {
	if v.closed.Load() {
		return nil, nil, errClosed
	}
	ix := v.Index()
	img := ix.ImageByID(id)
	if img == nil {
		return ix, nil, fmt.Errorf("image %q: %w", id, ErrNotFound)
	}
	return ix, img, nil
}

// meta returns the image's blob-derived data, reading it on first use.
func (v *View) meta(img *Image) (*imageMeta, error) {
	v.cache.mu.Lock()
	m := v.cache.meta[img.ID]
	v.cache.mu.Unlock()
	if m != nil && m.digest == img.Digest {
		return m, nil
	}
	m, err := v.loadMeta(img)
	if err != nil {
		return nil, err
	}
	if m.config == nil && m.configDigest != "" {
		return m, nil // a config the store lacks (Config): read again next time, it may be restored
	}
	v.cache.mu.Lock()
	v.cache.meta[img.ID] = m
	v.cache.mu.Unlock()
	return m, nil
}

func (v *View) loadMeta(img *Image) (*imageMeta, error) {
	blob, err := v.store.ImageBigData(img.ID, storage.ImageDigestBigDataKey)
	if err != nil {
		if errors.Is(err, storage.ErrImageUnknown) {
			return nil, removedMeanwhile(img)
		}
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("image %s has no manifest: %w", short(img.ID), ErrNotFound)
		}
		return nil, fmt.Errorf("reading the manifest of image %s: %w", short(img.ID), err)
	}
	return v.metaOf(img, blob)
}

// metaOf reads the rest of what images/<id>/ shows of img, whose manifest
// is blob.
func (v *View) metaOf(img *Image, blob []byte) (*imageMeta, error) {
	m := &imageMeta{digest: img.Digest, manifest: blob, mimeType: manifest.GuessMIMEType(blob)}
	if img.IsList {
		list, err := manifest.ListFromBlob(blob, m.mimeType)
		if err != nil {
			return nil, fmt.Errorf("parsing the manifest list of image %s: %w", short(img.ID), err)
		}
		for _, d := range list.Instances() {
			u, err := list.Instance(d)
			if err != nil {
				return nil, fmt.Errorf("manifest list of image %s: instance %s: %w", short(img.ID), d, err)
			}
			in := Instance{Digest: d}
			if p := u.ReadOnly.Platform; p != nil {
				in.OS, in.Arch, in.Variant = p.OS, p.Architecture, p.Variant
			}
			m.instances = append(m.instances, in)
		}
		if m.mimeType == imgspecv1.MediaTypeImageIndex {
			var index imgspecv1.Index
			if err := json.Unmarshal(blob, &index); err == nil {
				m.annotations = index.Annotations
			}
		}
		return m, nil
	}

	if man, err := manifest.FromBlob(blob, m.mimeType); err == nil {
		m.configDigest = man.ConfigInfo().Digest
	}
	if m.configDigest != "" {
		cfg, err := v.store.ImageBigData(img.ID, m.configDigest.String())
		if errors.Is(err, storage.ErrImageUnknown) {
			return nil, removedMeanwhile(img)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("reading the config of image %s: %w", short(img.ID), err)
		}
		m.config = cfg
	}
	m.ociErr = v.loadConfig(img, m)
	if errors.Is(m.ociErr, storage.ErrImageUnknown) {
		return nil, removedMeanwhile(img)
	}
	return m, nil
}

// removedMeanwhile is the error for an image the index still had but the
// store no longer has (removed between the two): ENOENT, as for an image
// the index knows to be gone, never kept in the cache.
func removedMeanwhile(img *Image) error {
	return fmt.Errorf("image %s was removed meanwhile: %w", short(img.ID), ErrNotFound)
}

// loadConfig reads the image the way podman's libimage does (through the
// containers-storage transport): Inspect, OCIConfig, and the raw config
// for docker-format comment and healthcheck. Docker schema 1 images have
// no config (podman leaves both empty for them).
func (v *View) loadConfig(img *Image, m *imageMeta) error {
	ctx := context.Background()
	ref, err := istorage.Transport.NewStoreReference(v.store, nil, img.ID)
	if err != nil {
		return err
	}
	src, err := ref.NewImage(ctx, nil)
	if err != nil {
		return err
	}
	defer src.Close()
	if m.info, err = src.Inspect(ctx); err != nil {
		return err
	}
	if m.oci, err = src.OCIConfig(ctx); err != nil {
		return err
	}
	switch m.mimeType {
	case imgspecv1.MediaTypeImageManifest:
		var om imgspecv1.Manifest
		if err := json.Unmarshal(m.manifest, &om); err != nil {
			return err
		}
		m.annotations = om.Annotations
		if len(m.oci.History) > 0 {
			m.comment = m.oci.History[0].Comment
		}
	case manifest.DockerV2Schema2MediaType:
		var dc manifest.Schema2V1Image
		if err := json.Unmarshal(m.config, &dc); err != nil {
			return err
		}
		m.comment = dc.Comment
		m.health = dc.ContainerConfig.Healthcheck
		if m.health == nil && dc.Config != nil {
			m.health = dc.Config.Healthcheck
		}
	}
	return nil
}

// Manifest returns the image's "manifest" item exactly as stored (for a
// manifest list, the list).
func (v *View) Manifest(imageID string) ([]byte, error) {
	_, img, err := v.image(imageID)
	if err != nil {
		return nil, err
	}
	m, err := v.meta(img)
	if err != nil {
		return nil, err
	}
	return m.manifest, nil
}

// Config returns the config blob exactly as stored (the big data item
// named by the manifest's config digest). Lists have none: ErrNotFound.
func (v *View) Config(imageID string) ([]byte, error) {
	_, img, err := v.image(imageID)
	if err != nil {
		return nil, err
	}
	if img.IsList {
		return nil, fmt.Errorf("image %s is a manifest list, it has no config: %w", short(imageID), ErrNotFound)
	}
	m, err := v.meta(img)
	if err != nil {
		return nil, err
	}
	switch {
	case m.config == nil && m.configDigest != "": // a damaged store, not an image without one
		return nil, fmt.Errorf("image %s: its manifest's config %s is not in the store", short(imageID), m.configDigest)
	case m.config == nil:
		return nil, fmt.Errorf("image %s: no config stored: %w", short(imageID), ErrNotFound)
	}
	return m.config, nil
}

// Instances returns a manifest list's entries in list order. For an image
// that is not a list it returns ErrNotFound.
func (v *View) Instances(imageID string) ([]Instance, error) {
	_, img, err := v.image(imageID)
	if err != nil {
		return nil, err
	}
	if !img.IsList {
		return nil, fmt.Errorf("image %s is not a manifest list: %w", short(imageID), ErrNotFound)
	}
	m, err := v.meta(img)
	if err != nil {
		return nil, err
	}
	return m.instances, nil
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
