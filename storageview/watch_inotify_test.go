package storageview

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/fixture"
	"github.com/imagefs/imagefs/internal/testenv"
	digest "github.com/opencontainers/go-digest"
)

// changeLog collects what subscribers are told.
type changeLog struct {
	mu      sync.Mutex
	changes []*Changes
	gens    [][2]uint64
}

func (c *changeLog) record(old, new *Index) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.changes = append(c.changes, Diff(old, new))
	c.gens = append(c.gens, [2]uint64{old.Generation, new.Generation})
}

// waitFor polls until what subscribers were told since the last reset,
// taken together, satisfies ok; it fails one second after since (the
// issue's bound; since is when the writer finished). A writer's change
// may arrive in steps (podman import: the layer, then the image).
func (c *changeLog) waitFor(t *testing.T, what string, since time.Time, ok func(*Changes) bool) time.Duration {
	t.Helper()
	deadline := since.Add(time.Second)
	for {
		c.mu.Lock()
		all := &Changes{}
		for _, ch := range c.changes {
			all.ImagesAdded = append(all.ImagesAdded, ch.ImagesAdded...)
			all.ImagesRemoved = append(all.ImagesRemoved, ch.ImagesRemoved...)
			all.ImagesChanged = append(all.ImagesChanged, ch.ImagesChanged...)
			all.NamesAdded = append(all.NamesAdded, ch.NamesAdded...)
			all.NamesRemoved = append(all.NamesRemoved, ch.NamesRemoved...)
			all.NamesMoved = append(all.NamesMoved, ch.NamesMoved...)
			all.DigestsAdded = append(all.DigestsAdded, ch.DigestsAdded...)
			all.DigestsRemoved = append(all.DigestsRemoved, ch.DigestsRemoved...)
			all.LayersAdded = append(all.LayersAdded, ch.LayersAdded...)
			all.LayersRemoved = append(all.LayersRemoved, ch.LayersRemoved...)
		}
		c.mu.Unlock()
		if ok(all) {
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not told within 1s; told %+v", what, *all)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *changeLog) reset() {
	c.mu.Lock()
	c.changes, c.gens = nil, nil
	c.mu.Unlock()
}

// TestSubscribe: changes podman makes in another process reach a
// subscriber within a second, described by Diff; so do our own.
func TestSubscribe(t *testing.T) {
	testenv.RequirePodman(t)
	s := fixture.NewStore(t, "overlay")
	a := s.Add(t, fixture.Image{
		Names:  []string{"localhost/w/a:1"},
		Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("a", "a\n")}}},
	})
	v := openView(t, s)
	var log changeLog
	cancel := v.Subscribe(log.record)
	defer cancel()

	if n := inotifyWatches(t, v); n == 0 {
		t.Fatalf("the follower watches no directory")
	}

	s.PodmanOutput(t, "tag", a.ID, "quay.io/w/b:2")
	took := log.waitFor(t, "podman tag", time.Now(), func(c *Changes) bool {
		return slices.Contains(c.NamesAdded, "quay.io/w/b:2") && slices.Contains(c.ImagesChanged, a.ID)
	})
	t.Logf("podman tag seen %s after podman exited", took)

	tarball := filepath.Join(t.TempDir(), "x.tar")
	writeFile(t, tarball, tarOf(t, map[string]string{"x": "x\n"}))
	log.reset()
	out := s.PodmanOutput(t, "import", tarball, "localhost/w/imported:1")
	newID := strings.TrimPrefix(strings.TrimSpace(out), "sha256:")
	log.waitFor(t, "podman import", time.Now(), func(c *Changes) bool {
		return slices.Contains(c.ImagesAdded, newID) && slices.Contains(c.NamesAdded, "localhost/w/imported:1") &&
			len(c.LayersAdded) == 1 && len(c.DigestsAdded) >= 1
	})

	log.reset()
	s.PodmanOutput(t, "rmi", "localhost/w/imported:1")
	log.waitFor(t, "podman rmi", time.Now(), func(c *Changes) bool {
		return slices.Contains(c.ImagesRemoved, newID) && slices.Contains(c.NamesRemoved, "localhost/w/imported:1") &&
			len(c.LayersRemoved) == 1 && len(c.DigestsRemoved) >= 1
	})

	// Our own change: told at once (no waiting for a tick).
	log.reset()
	start := time.Now()
	if err := v.Retag("quay.io/w/b:2", "quay.io/w/c:3"); err != nil {
		t.Fatal(err)
	}
	took = log.waitFor(t, "our retag", start, func(c *Changes) bool {
		return slices.Contains(c.NamesAdded, "quay.io/w/c:3") && slices.Contains(c.NamesRemoved, "quay.io/w/b:2")
	})
	if took > followTick {
		t.Errorf("our own change took %s to reach the subscriber", took)
	}
	// Generations only move forward, and each call starts where the last ended.
	log.mu.Lock()
	for i, g := range log.gens {
		if g[1] <= g[0] || (i > 0 && g[0] != log.gens[i-1][1]) {
			t.Errorf("generations told: %v", log.gens)
			break
		}
	}
	log.mu.Unlock()

	// After cancel the follower stops: no more calls.
	cancel()
	if _, ok := followers.Load(v); ok {
		t.Fatal("the follower still runs after the last cancel")
	}
	log.reset()
	if err := v.Tag(a.ID, "localhost/w/after:1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * followDebounce)
	log.mu.Lock()
	n := len(log.changes)
	log.mu.Unlock()
	if n != 0 {
		t.Errorf("%d calls after cancel", n)
	}
}

// inotifyWatches counts the watches of v's follower (from its fdinfo).
func inotifyWatches(t *testing.T, v *View) int {
	t.Helper()
	f, ok := followers.Load(v)
	if !ok || f.(*follower).ino == nil {
		return 0
	}
	info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", f.(*follower).inoFd))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(info), "inotify wd:")
}

// TestSubscribeAfterStoreReset: podman system reset removes the graph
// root, lock files included. The view then shows no image without reading
// the store (a read would create the store again under the remover), and
// once podman makes a new store the follower sees its changes: it watches
// the new directories and reads the new lock files, not the deleted ones
// it had open.
func TestSubscribeAfterStoreReset(t *testing.T) {
	testenv.RequirePodman(t)
	s := fixture.NewStore(t, "overlay")
	a := s.Add(t, fixture.Image{
		Names:  []string{"localhost/w/a:1"},
		Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("a", "a\n")}}},
	})
	v := openView(t, s)
	var log changeLog
	// The follower is held in its call about the removal below until
	// podman system reset has returned: its own read of the store must
	// not race the removal (see LAYOUT.md, live refresh).
	hold := make(chan struct{})
	var held sync.Once
	cancel := v.Subscribe(func(old, new *Index) {
		log.record(old, new)
		if slices.Contains(Diff(old, new).ImagesRemoved, a.ID) {
			held.Do(func() { <-hold })
		}
	})
	defer cancel()
	release := sync.OnceFunc(func() { close(hold) })
	defer release() // before cancel, which waits for the follower
	watches := inotifyWatches(t, v)
	if err := v.WaitUnlocked(context.Background()); err != nil { // a write's check, on the old lock files
		t.Fatal(err)
	}

	s.PodmanOutput(t, "rmi", a.ID)
	log.waitFor(t, "podman rmi", time.Now(), func(c *Changes) bool {
		return slices.Contains(c.ImagesRemoved, a.ID)
	})
	s.PodmanOutput(t, "system", "reset", "--force")
	release()
	v.expireCheck()
	if ix := v.Index(); len(ix.Images) != 0 {
		t.Fatalf("%d images after podman system reset", len(ix.Images))
	}
	if _, err := os.Stat(v.graphRoot); !os.IsNotExist(err) {
		t.Fatalf("the graph root after podman system reset and a refresh: %v; want it left removed", err)
	}
	// A write is refused before it reads the store (which would make it
	// again): ENOENT, there is nothing to change.
	if err := v.WaitUnlocked(context.Background()); !errors.Is(err, ErrNotFound) {
		t.Errorf("WaitUnlocked on the removed store: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(v.graphRoot); !os.IsNotExist(err) {
		t.Fatalf("the graph root after a write on the removed store: %v; want it left removed", err)
	}

	log.reset()
	tarball := filepath.Join(t.TempDir(), "x.tar")
	writeFile(t, tarball, tarOf(t, map[string]string{"x": "x\n"}))
	out := s.PodmanOutput(t, "import", tarball, "localhost/w/after-reset:1")
	newID := strings.TrimPrefix(strings.TrimSpace(out), "sha256:")
	log.waitFor(t, "podman import after the reset", time.Now(), func(c *Changes) bool {
		return slices.Contains(c.ImagesAdded, newID) && slices.Contains(c.NamesAdded, "localhost/w/after-reset:1")
	})
	if n := inotifyWatches(t, v); n < watches {
		t.Errorf("%d inotify watches after the reset, %d before", n, watches)
	}

	// Writes still see podman hold the new store's lock (so a signal can
	// end their wait), not the deleted lock file of the old one.
	testenv.HoldWriteLock(t, v.recordLock(v.graphRoot, "layers"))
	ctx, stop := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer stop()
	if err := v.WaitUnlocked(ctx); !errors.Is(err, ErrInterrupted) {
		t.Errorf("WaitUnlocked while another process holds the new store's lock: %v, want ErrInterrupted", err)
	}
}

// TestDiff: the differences between two synthetic indexes.
func TestDiff(t *testing.T) {
	id := func(c string) string { return strings.Repeat(c, 64) }
	d := func(s string) digest.Digest { return digest.FromString(s) }
	old := NewIndex(1, []*Image{
		{ID: id("a"), Names: []string{"x.io/a:1", "x.io/moves:1"}, Digest: d("a"), Digests: []digest.Digest{d("a")}, Layers: []string{id("1")}},
		{ID: id("b"), Names: []string{"x.io/b:1"}, Digest: d("b"), Digests: []digest.Digest{d("b")}, Layers: []string{id("1"), id("2")}},
	}, []*Layer{{ID: id("1")}, {ID: id("2"), Parent: id("1")}})
	new := NewIndex(2, []*Image{
		{ID: id("a"), Names: []string{"x.io/a:1"}, Digest: d("a"), Digests: []digest.Digest{d("a")}, Layers: []string{id("1")}},
		{ID: id("c"), Names: []string{"x.io/c:1", "x.io/moves:1"}, Digest: d("c"), Digests: []digest.Digest{d("c")}, Layers: []string{id("1"), id("3")}},
	}, []*Layer{{ID: id("1")}, {ID: id("3"), Parent: id("1")}})
	c := Diff(old, new)
	check := func(what string, got, want []string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}
	check("ImagesAdded", c.ImagesAdded, []string{id("c")})
	check("ImagesRemoved", c.ImagesRemoved, []string{id("b")})
	check("ImagesChanged", c.ImagesChanged, []string{id("a")})
	check("NamesAdded", c.NamesAdded, []string{"x.io/c:1"})
	check("NamesRemoved", c.NamesRemoved, []string{"x.io/b:1"})
	check("NamesMoved", c.NamesMoved, []string{"x.io/moves:1"})
	check("LayersAdded", c.LayersAdded, []string{id("3")})
	check("LayersRemoved", c.LayersRemoved, []string{id("2")})
	check("LayersChanged", c.LayersChanged, []string{id("1")}) // its images changed
	if !slices.Equal(c.DigestsAdded, []digest.Digest{d("c")}) || !slices.Equal(c.DigestsRemoved, []digest.Digest{d("b")}) {
		t.Errorf("digests: added %v removed %v", c.DigestsAdded, c.DigestsRemoved)
	}
	if c.Empty() || !Diff(new, new).Empty() {
		t.Errorf("Empty: %v for a change, %v for none", c.Empty(), Diff(new, new).Empty())
	}
	if all := Diff(nil, new); len(all.ImagesAdded) != 2 || len(all.NamesAdded) != 3 {
		t.Errorf("Diff(nil, new): %+v", all)
	}
}

// TestDiffDependentImages: an image whose inspect.json Parent or history
// IDs come from other images is changed when an image on its layer chain
// comes or goes, or, layerless, when a layerless image does; lists neither
// count nor change.
func TestDiffDependentImages(t *testing.T) {
	id := func(c string) string { return strings.Repeat(c, 64) }
	layers := func() []*Layer {
		return []*Layer{{ID: id("1")}, {ID: id("2"), Parent: id("1")}, {ID: id("3"), Parent: id("2")}, {ID: id("9")}}
	}
	parent := func() *Image { return &Image{ID: id("a"), TopLayer: id("1"), Layers: []string{id("1")}} }
	mid := func() *Image { return &Image{ID: id("b"), TopLayer: id("2"), Layers: []string{id("1"), id("2")}} }
	top := func() *Image {
		return &Image{ID: id("c"), TopLayer: id("3"), Layers: []string{id("1"), id("2"), id("3")}}
	}
	other := func() *Image { return &Image{ID: id("d"), TopLayer: id("9"), Layers: []string{id("9")}} }
	bare := func() *Image { return &Image{ID: id("e")} }
	bare2 := func() *Image { return &Image{ID: id("f")} }
	list := func() *Image { return &Image{ID: id("0"), IsList: true} }
	list2 := func() *Image { return &Image{ID: id("8"), IsList: true} }
	onBase := other()
	onBase.TopLayer, onBase.Layers = id("1"), []string{id("1")}
	all := func(extra ...*Image) []*Image {
		return append([]*Image{mid(), top(), other(), bare(), list()}, extra...)
	}
	for _, tc := range []struct {
		what     string
		old, new []*Image
		want     []string
	}{
		{"the parent goes", all(parent()), all(), []string{id("b"), id("c")}},
		{"the parent comes", all(), all(parent()), []string{id("b"), id("c")}},
		{"an image on the middle layer goes", all(parent()), append([]*Image{parent()}, all()[1:]...), []string{id("c")}},
		{"a layerless image comes", all(), all(bare2()), []string{id("e")}},
		{"an image gets another top layer (the parent's)", all(parent()), []*Image{mid(), top(), onBase, bare(), list(), parent()},
			[]string{id("a"), id("b"), id("c"), id("d")}},
		{"a list comes", all(), all(list2()), nil},
		{"nothing", all(parent()), all(parent()), nil},
	} {
		c := Diff(NewIndex(1, tc.old, layers()), NewIndex(2, tc.new, layers()))
		if !slices.Equal(c.ImagesChanged, tc.want) {
			t.Errorf("%s: ImagesChanged %v, want %v", tc.what, c.ImagesChanged, tc.want)
		}
	}
}

// TestDiffParentRemoved: in a real store, removing the image a child is
// built on marks the child changed (its inspect.json Parent and history
// IDs), though the child's own record is the same.
func TestDiffParentRemoved(t *testing.T) {
	s := fixture.NewStore(t, "vfs")
	baseLayer := fixture.Layer{Entries: []fixture.Entry{fixture.File("base", "base\n")}}
	base := s.Add(t, fixture.Image{Names: []string{"localhost/base:1"}, Layers: []fixture.Layer{baseLayer}})
	child := s.Add(t, fixture.Image{Names: []string{"localhost/child:1"}, Layers: []fixture.Layer{baseLayer,
		{Entries: []fixture.Entry{fixture.File("child", "child\n")}}}})
	v := openView(t, s)
	old := v.Index()
	if c := old.ImageByID(child.ID); c == nil || !slices.Contains(c.Layers, base.LayerIDs[0]) {
		t.Fatalf("the child's chain %v does not hold the base's top layer %s", c, base.LayerIDs[0])
	}
	if _, err := s.Store.DeleteImage(base.ID, true); err != nil {
		t.Fatal(err)
	}
	v.Invalidate()
	new := v.Index()
	if !sameImage(old.ImageByID(child.ID), new.ImageByID(child.ID)) {
		t.Fatalf("the child's own record changed: the test needs it unchanged")
	}
	c := Diff(old, new)
	if !slices.Equal(c.ImagesRemoved, []string{base.ID}) || !slices.Equal(c.ImagesChanged, []string{child.ID}) {
		t.Errorf("removed %v changed %v; want removed [%s], changed [%s]", c.ImagesRemoved, c.ImagesChanged, base.ID, child.ID)
	}
}
