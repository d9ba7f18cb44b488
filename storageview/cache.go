package storageview

import (
	"sync"

	digest "github.com/opencontainers/go-digest"
)

// cache holds what the view derives from the store. Blob-derived data is
// immutable per (image ID, manifest digest) and kept until the image goes;
// documents that also depend on other records (inspect.json's Parent and
// names, history's IDs, df) are kept per index generation.
type cache struct {
	mu        sync.Mutex
	lists     map[string]listEntry  // image ID → is its "manifest" a list
	meta      map[string]*imageMeta // image ID → blobs and parsed config
	docs      map[docKey][]byte     // generation-scoped documents
	docsGen   uint64
	layerSize map[string]int64    // layer ID → size measured on disk (records without a size)
	layerDirs map[string]LayerDir // layer ID → where its files are
	aufs      map[string]bool     // driver home → whiteouts are ".wh." files
}

type listEntry struct {
	digest digest.Digest // of the "manifest" item the answer is for
	isList bool
}

type docKind int

const (
	docInspect docKind = iota
	docHistory
	docLayerInfo
	docDF
)

type docKey struct {
	kind docKind
	id   string
}

func (c *cache) init() {
	c.lists = make(map[string]listEntry)
	c.meta = make(map[string]*imageMeta)
	c.docs = make(map[docKey][]byte)
	c.layerSize = make(map[string]int64)
	c.layerDirs = make(map[string]LayerDir)
	c.aufs = make(map[string]bool)
}

// prune drops what belongs to images and layers no longer in ix, and every
// generation-scoped document.
func (c *cache) prune(ix *Index) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.lists {
		if ix.ImageByID(id) == nil {
			delete(c.lists, id)
		}
	}
	for id := range c.meta {
		if ix.ImageByID(id) == nil {
			delete(c.meta, id)
		}
	}
	for id := range c.layerSize {
		if ix.Layer(id) == nil {
			delete(c.layerSize, id)
		}
	}
	for id := range c.layerDirs {
		if ix.Layer(id) == nil {
			delete(c.layerDirs, id)
		}
	}
	clear(c.docs)
	c.docsGen = ix.Generation
}

// doc returns the cached document for ix's generation.
func (c *cache) doc(gen uint64, k docKey) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.docsGen != gen {
		return nil, false
	}
	b, ok := c.docs[k]
	return b, ok
}

// putDoc records a document made from generation gen (ignored when the
// cache already moved on to another generation).
func (c *cache) putDoc(gen uint64, k docKey, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.docsGen != gen {
		if gen < c.docsGen {
			return
		}
		clear(c.docs)
		c.docsGen = gen
	}
	c.docs[k] = b
}
