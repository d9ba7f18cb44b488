package test

import (
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/internal/testenv"
	"github.com/imagefs/imagefs/nodes"
)

// testWriter sends log lines to the test's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// mountInProcess mounts the tree of store in this process exactly as
// `imagefs mount` does (fs.Mount: the same go-fuse and mount options,
// nodes.NewRoot), and returns the mountpoint. The mount owns store from
// here on: it is closed when the mount ends. At cleanup the mount is
// unmounted (the test fails if that fails) and nothing may be left mounted;
// unmount does it earlier (once).
func mountInProcess(t *testing.T, store nodes.Store, o fs.Options) (mnt string, unmount func()) {
	t.Helper()
	testenv.RequireFUSE(t)
	dir := t.TempDir()
	testenv.NoMountsLeft(t, dir)
	mnt = filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if o.Log == nil {
		o.Log = log.New(testWriter{t}, "imagefs: ", 0)
	}
	srv, err := fs.Mount(mnt, store, o)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	var once sync.Once
	unmount = func() {
		once.Do(func() {
			if err := srv.Unmount(false); err != nil {
				t.Errorf("unmount: %v", err)
			}
		})
	}
	t.Cleanup(unmount)
	return mnt, unmount
}
