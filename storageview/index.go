// Package storageview is imagefs's only window on containers/storage and
// containers/image: it opens a store, keeps an in-memory Index of its images,
// names, digests and layers, serves the blobs and derived documents
// (inspect.json, history, df) and, later, applies the changes the tree asks for.
//
// The rest of imagefs (nodes/, fs/) sees plain Go values from here and never
// imports the containers libraries itself.
package storageview

import (
	"sort"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// Image is one image record of the store, as the tree shows it.
type Image struct {
	ID           string          // full 64-hex ID
	Names        []string        // in store order, fully qualified ("docker.io/library/alpine:3.19")
	NamesHistory []string        // store's names history, newest first
	Digest       digest.Digest   // the manifest digest (sha256 of the "manifest" big data)
	Digests      []digest.Digest // every manifest digest the store records for the image
	TopLayer     string          // "" for manifest lists
	Layers       []string        // the layer chain, base layer first; empty for manifest lists
	Created      time.Time
	ReadOnly     bool     // from an additional (read-only) image store
	IsList       bool     // a manifest list / OCI index stored as an image
	NoConfig     bool     // no config blob stored: lists, docker schema 1 images
	Containers   []string // IDs of the containers using this image, sorted

	// Filled by the View's rebuild (zero in hand-made indexes):
	recordDigest digest.Digest // the store record's Digest field, as podman reports it
	order        int           // position in the store's own listing (podman's order)
	metaSize     int64         // bytes of the image's big data items (manifests, config, …)
	// copies are the image's other records, in additional stores after
	// the one that supplies it: podman finds their names too.
	copies []imageCopy
}

// imageCopy is another store's record of an image: its names, and where
// containers/storage's lookup meets it.
type imageCopy struct {
	names    []string
	order    int
	readOnly bool
}

// Layer is one layer record of the store.
type Layer struct {
	ID               string
	Parent           string // "" for a base layer
	DiffDigest       digest.Digest
	CompressedDigest digest.Digest
	UncompressedSize int64 // -1 when the store does not know it
	CompressedSize   int64 // -1 when the store does not know it
	Created          time.Time
	Images           []string // IDs of the images whose chain uses this layer, sorted
	ReadOnly         bool     // from an additional (read-only) layer store
	ReadOnlyCopy     bool     // of the writable store, and an additional store holds it too: two copies on disk
}

// Index is an immutable snapshot of the store's records. A new Index is
// built whenever the store changes; nodes keep identities (IDs, names), never
// *Image pointers across operations.
type Index struct {
	Generation uint64   // increases with every rebuild
	Images     []*Image // sorted by ID
	Layers     []*Layer // sorted by ID

	imageByID     map[string]*Image
	imageByName   map[string]*Image
	imageByDigest map[digest.Digest]*Image
	layerByID     map[string]*Layer
	names         *NameDir
	byTopLayer    map[string][]*Image // top layer ID ("" for layerless images) → images, in store order
}

// NameDir is one directory level of names/: a name "quay.io/org/app:1" is
// the directory chain quay.io → org holding the leaf "app:1".
type NameDir struct {
	Dirs   map[string]*NameDir
	Leaves map[string]string // leaf component → image ID
}

// NewIndex builds the lookup maps over images and layers. It sorts both
// slices in place and fills Layer.Images from the images' chains. A name
// or digest several images hold (in the writable and an additional store)
// leads to the image containers/storage finds first (foundBefore).
func NewIndex(generation uint64, images []*Image, layers []*Layer) *Index {
	ix := &Index{
		Generation:    generation,
		Images:        images,
		Layers:        layers,
		imageByID:     make(map[string]*Image, len(images)),
		imageByName:   make(map[string]*Image),
		imageByDigest: make(map[digest.Digest]*Image),
		layerByID:     make(map[string]*Layer, len(layers)),
		names:         newNameDir(),
		byTopLayer:    make(map[string][]*Image),
	}
	sort.Slice(images, func(i, j int) bool { return images[i].ID < images[j].ID })
	sort.Slice(layers, func(i, j int) bool { return layers[i].ID < layers[j].ID })
	for _, l := range layers {
		l.Images = nil
		ix.layerByID[l.ID] = l
	}
	for _, img := range images {
		ix.imageByID[img.ID] = img
		for _, n := range img.Names {
			claim(ix.imageByName, n, img)
		}
		if img.Digest != "" {
			claim(ix.imageByDigest, img.Digest, img)
		}
		for _, lid := range img.Layers {
			if l := ix.layerByID[lid]; l != nil {
				l.Images = append(l.Images, img.ID)
			}
		}
		ix.byTopLayer[img.TopLayer] = append(ix.byTopLayer[img.TopLayer], img)
	}
	// A digest an image recorded once (its manifest was replaced since:
	// a list that got instances, an image copied again in another format)
	// leads to it only when no image's manifest has that digest now: every
	// empty list starts with the same one.
	for _, img := range images {
		for _, d := range img.Digests {
			if held := ix.imageByDigest[d]; held == nil || held.Digest != d {
				claim(ix.imageByDigest, d, img)
			}
		}
	}
	// The names of an image's other copies lead to it too, unless the
	// lookup meets another image of that name first.
	for _, img := range images {
		for _, c := range img.copies {
			at := &Image{ReadOnly: c.readOnly, order: c.order}
			for _, n := range c.names {
				if held := ix.imageByName[n]; held == nil || foundBefore(at, held) {
					ix.imageByName[n] = img
				}
			}
		}
	}
	for n, img := range ix.imageByName {
		ix.names.add(n, img.ID)
	}
	for _, same := range ix.byTopLayer {
		sort.SliceStable(same, func(i, j int) bool { return same[i].order < same[j].order })
	}
	for _, l := range layers {
		sort.Strings(l.Images)
		l.Images = compactStrings(l.Images)
	}
	return ix
}

// claim makes img the image key leads to, unless the image it leads to
// already is found before img (foundBefore).
func claim[K comparable](m map[K]*Image, key K, img *Image) {
	if held := m[key]; held == nil || foundBefore(img, held) {
		m[key] = img
	}
}

// foundBefore reports whether containers/storage's lookup by name or
// digest meets a before b: it walks the writable store, then each
// additional store in configured order (store.Image), and podman and the
// mutator follow it. order is the position in the store's listing, which
// is in that order; ReadOnly settles it for hand-made indexes.
func foundBefore(a, b *Image) bool {
	if a.ReadOnly != b.ReadOnly {
		return !a.ReadOnly
	}
	return a.order < b.order
}

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func newNameDir() *NameDir {
	return &NameDir{Dirs: map[string]*NameDir{}, Leaves: map[string]string{}}
}

func (d *NameDir) add(name, id string) {
	parts := strings.Split(name, "/")
	for _, p := range parts[:len(parts)-1] {
		sub := d.Dirs[p]
		if sub == nil {
			sub = newNameDir()
			d.Dirs[p] = sub
		}
		d = sub
	}
	d.Leaves[parts[len(parts)-1]] = id
}

// ImageByID returns the image with exactly this full ID.
func (ix *Index) ImageByID(id string) *Image { return ix.imageByID[id] }

// ImageByName returns the image holding exactly this stored name.
func (ix *Index) ImageByName(name string) *Image { return ix.imageByName[name] }

// ImageByDigest returns the image holding this manifest digest.
func (ix *Index) ImageByDigest(d digest.Digest) *Image { return ix.imageByDigest[d] }

// ManifestHolders lists the images whose manifest has digest d now (their
// Digest). Only manifest lists can share one (images with one manifest
// have one config, so one ID): lists of the same instances, every empty
// list.
func (ix *Index) ManifestHolders(d digest.Digest) []*Image {
	var out []*Image
	for _, img := range ix.Images {
		if img.Digest == d {
			out = append(out, img)
		}
	}
	return out
}

// ImagesByTopLayer returns the images whose top layer is layerID ("" for
// images without layers), in the store's own order. The slice is shared.
func (ix *Index) ImagesByTopLayer(layerID string) []*Image { return ix.byTopLayer[layerID] }

// Layer returns the layer with this full ID.
func (ix *Index) Layer(id string) *Layer { return ix.layerByID[id] }

// MinIDPrefix is the shortest ID prefix that ResolveIDPrefix accepts, as podman.
const MinIDPrefix = 3

// ResolveIDPrefix finds the one image whose ID starts with prefix. It returns
// nil and the candidate IDs when the prefix is ambiguous, nil and no
// candidates when nothing matches or the prefix is not lower-case hex of at
// least MinIDPrefix characters.
func (ix *Index) ResolveIDPrefix(prefix string) (*Image, []string) {
	matches := withPrefix(len(ix.Images), func(i int) string { return ix.Images[i].ID }, prefix)
	if len(matches) == 1 {
		return ix.imageByID[matches[0]], nil
	}
	return nil, matches
}

// ResolveLayerPrefix is ResolveIDPrefix for layer IDs.
func (ix *Index) ResolveLayerPrefix(prefix string) (*Layer, []string) {
	matches := withPrefix(len(ix.Layers), func(i int) string { return ix.Layers[i].ID }, prefix)
	if len(matches) == 1 {
		return ix.layerByID[matches[0]], nil
	}
	return nil, matches
}

// withPrefix returns those of n sorted IDs that start with prefix; none
// when prefix is not lower-case hex of MinIDPrefix to 64 characters.
func withPrefix(n int, id func(i int) string, prefix string) []string {
	if len(prefix) < MinIDPrefix || len(prefix) > 64 || !isLowerHex(prefix) {
		return nil
	}
	var matches []string
	for i := sort.Search(n, func(i int) bool { return id(i) >= prefix }); i < n && strings.HasPrefix(id(i), prefix); i++ {
		matches = append(matches, id(i))
	}
	return matches
}

func isLowerHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// NameDir returns the names/ directory at path (components without
// slashes; nil or empty for names/ itself), or nil if there is none.
func (ix *Index) NameDir(path []string) *NameDir {
	d := ix.names
	for _, p := range path {
		if d = d.Dirs[p]; d == nil {
			return nil
		}
	}
	return d
}
