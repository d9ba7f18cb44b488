package nodes

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/internal/testenv"
)

// testMount mounts the tree of store through the kernel with the options
// fs/ uses, and unmounts it when the test ends (failing the test if that
// fails or leaves a mount behind).
func testMount(t *testing.T, store Store, o Options) string {
	t.Helper()
	testenv.RequireFUSE(t)
	dir := t.TempDir()
	testenv.NoMountsLeft(t, dir)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if o.Log == nil {
		o.Log = log.New(tWriter{t}, "", 0)
	}
	sec := time.Second
	if f, ok := store.(*fakeStore); ok {
		store = subscribable{f} // the kernel learns of changes, as from storageview.View
	}
	srv, err := Mount(mnt, NewRoot(store, o), &fusefs.Options{
		MountOptions: fuse.MountOptions{
			FsName: "imagefs-test", Name: "imagefs", DirectMount: true,
			Options: []string{"nosuid", "nodev", "default_permissions"},
			Debug:   os.Getenv("IMAGEFS_FUSE_DEBUG") != "",
		},
		EntryTimeout: &sec, AttrTimeout: &sec, NegativeTimeout: &o.EntryTimeout,
		RootStableAttr: &fusefs.StableAttr{Ino: RootIno, Mode: syscall.S_IFDIR},
	})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return mnt
}

// tWriter sends log lines to the test log.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestKernelMount(t *testing.T) {
	w := newWorld()
	// Short kernel timeouts, so removal shows at once.
	mnt := testMount(t, w.s, Options{EntryTimeout: time.Millisecond, AttrTimeout: time.Millisecond})
	p := func(s string) string { return filepath.Join(mnt, s) }

	ents, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"df", "digests", "images", "layers", "names"}) {
		t.Errorf("root lists %q", names)
	}
	st, err := os.Stat(mnt)
	if err != nil || st.Sys().(*syscall.Stat_t).Ino != RootIno || st.Mode() != fs.ModeDir|0o555 {
		t.Errorf("root: %v %v", st, err)
	}

	// Every file: stat size == bytes read, mode 0444.
	dir := p("images/" + w.alpine.ID)
	for _, name := range []string{"manifest", "config", "digest", "names", "inspect.json", "history"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("read %s: %v", name, err)
			continue
		}
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Size() != int64(len(data)) || st.Mode() != 0o444 {
			t.Errorf("%s: stat %v (%v), read %d bytes", name, st, err, len(data))
		}
		if !st.ModTime().Equal(w.alpine.Created) {
			t.Errorf("%s: mtime %v, want %v", name, st.ModTime(), w.alpine.Created)
		}
	}
	config, _ := os.ReadFile(filepath.Join(dir, "config"))
	if sum := sha256.Sum256(config); hex.EncodeToString(sum[:]) != w.alpine.ID {
		t.Errorf("sha256(config) != ID")
	}

	// Through a name's symlink and through a prefix: the same directory.
	target, err := os.Readlink(p("names/docker.io/library/alpine:3.19"))
	if err != nil || target != "../../../images/"+w.alpine.ID {
		t.Errorf("readlink = %q, %v", target, err)
	}
	viaName, err := os.ReadFile(p("names/docker.io/library/alpine:3.19/manifest"))
	if err != nil || string(viaName) != string(w.s.manifests[w.alpine.ID]) {
		t.Errorf("manifest through the name: %q %v", viaName, err)
	}
	ino := func(path string, follow bool) uint64 {
		t.Helper()
		var st syscall.Stat_t
		var err error
		if follow {
			err = syscall.Stat(path, &st)
		} else {
			err = syscall.Lstat(path, &st)
		}
		if err != nil {
			t.Errorf("stat %s: %v", path, err)
		}
		return st.Ino
	}
	full := ino(dir, true)
	if full != imageIno(w.alpine.ID) {
		t.Errorf("image ino %d, want %d", full, imageIno(w.alpine.ID))
	}
	for _, other := range []string{p("images/" + w.alpine.ID[:4]), p("names/docker.io/library/alpine:3.19"),
		p("names/docker.io/library/alpine"), p("digests/" + w.alpine.Digest.String())} {
		if got := ino(other, true); got != full {
			t.Errorf("%s: ino %d, want the image's %d", other, got, full)
		}
	}
	if a, b := ino(p("names/docker.io/library/alpine"), false), ino(p("names/docker.io/library/alpine:latest"), false); a != b {
		t.Errorf("alpine and alpine:latest: inos %d and %d", a, b)
	}
	if got := ino(dir, true); got != full {
		t.Errorf("image ino changed to %d after lookups through other paths", got)
	}
	chain, err := os.ReadFile(p("images/" + w.alpine.ID + "/layers/001/info.json"))
	if err != nil || string(chain) != string(w.s.layerInfo[w.mid]) {
		t.Errorf("layers/001/info.json through the chain link: %q %v", chain, err)
	}

	// Writes: EROFS, through the kernel.
	refused := map[string]error{
		"mkdir":    os.Mkdir(p("images/new"), 0o755),
		"write":    os.WriteFile(p("df"), []byte("x"), 0o644),
		"create":   os.WriteFile(p("names/new"), []byte("x"), 0o644),
		"remove":   os.Remove(p("names/docker.io/library/alpine:3.19")),
		"rmdir":    os.Remove(dir),
		"symlink":  os.Symlink("../../../images/"+w.alpine.ID, p("names/docker.io/library/alpine:new")),
		"rename":   os.Rename(p("names/docker.io/library/alpine:3.19"), p("names/docker.io/library/alpine:3.20")),
		"chmod":    os.Chmod(p("df"), 0o644),
		"truncate": os.Truncate(filepath.Join(dir, "manifest"), 0),
		"link":     os.Link(filepath.Join(dir, "manifest"), p("names/m")),
	}
	for op, err := range refused {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", op, err)
		}
	}

	// The image goes: ENOENT everywhere once the store's change has reached
	// the kernel (notify.go; the kernel keeps file pages across opens).
	w.s.remove(w.alpine.ID)
	for _, path := range []string{filepath.Join(dir, "manifest"), filepath.Join(dir, "names"), p("names/docker.io/library/alpine:3.19/config"), p("images/" + w.alpine.ID[:6] + "/digest"), dir} {
		deadline := time.Now().Add(time.Second)
		for {
			data, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				break
			}
			if path == dir && errors.Is(err, syscall.EISDIR) {
				err = nil // still cached: no bytes either way
			}
			if err != nil || time.Now().After(deadline) {
				t.Errorf("read %s after removal: %q, %v; want ENOENT", path, data, err)
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat of the removed image: %v, want ENOENT", err)
	}
}

// TestKernelMountConcurrent walks the mount from several goroutines while
// images come and go: the only error allowed is ENOENT (something removed
// meanwhile), and no file but a dangling image's names reads empty.
func TestKernelMountConcurrent(t *testing.T) {
	w := newWorld()
	mnt := testMount(t, w.s, Options{EntryTimeout: time.Millisecond, AttrTimeout: time.Millisecond})
	stop := make(chan struct{})
	errs := make(chan error, 100)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
					if err != nil {
						if errors.Is(err, fs.ErrNotExist) {
							return nil
						}
						return err
					}
					if rel, _ := filepath.Rel(mnt, p); isOthers(rel) {
						if d.IsDir() {
							return filepath.SkipDir
						}
						return nil
					}
					switch {
					case d.Type() == fs.ModeSymlink:
						if _, err := os.Readlink(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
							return err
						}
					case d.Type().IsRegular() && g%2 == 0:
						data, err := os.ReadFile(p)
						if errors.Is(err, fs.ErrNotExist) {
							return nil
						}
						if err != nil {
							return err
						}
						if len(data) == 0 && filepath.Base(p) != "names" {
							return fmt.Errorf("%s: empty", p)
						}
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(400 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		img := w.s.addImage(fmt.Sprint("churn", i), []string{w.base}, fmt.Sprintf("localhost/churn:%d", i))
		time.Sleep(2 * time.Millisecond)
		w.s.remove(img.ID)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// isOthers reports whether rel (a path in the mount) is an entry other
// files serve (rootfs/, diff/, changes), which the fake store cannot back.
func isOthers(rel string) bool {
	parts := strings.Split(rel, "/")
	if len(parts) != 3 {
		return false
	}
	switch parts[0] {
	case "images":
		return !ownImageEntries[parts[2]]
	case "layers":
		return !ownLayerEntries[parts[2]]
	}
	return false
}
