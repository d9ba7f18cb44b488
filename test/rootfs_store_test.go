package test

import (
	"io"
	"log"
	"testing"

	"github.com/imagefs/imagefs/internal/fixture"
	"github.com/imagefs/imagefs/storageview"
)

// newTestStore opens the fixture store through storageview, as imagefs
// mount does; it is closed when the test ends.
func newTestStore(t *testing.T, s *fixture.Store) *storageview.View {
	t.Helper()
	v, err := storageview.Open(storageview.Options{
		GraphRoot: s.GraphRoot, RunRoot: s.RunRoot, Driver: s.Driver, DriverOptions: s.StorageOpts,
		Log: log.New(io.Discard, "", 0),
	})
	if err != nil {
		t.Fatalf("opening the store: %v", err)
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Errorf("closing the store: %v", err)
		}
	})
	return v
}
