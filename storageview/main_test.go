package storageview

import (
	"archive/tar"
	"bytes"
	"log"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/fixture"
	"go.podman.io/storage/pkg/reexec"
)

func TestMain(m *testing.M) {
	if reexec.Init() {
		return
	}
	if p := os.Getenv(removeAsHelperEnv); p != "" {
		removeAsHelper(p)
		return
	}
	os.Exit(m.Run())
}

// testLogger sends the view's log lines to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLog(t testing.TB) *log.Logger { return log.New(testWriter{t}, "", 0) }

// openView opens the fixture's store through Open (it shares the store
// object containers/storage keeps per process) and closes it at cleanup,
// before the fixture's own shutdown and its leftover-mount check.
func openView(t testing.TB, s *fixture.Store) *View {
	t.Helper()
	v, err := Open(Options{
		GraphRoot:     s.GraphRoot,
		RunRoot:       s.RunRoot,
		Driver:        s.Driver,
		DriverOptions: s.StorageOpts,
		Log:           testLog(t),
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return v
}

// tarOf makes an uncompressed tar of files (path → content; a path ending
// in "/" is a directory).
func tarOf(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, p := range sortedKeys(files) {
		h := &tar.Header{Name: p, ModTime: mtime, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(files[p]))}
		if strings.HasSuffix(p, "/") {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(files[p])); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
