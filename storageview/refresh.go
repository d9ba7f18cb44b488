package storageview

import (
	"slices"
	"sort"
	"time"

	digest "github.com/opencontainers/go-digest"
	"go.podman.io/storage"
)

// checkInterval is how long an Index is served without looking at the
// store: at most one change check per interval, whatever the call rate.
const checkInterval = 50 * time.Millisecond

var monoStart = time.Now()

// nanotime is a monotonic clock in nanoseconds.
func nanotime() int64 { return int64(time.Since(monoStart)) }

// rebuildWait bounds how long a caller waits for another caller's check
// or rebuild before it is served the current index instead. A rebuild
// takes milliseconds, unless it waits for the store's locks, which podman
// holds for as long as a pull or an import writes: every request of the
// mount would wait with it.
const rebuildWait = 100 * time.Millisecond

// ownChangeLockWait bounds how long a caller after Invalidate waits for the
// store's records to be free to read: our own change must show, but the
// process holding them may be the caller (podman with its working
// directory in the mount), which would wait for itself.
const ownChangeLockWait = time.Second

// Index returns the current snapshot. At most once per checkInterval it
// reads the last-writer tokens of the store's lock files (a few preads) and
// rebuilds the index when a writer — podman, buildah, imagefs itself —
// changed images, layers or containers since. Concurrent callers wait for
// one rebuild rather than doing their own, for at most rebuildWait (then
// they get the current index). After Invalidate the next call rebuilds
// without waiting for the interval, and waits for a rebuild under way (our
// own change must show), up to a bound. While another process holds the
// records locked for writing there is no rebuild (recordsFree).
func (v *View) Index() *Index {
	if v.fresh() {
		return v.cur.Load()
	}
	if !v.lockRefresh() {
		return v.cur.Load()
	}
	defer v.refreshMu.Unlock()
	if v.closed.Load() || v.fresh() {
		return v.cur.Load() // closed, or refreshed while we waited
	}
	// Read the invalidation count before the store: a change invalidated
	// after this point makes the next caller check again.
	seq := v.invalidated.Load()
	own := seq != v.built.Load()
	changed := v.watch.changed() || own
	if changed && v.locksUsable() == nil && !v.recordsFree(own) {
		// Another process writes the records: reading them would wait
		// for it in a FUSE request, and it may be the caller, which then
		// never gets its answer. Check again next time.
		v.watch.forget()
		v.lastCheck.Store(nanotime())
		return v.cur.Load()
	}
	if changed {
		v.rebuild()
	}
	v.built.Store(seq)
	v.lastCheck.Store(nanotime())
	return v.cur.Load()
}

// lockRefresh takes refreshMu for a check, waiting for one under way for
// at most rebuildWait since that one began, or longer after an
// Invalidate (false: not taken).
func (v *View) lockRefresh() bool {
	for !v.refreshMu.TryLock() {
		limit := rebuildWait
		if v.invalidated.Load() != v.built.Load() {
			limit = 2 * ownChangeLockWait
		}
		if nanotime()-v.checkStart.Load() > int64(limit) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	v.checkStart.Store(nanotime())
	return true
}

// recordsFree reports whether no other process holds the store's records
// locked for writing; after our own change (own) it waits up to
// ownChangeLockWait for them to be.
func (v *View) recordsFree(own bool) bool {
	deadline := time.Now().Add(ownChangeLockWait)
	for v.probe.busy() {
		if !own || time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// fresh reports whether the current index may be served without looking
// at the store: no Invalidate since it was built, and checked recently.
func (v *View) fresh() bool {
	return v.invalidated.Load() == v.built.Load() && nanotime()-v.lastCheck.Load() < int64(checkInterval)
}

// expireCheck makes the next Index call read the store's last-writer
// tokens now instead of after the interval; it rebuilds only if they moved.
func (v *View) expireCheck() { v.lastCheck.Store(nanotime() - int64(checkInterval)) }

// Invalidate makes the next Index call rebuild from the store (used after
// imagefs's own changes, which must be visible at once). An Index call
// that starts after Invalidate returns never serves an older index, even
// while another caller's rebuild is under way.
func (v *View) Invalidate() { v.invalidated.Add(1) }

// rebuild replaces the current index; the caller holds refreshMu. A new
// generation is published only when the records differ from the current
// index's, so unrelated writes (a container's state, a mount) do not make
// the tree drop its caches. On error the current index stays and the next
// check tries again.
func (v *View) rebuild() {
	v.rebuilds++
	ix, err := v.build(v.gen + 1)
	if err != nil {
		// Once per error: the next checks try again, and may fail alike.
		if msg := err.Error(); msg != v.lastBuildErr {
			v.lastBuildErr = msg
			v.log.Printf("storageview: re-reading the store at %s: %v (keeping the previous index)", v.graphRoot, err)
		}
		v.watch.forget()
		return
	}
	v.lastBuildErr = ""
	if sameRecords(v.cur.Load(), ix) {
		return
	}
	v.gen++
	v.cur.Store(ix)
	v.cache.prune(ix)
}

// build reads the store's records (one MultiList: images, layers and
// containers of the primary and additional stores, under their locks) and
// makes an Index of generation gen.
func (v *View) build(gen uint64) (*Index, error) {
	gone := v.recordsGone()
	v.storeGone.Store(gone)
	if gone {
		return buildIndex(gen, nil, nil, nil, v.isList), nil
	}
	if err := v.locksUsable(); err != nil {
		return nil, err
	}
	res, err := v.store.MultiList(storage.MultiListOptions{Images: true, Layers: true, Containers: true})
	if err != nil {
		return nil, err
	}
	return buildIndex(gen, res.Images, res.Layers, v.withGraphRootContainers(res.Containers), v.isList), nil
}

// recordsGone reports whether the last check found the lock files of the
// store's images or layers deleted: the store is being removed (podman
// system reset removes the graph root after its last write) or was. Then
// the store has no images, and it must not be read: containers/storage
// would create its lock files again and mount the driver's home again,
// under the remover, whose removal then fails with EBUSY.
func (v *View) recordsGone() bool {
	return v.watch.deleted(v.recordLock(v.graphRoot, "images")) || v.watch.deleted(v.recordLock(v.graphRoot, "layers"))
}

// buildIndex turns store records into an Index. isList is asked only about
// images without a top layer (manifest lists have none, so a list check of
// every image would read big data for nothing). Containers' own writable
// layers are left out: they change while the container runs, and the tree
// keeps layer contents as immutable.
func buildIndex(gen uint64, simages []storage.Image, slayers []storage.Layer, containers []storage.Container, isList func(img *storage.Image) bool) *Index {
	containerLayers := make(map[string]bool, len(containers))
	for i := range containers {
		containerLayers[containers[i].LayerID] = true
	}
	layers := make([]*Layer, 0, len(slayers))
	byID := make(map[string]*storage.Layer, len(slayers))
	ours := make(map[string]*Layer, len(slayers))
	for i := range slayers {
		sl := &slayers[i]
		if first, dup := byID[sl.ID]; dup { // the primary store comes first and wins
			if l := ours[sl.ID]; l != nil && !first.ReadOnly && sl.ReadOnly {
				l.ReadOnlyCopy = true
			}
			continue
		}
		byID[sl.ID] = sl
		if containerLayers[sl.ID] {
			continue
		}
		l := &Layer{
			ID:               sl.ID,
			Parent:           sl.Parent,
			DiffDigest:       sl.UncompressedDigest,
			CompressedDigest: sl.CompressedDigest,
			UncompressedSize: -1,
			CompressedSize:   -1,
			Created:          sl.Created,
			ReadOnly:         sl.ReadOnly,
		}
		// containers/storage: a size is only valid with its digest.
		if sl.UncompressedDigest != "" && sl.UncompressedSize >= 0 {
			l.UncompressedSize = sl.UncompressedSize
		}
		if sl.CompressedDigest != "" && sl.CompressedSize >= 0 {
			l.CompressedSize = sl.CompressedSize
		}
		ours[l.ID] = l
		layers = append(layers, l)
	}

	users := make(map[string][]string)
	for i := range containers {
		users[containers[i].ImageID] = append(users[containers[i].ImageID], containers[i].ID)
	}

	images := make([]*Image, 0, len(simages))
	first := make(map[string]*Image, len(simages))
	for i := range simages {
		si := &simages[i]
		if img := first[si.ID]; img != nil {
			// Another store's copy: the first one found is the image.
			img.copies = append(img.copies, imageCopy{names: slices.Clone(si.Names), order: i, readOnly: si.ReadOnly})
			continue
		}
		img := &Image{
			ID:           si.ID,
			Names:        slices.Clone(si.Names),
			NamesHistory: slices.Clone(si.NamesHistory),
			TopLayer:     si.TopLayer,
			Created:      si.Created,
			ReadOnly:     si.ReadOnly,
			recordDigest: si.Digest,
			order:        i,
		}
		for _, n := range si.BigDataSizes {
			img.metaSize += n
		}
		img.NoConfig = !slices.ContainsFunc(si.BigDataNames, isConfigKey)
		// The digest the manifest file hashes to. podman 4.3 leaves a
		// list's record Digest at the empty list it started from, so the
		// "manifest" item's own digest comes first.
		img.Digest = si.BigDataDigests[storage.ImageDigestBigDataKey]
		if img.Digest == "" {
			img.Digest = si.Digest
		}
		img.Digests = imageDigests(img.Digest, si)
		if si.TopLayer != "" {
			img.Layers = layerChain(si.TopLayer, byID)
		} else if isList != nil {
			img.IsList = isList(si)
		}
		if c := users[si.ID]; len(c) > 0 {
			sort.Strings(c)
			img.Containers = c
		}
		first[si.ID] = img
		images = append(images, img)
	}
	return NewIndex(gen, images, layers)
}

// isConfigKey reports whether a big data item's key is a config's: the
// config is stored under its digest; manifests, signatures and a list's
// instances under names of their own ("manifest-sha256:…").
func isConfigKey(key string) bool { return digest.Digest(key).Validate() == nil }

// imageDigests lists every manifest digest of the record, first the main
// one, the others sorted (containers/storage computes them from a map, in
// no stable order).
func imageDigests(main digest.Digest, si *storage.Image) []digest.Digest {
	var rest []digest.Digest
	add := func(d digest.Digest) {
		if d != "" && d != main && !slices.Contains(rest, d) {
			rest = append(rest, d)
		}
	}
	add(si.Digest)
	for _, d := range si.Digests {
		add(d)
	}
	slices.Sort(rest)
	if main == "" {
		return rest
	}
	return append([]digest.Digest{main}, rest...)
}

// layerChain walks top → parent and returns the chain base first. A
// missing layer ends the walk (the chain is then partial, as the store's).
func layerChain(top string, byID map[string]*storage.Layer) []string {
	var chain []string
	for id := top; id != "" && len(chain) <= len(byID); {
		l := byID[id]
		if l == nil {
			break
		}
		chain = append(chain, id)
		id = l.Parent
	}
	slices.Reverse(chain)
	return chain
}

func sameCopy(a, b imageCopy) bool {
	return a.order == b.order && a.readOnly == b.readOnly && slices.Equal(a.names, b.names)
}

// sameRecords reports whether two indexes hold the same records, so that
// the older (with its generation) can stay.
func sameRecords(a, b *Index) bool {
	if a == nil || b == nil || len(a.Images) != len(b.Images) || len(a.Layers) != len(b.Layers) {
		return false
	}
	for i, x := range a.Images {
		y := b.Images[i]
		if x.ID != y.ID || x.Digest != y.Digest || x.TopLayer != y.TopLayer || !x.Created.Equal(y.Created) ||
			x.ReadOnly != y.ReadOnly || x.IsList != y.IsList || x.NoConfig != y.NoConfig || x.recordDigest != y.recordDigest ||
			x.order != y.order || x.metaSize != y.metaSize ||
			!slices.Equal(x.Names, y.Names) || !slices.Equal(x.NamesHistory, y.NamesHistory) ||
			!slices.Equal(x.Digests, y.Digests) || !slices.Equal(x.Layers, y.Layers) ||
			!slices.Equal(x.Containers, y.Containers) || !slices.EqualFunc(x.copies, y.copies, sameCopy) {
			return false
		}
	}
	for i, x := range a.Layers {
		y := b.Layers[i]
		if x.ID != y.ID || x.Parent != y.Parent || x.DiffDigest != y.DiffDigest ||
			x.CompressedDigest != y.CompressedDigest || x.UncompressedSize != y.UncompressedSize ||
			x.CompressedSize != y.CompressedSize || !x.Created.Equal(y.Created) || x.ReadOnly != y.ReadOnly ||
			x.ReadOnlyCopy != y.ReadOnlyCopy {
			return false
		}
	}
	return true
}
