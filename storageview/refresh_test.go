package storageview

import (
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/fixture"
)

// TestIndexServedDuringRebuild: while one caller's check or rebuild takes
// long (a rebuild waits for the store's locks, which podman holds while it
// writes), the others get the current index after rebuildWait; after
// Invalidate (our own change) a caller waits for the rebuild instead.
func TestIndexServedDuringRebuild(t *testing.T) {
	s := fixture.NewStore(t, "vfs")
	s.Add(t, fixture.Image{Names: []string{"localhost/a:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("a", "a")}}}})
	v := openView(t, s)
	ix := v.Index()

	v.refreshMu.Lock() // a rebuild under way, waiting for podman's lock
	v.checkStart.Store(nanotime())
	v.expireCheck()
	got := make(chan *Index)
	go func() { got <- v.Index() }()
	select {
	case g := <-got:
		if g != ix {
			t.Errorf("served generation %d, want the current %d", g.Generation, ix.Generation)
		}
	case <-time.After(10 * time.Second):
		v.refreshMu.Unlock()
		t.Fatal("Index waited for the rebuild under way")
	}

	v.Invalidate()
	go func() { got <- v.Index() }()
	select {
	case <-got:
		t.Error("after Invalidate, Index did not wait for the rebuild under way")
	case <-time.After(100 * time.Millisecond):
	}
	v.refreshMu.Unlock()
	<-got
}
