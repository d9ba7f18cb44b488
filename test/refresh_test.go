package test

// Live refresh: changes podman makes in another process show in a mounted
// tree within a second, without remounting, and nothing of a removed image
// is served from the kernel's caches.

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/internal/fixture"
	"github.com/imagefs/imagefs/internal/testenv"
	"github.com/imagefs/imagefs/storageview"
)

// readlinkTo checks that p is a link to images/<id>.
func readlinkTo(p, id string) error {
	target, err := os.Readlink(p)
	if err != nil {
		return err
	}
	if !strings.HasSuffix(target, "images/"+id) {
		return fmt.Errorf("%s -> %s, want …images/%.12s", p, target, id)
	}
	return nil
}

func TestRefresh(t *testing.T) {
	e := newWenv(t, "overlay", storageview.Options{}, fs.Options{})
	base, lone := e.base, e.lone

	// Prime the kernel's caches: negative entries for what podman will
	// add, positive ones (and page cache) for what it will change.
	newName := e.p("names/quay.io/ext/new:1")
	for _, p := range []string{newName, e.p("names/quay.io/ext"), e.p("names/localhost/imported:1")} {
		if err := gone(p); err != nil {
			t.Fatal(err)
		}
	}
	namesFile := e.p("images/" + base.ID + "/names")
	oldNames, err := os.ReadFile(namesFile)
	if err != nil {
		t.Fatal(err)
	}
	manifest := e.p("images/" + lone.ID + "/manifest")
	oldManifest, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"digests/" + lone.ManifestDigest.String(), "layers/" + lone.LayerIDs[0], "layers/" + lone.LayerIDs[0][:12], "images/" + lone.ID[:12]} {
		if _, err := os.Lstat(e.p(p)); err != nil {
			t.Fatal(err)
		}
	}

	// podman tag: the name, its new directory and the image's names file.
	e.s.PodmanOutput(t, "tag", base.ID, "quay.io/ext/new:1")
	took := eventually(t, "podman tag", func() error {
		if err := readlinkTo(newName, base.ID); err != nil {
			return err
		}
		b, err := os.ReadFile(namesFile)
		if err != nil || string(b) != string(oldNames)+"quay.io/ext/new:1\n" {
			return fmt.Errorf("names file %q %v", b, err)
		}
		ents, err := os.ReadDir(e.p("names/quay.io"))
		if err != nil || !slices.ContainsFunc(ents, func(d os.DirEntry) bool { return d.Name() == "ext" }) {
			return fmt.Errorf("ls names/quay.io: %v %v", ents, err)
		}
		return nil
	})
	t.Logf("podman tag visible after %s", took)

	// podman untag: gone again, the directory too.
	e.s.PodmanOutput(t, "untag", base.ID, "quay.io/ext/new:1")
	took = eventually(t, "podman untag", func() error {
		if err := gone(newName); err != nil {
			return err
		}
		return gone(e.p("names/quay.io/ext"))
	})
	t.Logf("podman untag visible after %s", took)

	// A directory of its rootfs held open, as a shell's working directory
	// is, with a file below it looked up and read.
	rootfs, err := os.Open(e.p("images/" + lone.ID + "/rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	defer rootfs.Close()
	if b, err := readAt(rootfs, "lone"); err != nil || string(b) != "lone\n" {
		t.Fatalf("rootfs/lone: %q %v", b, err)
	}

	// podman rmi: once imagefs has seen it, every path to the image goes
	// and its files are no longer served from the kernel's caches. (Right
	// after podman exits the kernel may still serve what it cached: the
	// watcher's invalidation follows within milliseconds.)
	e.s.PodmanOutput(t, "rmi", lone.ID)
	took = eventually(t, "podman rmi", func() error {
		if b, err := os.ReadFile(manifest); !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("manifest: %d bytes (the old ones: %v), %v", len(b), bytes.Equal(b, oldManifest), err)
		}
		for _, p := range []string{"images/" + lone.ID, "images/" + lone.ID[:12], "digests/" + lone.ManifestDigest.String(), "layers/" + lone.LayerIDs[0], "layers/" + lone.LayerIDs[0][:12]} {
			if err := gone(e.p(p)); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("podman rmi visible after %s", took)
	if b, err := readAt(rootfs, "lone"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("rootfs/lone of the removed image, from its rootfs held open: %q, %v; want ENOENT", b, err)
	}
	if names, err := rootfs.Readdirnames(-1); len(names) > 0 {
		t.Errorf("listing of the removed image's rootfs held open: %q, %v; want nothing", names, err)
	}

	// podman import: a new image, its name, digest and layer.
	tarball := filepath.Join(t.TempDir(), "x.tar")
	if err := os.WriteFile(tarball, tarOfFiles(t, map[string]string{"imported": "yes\n"}), 0o644); err != nil {
		t.Fatal(err)
	}
	out := e.s.PodmanOutput(t, "import", tarball, "localhost/imported:1")
	id := strings.TrimPrefix(strings.TrimSpace(out), "sha256:")
	took = eventually(t, "podman import", func() error {
		if err := readlinkTo(e.p("names/localhost/imported:1"), id); err != nil {
			return err
		}
		if _, err := os.Stat(e.p("images/" + id + "/manifest")); err != nil {
			return err
		}
		d, err := os.ReadFile(e.p("images/" + id + "/digest"))
		if err != nil {
			return err
		}
		return readlinkTo(e.p("digests/"+strings.TrimSpace(string(d))), id)
	})
	t.Logf("podman import visible after %s", took)
}

// TestRefreshPrefixAfterMiss: an ID prefix looked up while nothing had it
// resolves as soon as imagefs has seen the image come, however long the
// mount keeps negative entries (they are invalidated by name, and a prefix
// the kernel knows only as a miss cannot be).
func TestRefreshPrefixAfterMiss(t *testing.T) {
	e := newWenv(t, "overlay", storageview.Options{}, fs.Options{NegativeTimeout: time.Minute})
	lone := e.lone
	archive := filepath.Join(t.TempDir(), "lone.tar")
	e.s.PodmanOutput(t, "save", "-o", archive, lone.ID)
	e.s.PodmanOutput(t, "rmi", lone.ID)
	paths := []string{"images/" + lone.ID, "images/" + lone.ID[:12], "layers/" + lone.LayerIDs[0][:12]}
	eventually(t, "podman rmi", func() error {
		for _, p := range paths {
			if err := gone(e.p(p)); err != nil {
				return err
			}
		}
		return nil
	})

	e.s.PodmanOutput(t, "load", "-i", archive)
	eventually(t, "podman load", func() error {
		for _, p := range paths {
			if _, err := os.Lstat(e.p(p)); err != nil {
				return err
			}
		}
		return nil
	})
}

// TestRefreshReadsWhole: a file read right after the store changed, before
// the watcher has told the kernel, comes out whole: the bytes of before
// (whose size the kernel has) or of after, never the new bytes cut at the
// old size, which is what `cat inspect.json | jq` got while podman tagged,
// nor the old bytes followed by the tail of the new ones.
func TestRefreshReadsWhole(t *testing.T) {
	e := newWenv(t, "overlay", storageview.Options{}, fs.Options{})
	id := e.base.ID
	namesFile, inspectFile := e.p("images/"+id+"/names"), e.p("images/"+id+"/inspect.json")
	for i := range 5 {
		img, err := e.s.Store.Image(id)
		if err != nil {
			t.Fatal(err)
		}
		added := fmt.Sprintf("localhost/a-name-long-enough-to-grow-the-files:%d", i)
		before := slices.Sorted(slices.Values(img.Names))
		after := slices.Sorted(slices.Values(append(slices.Clone(img.Names), added)))
		// The kernel learns the sizes (it keeps them for the attribute
		// timeout) and has none of the pages, so the reads below ask
		// imagefs.
		files := map[string]*os.File{}
		for _, p := range []string{namesFile, inspectFile} {
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Stat(); err != nil {
				t.Fatal(err)
			}
			if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
				t.Fatal(err)
			}
			files[p] = f
		}
		// Another writer tags the image; imagefs sees the store change
		// (inotify) well before its watcher's invalidation reaches the
		// kernel (after a debounce).
		if err := e.s.Store.AddNames(id, []string{added}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Millisecond)
		names, rest := readAcross(t, files[namesFile])
		if got := nameSet(names); !slices.Equal(got, before) && !slices.Equal(got, after) || len(rest) > 0 {
			t.Errorf("round %d: names read right after a tag: %q, then %q; want the names of before or after, then nothing", i, names, rest)
		}
		data, rest := readAcross(t, files[inspectFile])
		if len(rest) > 0 {
			t.Errorf("round %d: inspect.json read on after the change: %d more bytes %q", i, len(rest), rest[:min(len(rest), 40)])
		}
		var inspect map[string]any
		if err := json.Unmarshal(data, &inspect); err != nil {
			t.Errorf("round %d: inspect.json read right after a tag: %v (%d bytes, ending %q)", i, err, len(data), data[max(0, len(data)-40):])
		}
		// And the new bytes follow.
		eventually(t, "names after the tag", func() error {
			b, err := os.ReadFile(namesFile)
			if err != nil || !slices.Equal(nameSet(b), after) {
				return fmt.Errorf("names %q %v", b, err)
			}
			return nil
		})
	}
}

// readAcross reads f as cat does, one read(2) larger than the file, then
// reads on to the end after a pause in which the watcher's invalidation
// of the change lands: the first part must be a whole file, and nothing
// may follow it.
func readAcross(t *testing.T, f *os.File) (first, rest []byte) {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := f.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	rest, err = io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n], rest
}

// nameSet is the sorted lines of a names file.
func nameSet(b []byte) []string {
	return slices.Sorted(slices.Values(strings.Fields(string(b))))
}

// readAt reads the file name in directory dir, looked up from dir as a
// process whose working directory dir is would.
func readAt(dir *os.File, name string) ([]byte, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return io.ReadAll(f)
}

// tarOfFiles makes an uncompressed tar of regular files (path → content),
// for podman import.
func tarOfFiles(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		h := &tar.Header{Name: n, ModTime: mtime, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(files[n]))}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[n])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestRefreshInstanceLink: a manifest list's instance link follows its
// instance: it leads to the image holding the digest, and dangles once
// podman removed that image (the kernel had cached the old target).
func TestRefreshInstanceLink(t *testing.T) {
	testenv.RequirePodman(t)
	s := fixture.NewStore(t, "overlay")
	inst := s.Add(t, fixture.Image{Names: []string{"localhost/inst:1"},
		Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("i", "i\n")}}}})
	list := s.AddList(t, []string{"localhost/list:1"}, []fixture.ListInstance{inst.Instance()})
	mnt, _ := mountInProcess(t, newTestStore(t, s), fs.Options{})
	link := filepath.Join(mnt, "images", list.ID, "instances", inst.ManifestDigest.String())
	if target, err := os.Readlink(link); err != nil || target != "../../"+inst.ID {
		t.Fatalf("instance link -> %q, %v; want ../../%s", target, err, inst.ID)
	}
	s.PodmanOutput(t, "rmi", inst.ID)
	eventually(t, "podman rmi of the instance", func() error {
		target, err := os.Readlink(link)
		if want := "../../../digests/" + inst.ManifestDigest.String(); err != nil || target != want {
			return fmt.Errorf("instance link -> %q, %v; want %q", target, err, want)
		}
		if fi, err := os.Lstat(link); err != nil || fi.Size() != int64(len(target)) {
			return fmt.Errorf("instance link size %v, %v; want %d", fi.Size(), err, len(target))
		}
		return nil
	})
}

// TestRefreshListChanges: podman manifest add, annotate and remove change a
// list in place, under the same ID; its instances/ and platforms follow,
// entries the kernel had cached included.
func TestRefreshListChanges(t *testing.T) {
	testenv.RequirePodman(t)
	s := fixture.NewStore(t, "overlay")
	layer := func(f string) []fixture.Layer {
		return []fixture.Layer{{Entries: []fixture.Entry{fixture.File(f, f+"\n")}}}
	}
	a := s.Add(t, fixture.Image{Names: []string{"localhost/a:1"}, Layers: layer("a")})
	b := s.Add(t, fixture.Image{Names: []string{"localhost/b:1"}, Layers: layer("b"),
		Config: fixture.Config{Architecture: "arm64", Variant: "v8"}})
	s.Close()
	id := strings.TrimSpace(s.PodmanOutput(t, "manifest", "create", "localhost/list:1"))
	s.PodmanOutput(t, "manifest", "add", "localhost/list:1", "containers-storage:"+a.ID)
	mnt, _ := mountInProcess(t, newTestStore(t, s), fs.Options{})
	inst := filepath.Join(mnt, "images", id, "instances")
	state := func() string { // the listing, each link's target, platforms
		ents, err := os.ReadDir(inst)
		if err != nil {
			return err.Error()
		}
		var b strings.Builder
		for _, e := range ents {
			if target, err := os.Readlink(filepath.Join(inst, e.Name())); err == nil {
				fmt.Fprintf(&b, "%s -> %s\n", e.Name(), target)
			}
		}
		platforms, err := os.ReadFile(filepath.Join(inst, "platforms"))
		if err != nil {
			return err.Error()
		}
		return b.String() + string(platforms)
	}
	link := func(img fixture.Added) string {
		return fmt.Sprintf("%s -> ../../%s\n", img.ManifestDigest, img.ID)
	}
	want := link(a) + a.ManifestDigest.String() + " linux/amd64\n"
	if got := state(); got != want {
		t.Fatalf("instances/ of the list:\n%s\nwant\n%s", got, want)
	}
	for _, step := range []struct {
		args []string
		want string
	}{
		{[]string{"add", "localhost/list:1", "containers-storage:" + b.ID},
			sortedLines(link(a)+link(b)) + "\n" + a.ManifestDigest.String() + " linux/amd64\n" + b.ManifestDigest.String() + " linux/arm64/v8\n"},
		{[]string{"annotate", "--os", "freebsd", "--arch", "riscv64", "localhost/list:1", b.ManifestDigest.String()},
			sortedLines(link(a)+link(b)) + "\n" + a.ManifestDigest.String() + " linux/amd64\n" + b.ManifestDigest.String() + " freebsd/riscv64/v8\n"},
		{[]string{"remove", "localhost/list:1", a.ManifestDigest.String()},
			link(b) + b.ManifestDigest.String() + " freebsd/riscv64/v8\n"},
	} {
		for _, f := range []string{"manifest", "digest"} { // in the kernel's caches
			if _, err := os.ReadFile(filepath.Join(mnt, "images", id, f)); err != nil {
				t.Fatal(err)
			}
		}
		s.PodmanOutput(t, append([]string{"manifest"}, step.args...)...)
		eventually(t, "podman manifest "+step.args[0], func() error {
			if got := state(); got != step.want {
				return fmt.Errorf("instances/ of the list:\n%s\nwant\n%s", got, step.want)
			}
			return nil
		})
		// The manifest changed with them (not when its attributes time out).
		m, merr := os.ReadFile(filepath.Join(mnt, "images", id, "manifest"))
		d, derr := os.ReadFile(filepath.Join(mnt, "images", id, "digest"))
		if got := digest.FromBytes(m).String() + "\n"; merr != nil || derr != nil || got != string(d) {
			t.Errorf("after podman manifest %s: the manifest's digest is %s, the digest file says %q (%v, %v)", step.args[0], got, d, merr, derr)
		}
	}
	if _, err := os.Lstat(filepath.Join(inst, a.ManifestDigest.String())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the removed instance's link: %v, want ENOENT", err)
	}
}

// TestRefreshCallerHoldsLock: a process holding the store's records
// locked for writing, as podman does while it writes, that looks a path up
// in the mount (podman with its working directory there) is answered at
// once from the index there is, not after it lets go: imagefs reading the
// records would wait for the lock, and the caller for imagefs.
func TestRefreshCallerHoldsLock(t *testing.T) {
	s := fixture.NewStore(t, "vfs")
	s.Add(t, fixture.Image{Names: []string{"localhost/a:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("a", "a\n")}}}})
	s.Close()
	mnt, _ := mountInProcess(t, newTestStore(t, s), fs.Options{})
	// Locks both record files, records a write (a new last-writer token)
	// as containers/storage does, looks up a name, and says whether the
	// answer came while it still held the locks (it lets go after 5 s).
	out, err := exec.Command("python3", "-c", `
import fcntl, os, sys, threading
files = [open(p, "r+b") for p in sys.argv[1:3]]
for f in files:
    fcntl.lockf(f, fcntl.LOCK_EX)
os.pwrite(files[0].fileno(), os.urandom(64), 0)
held = [True]
def release():
    held[0] = False
    for f in files:
        fcntl.lockf(f, fcntl.LOCK_UN)
timer = threading.Timer(5, release)
timer.start()
try:
    os.lstat(sys.argv[3])
except FileNotFoundError:
    pass
print("answered while held" if held[0] else "answered after release", flush=True)
timer.cancel()
`, filepath.Join(s.GraphRoot, "vfs-images", "images.lock"), filepath.Join(s.GraphRoot, "vfs-layers", "layers.lock"),
		filepath.Join(mnt, "names", "localhost", "nosuch:1")).CombinedOutput()
	if err != nil {
		t.Fatalf("lock holder: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "answered while held" {
		t.Errorf("a lookup by the process holding the store's locks: %s", got)
	}
}

// TestRefreshLayerCopyRemoved: a layer both the writable store and an
// additional store hold is read from the graph root's copy; when podman
// removes the writable store's image, and that copy with it, the
// additional store's image keeps its files, also those not read before.
func TestRefreshLayerCopyRemoved(t *testing.T) {
	testenv.RequireFUSE(t)
	testenv.RequirePodman(t)
	dir := shortTempDir(t)
	tarball := filepath.Join(dir, "a.tar")
	big := strings.Repeat("b", 50000)
	if err := os.WriteFile(tarball, tarOfFiles(t, map[string]string{"etc/other": "other\n", "etc/big": big}), 0o644); err != nil {
		t.Fatal(err)
	}
	ro, rw := filepath.Join(dir, "ro"), filepath.Join(dir, "rw")
	addl := "overlay.imagestore=" + ro + "/g"
	podman := func(root string, args ...string) string {
		// Each store on its own: the writable one gets a copy of the layer.
		flags := []string{"--root", root + "/g", "--runroot", root + "/r", "--storage-driver", "overlay"}
		out, err := exec.Command("podman", append(flags, args...)...).Output()
		for _, r := range []string{ro, rw} { // podman's private bind mount of the driver home
			_ = syscall.Unmount(filepath.Join(r, "g", "overlay"), 0)
		}
		if err != nil {
			t.Fatalf("podman %v: %v\n%s", args, err, out)
		}
		return strings.TrimPrefix(strings.TrimSpace(string(out)), "sha256:")
	}
	roID := podman(ro, "import", "-q", tarball, "localhost/ro:1")
	podman(rw, "import", "-q", "--message", "w", tarball, "localhost/w:1")
	v, err := storageview.Open(storageview.Options{GraphRoot: rw + "/g", RunRoot: rw + "/r", Driver: "overlay",
		DriverOptions: []string{addl}, Log: log.New(io.Discard, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	mnt, _ := mountInProcess(t, v, fs.Options{})
	etc := filepath.Join(mnt, "images", roID, "rootfs", "etc")
	if got, err := os.ReadFile(filepath.Join(etc, "other")); err != nil || string(got) != "other\n" {
		t.Fatalf("cat rootfs/etc/other: %q %v", got, err)
	}
	// A process in the tree keeps its root known to the kernel, and a file
	// opened before the removal is read after it.
	held, err := os.Open(filepath.Dir(etc))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	opened, err := os.Open(filepath.Join(etc, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()
	podman(rw, "rmi", "localhost/w:1")
	eventually(t, "the additional store's image after podman rmi of the writable copy", func() error {
		if got, err := os.ReadFile(filepath.Join(etc, "big")); err != nil || string(got) != big {
			return fmt.Errorf("cat rootfs/etc/big: %d bytes, %v", len(got), err)
		}
		return nil
	})
	if got, err := io.ReadAll(opened); err != nil || string(got) != big {
		t.Errorf("etc/big opened before the removal: %d bytes, %v", len(got), err)
	}
	fd, err := unix.Openat(int(held.Fd()), "etc/other", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("etc/other from the rootfs/ held open: %v", err)
	}
	other := os.NewFile(uintptr(fd), "other")
	defer other.Close()
	if got, err := io.ReadAll(other); err != nil || string(got) != "other\n" {
		t.Errorf("etc/other from the rootfs/ held open: %q %v", got, err)
	}
}

// TestRefreshKeepsMadeDirectories: a directory made by mkdir in names/
// stays while podman adds and removes a name beside it, under the same
// parent (the parent was an ordinary directory for a while).
func TestRefreshKeepsMadeDirectories(t *testing.T) {
	e := newWenv(t, "overlay", storageview.Options{}, fs.Options{})
	if err := os.MkdirAll(e.p("names/example.org/me"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.s.PodmanOutput(t, "tag", e.base.ID, "example.org/x/a:1")
	eventually(t, "podman tag", func() error { _, err := os.Lstat(e.p("names/example.org/x/a:1")); return err })
	e.s.PodmanOutput(t, "untag", e.base.ID, "example.org/x/a:1")
	eventually(t, "podman untag", func() error { return gone(e.p("names/example.org/x")) })
	if fi, err := os.Stat(e.p("names/example.org/me")); err != nil || !fi.IsDir() {
		t.Fatalf("the mkdir-made directory after podman's name beside it came and went: %v", err)
	}
	if err := os.Symlink("../../../images/"+e.base.ID, e.p("names/example.org/me/t:1")); err != nil {
		t.Errorf("ln -s into it: %v", err)
	}
}

// TestRefreshListingContinues: a directory read in pieces while podman
// changes it returns every entry that was neither added nor removed
// exactly once (getdents(2)'s promise), whether the change is before or
// after where the reader stopped, and also when the entry it stopped at
// is the one removed. A listing's offsets counted entries, so after the
// kernel dropped its cached listing the rest came from the new one at the
// old count: entries skipped or repeated.
func TestRefreshListingContinues(t *testing.T) {
	e := newWenv(t, "overlay", storageview.Options{}, fs.Options{})
	var names []string
	for i := range 300 {
		names = append(names, fmt.Sprintf("localhost/many:t%03d", i))
	}
	if err := e.s.Store.AddNames(e.base.ID, append(names, "localhost/zzz:1")); err != nil {
		t.Fatal(err)
	}
	dir := e.p("names/localhost")
	eventually(t, "the names", func() error { _, err := os.Lstat(filepath.Join(dir, "many:t299")); return err })
	untouched := readDirNames(t, dir)
	for _, n := range untouched {
		if len(n) > maxOneEntryName {
			t.Fatalf("%s: getdentsNames reads names up to %d bytes one at a time", n, maxOneEntryName)
		}
	}

	var rest []string // every many: name left after the cases before the last
	for _, n := range names {
		if n != "localhost/many:t002" && n != "localhost/many:t100" {
			rest = append(rest, n)
		}
	}
	for _, tc := range []struct {
		name   string
		change []string // podman arguments
		added  string   // the name it adds, or the one the reader stops at that it removes
		at     int      // the reader stops after this many entries
	}{
		{"tag before the reader", []string{"tag", e.base.ID, "localhost/aaa:1"}, "aaa:1", 40},
		{"untag before the reader", []string{"untag", e.base.ID, "localhost/many:t002"}, "many:t002", 40},
		{"untag where the reader stopped", []string{"untag", e.base.ID, "localhost/many:t100"}, "many:t100", -1},
		// The new listing is far smaller than the one the reader was in.
		{"untag of hundreds, the reader's among them", append([]string{"untag", e.base.ID}, rest...), "many:t150", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			var got []string
			stopAt := tc.at
			if stopAt < 0 { // right after the entry the change removes
				stopAt = slices.Index(untouched, tc.added) + 1
			}
			got = append(got, getdentsNames(t, fd, stopAt)...)
			e.s.PodmanOutput(t, tc.change...)
			eventually(t, "the change", func() error {
				if slices.Contains(readDirNames(t, dir), tc.added) == slices.Contains(untouched, tc.added) {
					return fmt.Errorf("%s not changed yet", tc.added)
				}
				return nil
			})
			if !slices.Contains(readDirNames(t, dir), "zzz:1") {
				t.Fatal("zzz:1, which no case changes, is gone")
			}
			got = append(got, getdentsNames(t, fd, -1)...)
			count := map[string]int{}
			for _, n := range got {
				count[n]++
			}
			now := readDirNames(t, dir)
			for _, n := range untouched {
				if slices.Contains(now, n) && count[n] != 1 {
					t.Errorf("%s listed %d times", n, count[n])
				}
			}
			untouched = readDirNames(t, dir)
		})
	}
}

// maxOneEntryName is the longest name getdentsNames reads one at a time:
// its 40-byte buffer holds one linux_dirent64 of up to 20 bytes of name
// (19 bytes of header, the name and its NUL, 8-byte aligned) and never
// two (each takes at least 24).
const maxOneEntryName = 20

// getdentsNames reads up to n entries (all, if n < 0) of the directory fd
// with getdents(2), one entry per call so that the reader stops exactly
// there, and returns their names ("." and ".." left out).
func getdentsNames(t *testing.T, fd, n int) []string {
	t.Helper()
	var names []string
	buf := make([]byte, 40)
	for n < 0 || len(names) < n {
		m, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatalf("getdents: %v", err)
		}
		if m == 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:m], -1, names)
	}
	return names
}

// TestRefreshListingAfterAbandonedRead: a listing started after podman
// changed a directory shows the change, also when an earlier reader of the
// directory stopped part way (find -quit, next(os.scandir())). The server
// kept that reader's place with the listing it had, and the next reader
// asking for the same offset got the rest of the old listing.
func TestRefreshListingAfterAbandonedRead(t *testing.T) {
	e := newWenv(t, "overlay", storageview.Options{}, fs.Options{})
	var names []string
	for i := range 300 {
		names = append(names, fmt.Sprintf("localhost/many:t%03d", i))
	}
	if err := e.s.Store.AddNames(e.base.ID, names); err != nil {
		t.Fatal(err)
	}
	dir := e.p("names/localhost")
	eventually(t, "the names", func() error { _, err := os.Lstat(filepath.Join(dir, "many:t299")); return err })

	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Getdents(fd, make([]byte, 4096)); err != nil { // a part of the listing, then gone
		t.Fatal(err)
	}
	unix.Close(fd)

	e.s.PodmanOutput(t, "untag", e.base.ID, "localhost/many:t290")
	e.s.PodmanOutput(t, "tag", e.base.ID, "localhost/many:t300")
	eventually(t, "the change", func() error {
		if err := gone(filepath.Join(dir, "many:t290")); err != nil {
			return err
		}
		_, err := os.Lstat(filepath.Join(dir, "many:t300"))
		return err
	})
	got := getdentsAll(t, dir, 4096) // one listing, the first after the change, read as the first reader did
	if slices.Contains(got, "many:t290") || !slices.Contains(got, "many:t300") {
		t.Errorf("the first listing after the change has many:t290 %v and many:t300 %v; want false and true",
			slices.Contains(got, "many:t290"), slices.Contains(got, "many:t300"))
	}
}

// getdentsAll lists dir with getdents(2) into a buffer of size bytes.
func getdentsAll(t *testing.T, dir string, size int) []string {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var names []string
	buf := make([]byte, size)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatalf("getdents %s: %v", dir, err)
		}
		if n == 0 {
			return names
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}
