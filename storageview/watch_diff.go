package storageview

import (
	"slices"
	"sort"

	digest "github.com/opencontainers/go-digest"
)

// Changes is what differs between two indexes, in the terms of the tree:
// entries of images/, names/, digests/ and layers/ that appeared,
// disappeared or now lead elsewhere, and records whose files changed.
// Every list is sorted.
type Changes struct {
	ImagesAdded, ImagesRemoved []string // image IDs
	// ImagesChanged: images in both whose names, digests, containers or
	// other record fields differ (their names, inspect.json… changed);
	// also those whose inspect.json Parent and history IDs, found among
	// other images, may differ: their layer chain holds the top layer of
	// an image (not a list) that came, went or got another top layer, or
	// they are layerless and so was that image. Lists never depend on
	// others.
	ImagesChanged []string

	// Names: full names ("docker.io/library/alpine:3.19").
	NamesAdded, NamesRemoved []string
	NamesMoved               []string // held by another image than before

	DigestsAdded, DigestsRemoved []digest.Digest
	DigestsMoved                 []digest.Digest // lead to another image than before

	LayersAdded, LayersRemoved []string
	LayersChanged              []string // in both, record or using images differ
}

// Empty reports whether nothing changed.
func (c *Changes) Empty() bool {
	return len(c.ImagesAdded)+len(c.ImagesRemoved)+len(c.ImagesChanged)+
		len(c.NamesAdded)+len(c.NamesRemoved)+len(c.NamesMoved)+
		len(c.DigestsAdded)+len(c.DigestsRemoved)+len(c.DigestsMoved)+
		len(c.LayersAdded)+len(c.LayersRemoved)+len(c.LayersChanged) == 0
}

// Diff compares two indexes (old may be nil: everything in new is added).
func Diff(old, new *Index) *Changes {
	if old == nil {
		old = NewIndex(0, nil, nil)
	}
	if new == nil {
		new = NewIndex(0, nil, nil)
	}
	c := &Changes{}

	moved := movedTopLayers(old, new)
	for _, img := range new.Images {
		o := old.ImageByID(img.ID)
		switch {
		case o == nil:
			c.ImagesAdded = append(c.ImagesAdded, img.ID)
		case !sameImage(o, img) || onMovedTopLayer(img, moved):
			c.ImagesChanged = append(c.ImagesChanged, img.ID)
		}
	}
	for _, img := range old.Images {
		if new.ImageByID(img.ID) == nil {
			c.ImagesRemoved = append(c.ImagesRemoved, img.ID)
		}
	}

	oldNames, newNames := nameOwners(old), nameOwners(new)
	for n, id := range newNames {
		switch oid, ok := oldNames[n]; {
		case !ok:
			c.NamesAdded = append(c.NamesAdded, n)
		case oid != id:
			c.NamesMoved = append(c.NamesMoved, n)
		}
	}
	for n := range oldNames {
		if _, ok := newNames[n]; !ok {
			c.NamesRemoved = append(c.NamesRemoved, n)
		}
	}

	oldDg, newDg := digestOwners(old), digestOwners(new)
	for d, id := range newDg {
		switch oid, ok := oldDg[d]; {
		case !ok:
			c.DigestsAdded = append(c.DigestsAdded, d)
		case oid != id:
			c.DigestsMoved = append(c.DigestsMoved, d)
		}
	}
	for d := range oldDg {
		if _, ok := newDg[d]; !ok {
			c.DigestsRemoved = append(c.DigestsRemoved, d)
		}
	}

	for _, l := range new.Layers {
		o := old.Layer(l.ID)
		switch {
		case o == nil:
			c.LayersAdded = append(c.LayersAdded, l.ID)
		case !sameLayer(o, l):
			c.LayersChanged = append(c.LayersChanged, l.ID)
		}
	}
	for _, l := range old.Layers {
		if new.Layer(l.ID) == nil {
			c.LayersRemoved = append(c.LayersRemoved, l.ID)
		}
	}

	sort.Strings(c.NamesAdded)
	sort.Strings(c.NamesRemoved)
	sort.Strings(c.NamesMoved)
	slices.Sort(c.DigestsAdded)
	slices.Sort(c.DigestsRemoved)
	slices.Sort(c.DigestsMoved)
	// Images and layers come sorted from the indexes.
	return c
}

// movedTopLayers are the top layers ("" for layerless images) that an
// image other than a list gained or lost between old and new: an image
// came or went, or its top layer is another now. The parent (inspect.go)
// and history IDs (history.go) of the images built on them are found
// among the images on those layers.
func movedTopLayers(old, new *Index) map[string]bool {
	moved := map[string]bool{}
	mark := func(img *Image) {
		if img != nil && !img.IsList {
			moved[img.TopLayer] = true
		}
	}
	for _, img := range new.Images {
		if o := old.ImageByID(img.ID); o == nil || o.TopLayer != img.TopLayer || o.IsList != img.IsList {
			mark(o)
			mark(img)
		}
	}
	for _, img := range old.Images {
		if new.ImageByID(img.ID) == nil {
			mark(img)
		}
	}
	return moved
}

// onMovedTopLayer reports whether img (not a list) is built on one of the
// moved top layers: one is in its chain, or both are layerless.
func onMovedTopLayer(img *Image, moved map[string]bool) bool {
	if len(moved) == 0 || img.IsList {
		return false
	}
	if img.TopLayer == "" {
		return moved[""]
	}
	for _, l := range img.Layers {
		if moved[l] {
			return true
		}
	}
	return false
}

// nameOwners maps every name of ix to the image the names/ tree shows for
// it: the index's own name map, by ID.
func nameOwners(ix *Index) map[string]string {
	m := make(map[string]string, len(ix.imageByName))
	for n, img := range ix.imageByName {
		m[n] = img.ID
	}
	return m
}

// digestOwners maps every digest of ix to the image digests/ shows for it.
func digestOwners(ix *Index) map[digest.Digest]string {
	m := make(map[digest.Digest]string, len(ix.imageByDigest))
	for d, img := range ix.imageByDigest {
		if d != "" {
			m[d] = img.ID
		}
	}
	return m
}

func sameImage(a, b *Image) bool {
	return a.Digest == b.Digest && a.TopLayer == b.TopLayer && a.Created.Equal(b.Created) &&
		a.ReadOnly == b.ReadOnly && a.IsList == b.IsList &&
		slices.Equal(a.Names, b.Names) && slices.Equal(a.NamesHistory, b.NamesHistory) &&
		slices.Equal(a.Digests, b.Digests) && slices.Equal(a.Layers, b.Layers) &&
		slices.Equal(a.Containers, b.Containers)
}

func sameLayer(a, b *Layer) bool {
	return a.Parent == b.Parent && a.DiffDigest == b.DiffDigest && a.CompressedDigest == b.CompressedDigest &&
		a.UncompressedSize == b.UncompressedSize && a.CompressedSize == b.CompressedSize &&
		a.Created.Equal(b.Created) && a.ReadOnly == b.ReadOnly && slices.Equal(a.Images, b.Images)
}
