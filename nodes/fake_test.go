package nodes

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/imagefs/imagefs/storageview"
)

// fakeStore is a Store over an in-memory Index and byte maps, for unit
// tests of the node logic. Blobs of an image that is not in the current
// index are ErrNotFound, as with the real view.
type fakeStore struct {
	mu     sync.Mutex
	gen    uint64
	ix     *storageview.Index
	images []*storageview.Image
	layers []*storageview.Layer

	manifests map[string][]byte
	configs   map[string][]byte
	inspect   map[string][]byte
	history   map[string][]byte
	instances map[string][]storageview.Instance
	layerInfo map[string][]byte
	df        []byte
	fail      map[string]error // "history:<id>" → error returned

	reads map[string]int // "manifest:<id>" → number of calls

	changes chan [2]*storageview.Index // to the subscribers, once there are any
	subs    []func(old, new *storageview.Index)
}

// subscribable is a fakeStore that tells subscribers of its changes as
// storageview.View does: after the change, one at a time, from a
// goroutine of its own.
type subscribable struct{ *fakeStore }

func (s subscribable) Subscribe(fn func(old, new *storageview.Index)) (cancel func()) {
	f := s.fakeStore
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs = append(f.subs, fn)
	if f.changes == nil {
		f.changes = make(chan [2]*storageview.Index, 1000)
		go func() {
			for c := range f.changes {
				f.mu.Lock()
				subs := f.subs
				f.mu.Unlock()
				for _, fn := range subs {
					fn(c[0], c[1])
				}
			}
		}()
	}
	return func() {}
}

func newFakeStore() *fakeStore {
	f := &fakeStore{
		manifests: map[string][]byte{},
		configs:   map[string][]byte{},
		inspect:   map[string][]byte{},
		history:   map[string][]byte{},
		instances: map[string][]storageview.Instance{},
		layerInfo: map[string][]byte{},
		fail:      map[string]error{},
		reads:     map[string]int{},
		df:        []byte("IMAGES 0\n"),
	}
	f.rebuild()
	return f
}

// rebuild makes a new Index from images and layers (copies, so that
// tests may keep editing their records).
func (f *fakeStore) rebuild() {
	f.gen++
	imgs := make([]*storageview.Image, len(f.images))
	for i, img := range f.images {
		c := *img
		imgs[i] = &c
	}
	ls := make([]*storageview.Layer, len(f.layers))
	for i, l := range f.layers {
		c := *l
		ls[i] = &c
	}
	old := f.ix
	f.ix = storageview.NewIndex(f.gen, imgs, ls)
	if f.changes != nil {
		f.changes <- [2]*storageview.Index{old, f.ix}
	}
}

// addLayer adds a layer on top of parent ("" for a base layer).
func (f *fakeStore) addLayer(seed, parent string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := hexID("layer:" + seed)
	f.layers = append(f.layers, &storageview.Layer{
		ID: id, Parent: parent,
		DiffDigest:       digest.FromString("diff:" + seed),
		UncompressedSize: 100, CompressedSize: 50,
		Created: time.Unix(1700000000, 0).UTC(),
	})
	f.layerInfo[id] = fmt.Appendf(nil, "{\"id\":%q,\"parent\":%q}\n", id, parent)
	f.rebuild()
	return id
}

// addImage adds an image with the given chain and names; its ID is the
// sha256 of its config and its digest the sha256 of its manifest, as in
// a real store.
func (f *fakeStore) addImage(seed string, layers []string, names ...string) *storageview.Image {
	config := fmt.Appendf(nil, "{\"config\":%q}\n", seed)
	manifest := fmt.Appendf(nil, "{\"schemaVersion\":2,\"seed\":%q}\n", seed)
	img := &storageview.Image{
		ID:      hexOf(config),
		Names:   names,
		Digest:  digest.FromBytes(manifest),
		Layers:  layers,
		Created: time.Unix(1700000000+int64(len(f.images)), 0).UTC(),
	}
	img.Digests = []digest.Digest{img.Digest}
	if len(layers) > 0 {
		img.TopLayer = layers[len(layers)-1]
	}
	f.put(img, manifest, config)
	return img
}

// addList adds a manifest list with these instances.
func (f *fakeStore) addList(seed string, inst []storageview.Instance, names ...string) *storageview.Image {
	manifest := fmt.Appendf(nil, "{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"seed\":%q}\n", seed)
	img := &storageview.Image{
		ID:      hexID("list:" + seed),
		Names:   names,
		Digest:  digest.FromBytes(manifest),
		IsList:  true,
		Created: time.Unix(1710000000, 0).UTC(),
	}
	img.Digests = []digest.Digest{img.Digest}
	f.mu.Lock()
	f.instances[img.ID] = inst
	f.mu.Unlock()
	f.put(img, manifest, nil)
	return img
}

// put stores img with exactly these blobs (config nil for a list).
func (f *fakeStore) put(img *storageview.Image, manifest, config []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images = append(f.images, img)
	f.manifests[img.ID] = manifest
	if config != nil {
		f.configs[img.ID] = config
		f.history[img.ID] = fmt.Appendf(nil, "history of %s\n", img.ID)
	}
	f.inspect[img.ID] = fmt.Appendf(nil, "{\"Id\":%q,\"RepoTags\":%q}\n", img.ID, img.Names)
	f.rebuild()
}

// edit changes the image id's record and rebuilds the index.
func (f *fakeStore) edit(id string, change func(img *storageview.Image)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, img := range f.images {
		if img.ID == id {
			change(img)
			f.inspect[img.ID] = fmt.Appendf(nil, "{\"Id\":%q,\"RepoTags\":%q}\n", img.ID, img.Names)
		}
	}
	f.rebuild()
}

// remove takes the image out of the store.
func (f *fakeStore) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.images[:0]
	for _, img := range f.images {
		if img.ID != id {
			out = append(out, img)
		}
	}
	f.images = out
	f.rebuild()
}

func (f *fakeStore) Index() *storageview.Index {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ix
}

func (f *fakeStore) blob(kind, id string, m map[string][]byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads[kind+":"+id]++
	if err := f.fail[kind+":"+id]; err != nil {
		return nil, err
	}
	if f.ix.ImageByID(id) == nil && f.ix.Layer(id) == nil {
		return nil, storageview.ErrNotFound
	}
	b, ok := m[id]
	if !ok {
		return nil, storageview.ErrNotFound
	}
	return b, nil
}

func (f *fakeStore) Manifest(id string) ([]byte, error)    { return f.blob("manifest", id, f.manifests) }
func (f *fakeStore) Config(id string) ([]byte, error)      { return f.blob("config", id, f.configs) }
func (f *fakeStore) InspectJSON(id string) ([]byte, error) { return f.blob("inspect", id, f.inspect) }
func (f *fakeStore) History(id string) ([]byte, error)     { return f.blob("history", id, f.history) }
func (f *fakeStore) LayerInfoJSON(id string) ([]byte, error) {
	return f.blob("layerinfo", id, f.layerInfo)
}

func (f *fakeStore) Instances(id string) ([]storageview.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads["instances:"+id]++
	inst, ok := f.instances[id]
	if !ok || f.ix.ImageByID(id) == nil {
		return nil, storageview.ErrNotFound
	}
	return inst, nil
}

func (f *fakeStore) DF() ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads["df"]++
	return f.df, nil
}

func (f *fakeStore) LayerDirs(id string) ([]storageview.LayerDir, error) {
	return nil, storageview.ErrNotFound
}

func (f *fakeStore) Statfs(st *syscall.Statfs_t) error { return syscall.Statfs(os.TempDir(), st) }

func (f *fakeStore) readCount(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads[key]
}

func hexOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func hexID(seed string) string { return hexOf([]byte(seed)) }
