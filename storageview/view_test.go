package storageview_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/fixture"
	"github.com/imagefs/imagefs/internal/testenv"
	"github.com/imagefs/imagefs/nodes"
	"github.com/imagefs/imagefs/storageview"
	digest "github.com/opencontainers/go-digest"
)

// The View is what the tree consumes.
var _ nodes.Store = (*storageview.View)(nil)

func open(t testing.TB, s *fixture.Store, extraOpts ...string) *storageview.View {
	t.Helper()
	v, err := storageview.Open(storageview.Options{
		GraphRoot:     s.GraphRoot,
		RunRoot:       s.RunRoot,
		Driver:        s.Driver,
		DriverOptions: append(slices.Clone(s.StorageOpts), extraOpts...),
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

// settle waits past the view's change-check interval.
func settle() { time.Sleep(70 * time.Millisecond) }

type fixtureSet struct {
	a, b, dangling, list fixture.Added
	remote               digest.Digest
}

// addSet stores: a (two layers, two names), b (sharing a's base layer),
// a dangling image, and a list of a, b and an instance not stored here.
func addSet(t *testing.T, s *fixture.Store) fixtureSet {
	base := fixture.Layer{Entries: []fixture.Entry{fixture.File("etc/base", "base\n"), fixture.Dir("data")}}
	var fs fixtureSet
	fs.a = s.Add(t, fixture.Image{
		Names:  []string{"localhost/a:1", "quay.io/org/a:latest"},
		Layers: []fixture.Layer{base, {Entries: []fixture.Entry{fixture.File("data/a", "aaaa"), fixture.Whiteout("etc/base")}}},
	})
	fs.b = s.Add(t, fixture.Image{
		Names:  []string{"localhost/b:1"},
		Layers: []fixture.Layer{base, {Entries: []fixture.Entry{fixture.File("data/b", "bbbbbbbb")}}},
		Config: fixture.Config{Labels: map[string]string{"b": "yes"}},
		Format: fixture.FormatDocker,
	})
	fs.dangling = s.Add(t, fixture.Image{
		Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("x", "dangling")}}},
	})
	fs.remote = digest.FromString("not stored here")
	remote := fixture.ListInstance{Digest: fs.remote, Size: 123, OS: "linux", Architecture: "s390x"}
	fs.list = s.AddList(t, []string{"localhost/list:1"}, []fixture.ListInstance{fs.a.Instance(), fs.b.Instance(), remote})
	return fs
}

func TestView(t *testing.T) {
	for _, driver := range []string{"overlay", "vfs"} {
		t.Run(driver, func(t *testing.T) {
			testenv.RequireRoot(t)
			s := fixture.NewStore(t, driver)
			fs := addSet(t, s)
			v := open(t, s)
			ix := v.Index()

			ids := []string{fs.a.ID, fs.b.ID, fs.dangling.ID, fs.list.ID}
			slices.Sort(ids)
			var got []string
			for _, img := range ix.Images {
				got = append(got, img.ID)
			}
			if !slices.Equal(got, ids) {
				t.Fatalf("images %v, want %v", got, ids)
			}

			for _, added := range []fixture.Added{fs.a, fs.b, fs.dangling} {
				img := ix.ImageByID(added.ID)
				if !slices.Equal(img.Names, added.Names) || !slices.Equal(img.Layers, added.LayerIDs) ||
					img.Digest != added.ManifestDigest || img.IsList || ix.ImageByDigest(added.ManifestDigest) != img {
					t.Errorf("image %s: %+v; fixture %+v", added.ID[:12], img, added)
				}
				man, err := v.Manifest(added.ID)
				if err != nil || !bytes.Equal(man, added.Manifest) {
					t.Errorf("Manifest(%s): %v, equal %v", added.ID[:12], err, bytes.Equal(man, added.Manifest))
				}
				cfg, err := v.Config(added.ID)
				if err != nil || !bytes.Equal(cfg, added.Config) || digest.FromBytes(cfg).Encoded() != added.ID {
					t.Errorf("Config(%s): %v, equal %v", added.ID[:12], err, bytes.Equal(cfg, added.Config))
				}
				for _, doc := range []func(string) ([]byte, error){v.InspectJSON, v.History} {
					b, err := doc(added.ID)
					if err != nil || len(b) == 0 || b[len(b)-1] != '\n' {
						t.Errorf("image %s: document %q, %v", added.ID[:12], b, err)
					}
				}
			}
			if len(ix.ImageByID(fs.dangling.ID).Names) != 0 {
				t.Errorf("dangling image has names")
			}

			// The list.
			list := ix.ImageByID(fs.list.ID)
			if !list.IsList || list.Digest != fs.list.ManifestDigest || len(list.Layers) != 0 {
				t.Errorf("list: %+v", list)
			}
			ins, err := v.Instances(fs.list.ID)
			if err != nil {
				t.Fatal(err)
			}
			want := []storageview.Instance{
				{Digest: fs.a.ManifestDigest, OS: fs.a.Platform.OS, Arch: fs.a.Platform.Architecture},
				{Digest: fs.b.ManifestDigest, OS: fs.b.Platform.OS, Arch: fs.b.Platform.Architecture},
				{Digest: fs.remote, OS: "linux", Arch: "s390x"},
			}
			if !slices.Equal(ins, want) {
				t.Errorf("Instances %+v, want %+v", ins, want)
			}
			if _, err := v.Config(fs.list.ID); !errors.Is(err, storageview.ErrNotFound) {
				t.Errorf("Config(list): %v, want ErrNotFound", err)
			}
			if _, err := v.Instances(fs.a.ID); !errors.Is(err, storageview.ErrNotFound) {
				t.Errorf("Instances(image): %v, want ErrNotFound", err)
			}
			if dirs, err := v.LayerDirs(fs.list.ID); err != nil || len(dirs) != 0 {
				t.Errorf("LayerDirs(list) = %v, %v", dirs, err)
			}
			var li map[string]any
			b, err := v.InspectJSON(fs.list.ID)
			if err != nil || json.Unmarshal(b, &li) != nil || li["Id"] != fs.list.ID || li["Digest"] != fs.list.ManifestDigest.String() {
				t.Errorf("InspectJSON(list): %v\n%s", err, b)
			}

			// Layers: where the files are, and info.json.
			dirs, err := v.LayerDirs(fs.a.ID)
			if err != nil || len(dirs) != 2 {
				t.Fatalf("LayerDirs(a) = %v, %v", dirs, err)
			}
			for i, d := range dirs {
				want := filepath.Join(s.GraphRoot, "overlay", fs.a.LayerIDs[i], "diff")
				if driver == "vfs" {
					want = filepath.Join(s.GraphRoot, "vfs", "dir", fs.a.LayerIDs[i])
				}
				if d.ID != fs.a.LayerIDs[i] || d.Path != want || d.Full != (driver == "vfs") || d.AUFSWhiteouts {
					t.Errorf("layer %d: %+v, want path %s", i, d, want)
				}
			}
			mustExist(t, filepath.Join(dirs[0].Path, "etc/base"))
			mustExist(t, filepath.Join(dirs[1].Path, "data/a"))
			if driver == "vfs" { // the whole tree, with the whiteout applied
				mustExist(t, filepath.Join(dirs[1].Path, "data"))
				if _, err := os.Lstat(filepath.Join(dirs[1].Path, "etc/base")); err == nil {
					t.Errorf("vfs top layer still has the whited-out etc/base")
				}
			} else { // the layer's own changes: a whiteout device
				fi, err := os.Lstat(filepath.Join(dirs[1].Path, "etc/base"))
				if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
					t.Errorf("overlay top layer: etc/base is not a whiteout: %v %v", fi, err)
				}
			}
			chain, err := v.LayerChainDirs(fs.b.LayerIDs[1])
			if err != nil || len(chain) != 2 || chain[0].ID != fs.b.LayerIDs[0] || chain[1].ID != fs.b.LayerIDs[1] {
				t.Errorf("LayerChainDirs = %+v, %v", chain, err)
			}

			if fs.a.LayerIDs[0] != fs.b.LayerIDs[0] {
				t.Fatalf("a and b do not share their base layer")
			}
			rec, err := s.Store.Layer(fs.a.LayerIDs[0])
			if err != nil {
				t.Fatal(err)
			}
			b, err = v.LayerInfoJSON(rec.ID)
			if err != nil {
				t.Fatal(err)
			}
			var info struct {
				ID               string   `json:"id"`
				Parent           *string  `json:"parent"`
				DiffDigest       string   `json:"diff-digest"`
				CompressedDigest string   `json:"compressed-diff-digest"`
				UncompressedSize int64    `json:"uncompressed-size"`
				CompressedSize   int64    `json:"compressed-size"`
				Created          string   `json:"created"`
				Images           []string `json:"images"`
			}
			if err := json.Unmarshal(b, &info); err != nil {
				t.Fatalf("info.json: %v\n%s", err, b)
			}
			ab := []string{fs.a.ID, fs.b.ID}
			slices.Sort(ab)
			created, _ := time.Parse(time.RFC3339Nano, info.Created)
			if info.ID != rec.ID || info.Parent == nil || *info.Parent != "" || info.DiffDigest != rec.UncompressedDigest.String() ||
				info.CompressedDigest != rec.CompressedDigest.String() || info.UncompressedSize != rec.UncompressedSize ||
				info.CompressedSize != rec.CompressedSize || !created.Equal(rec.Created) || !slices.Equal(info.Images, ab) {
				t.Errorf("info.json of the shared base layer:\n%s\nrecord %+v", b, rec)
			}
			if !bytes.HasSuffix(b, []byte("}\n")) {
				t.Errorf("info.json has no trailing newline")
			}
			b, _ = v.LayerInfoJSON(fs.a.LayerIDs[1])
			if err := json.Unmarshal(b, &info); err != nil || *info.Parent != fs.a.LayerIDs[0] || !slices.Equal(info.Images, []string{fs.a.ID}) {
				t.Errorf("info.json of a's top layer:\n%s", b)
			}

			// Unknown identities.
			unknown := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
			for name, f := range map[string]func(string) error{
				"Manifest":      func(id string) error { _, err := v.Manifest(id); return err },
				"Config":        func(id string) error { _, err := v.Config(id); return err },
				"InspectJSON":   func(id string) error { _, err := v.InspectJSON(id); return err },
				"History":       func(id string) error { _, err := v.History(id); return err },
				"Instances":     func(id string) error { _, err := v.Instances(id); return err },
				"LayerDirs":     func(id string) error { _, err := v.LayerDirs(id); return err },
				"LayerInfoJSON": func(id string) error { _, err := v.LayerInfoJSON(id); return err },
				"LayerDir":      func(id string) error { _, err := v.LayerDir(id); return err },
			} {
				if err := f(unknown); !errors.Is(err, storageview.ErrNotFound) {
					t.Errorf("%s(unknown) = %v, want ErrNotFound", name, err)
				}
			}

			// Mount through the store (rootfs fallback) and back.
			dir, err := v.MountImage(fs.a.ID)
			if err != nil {
				t.Fatalf("MountImage: %v", err)
			}
			mustExist(t, filepath.Join(dir, "data/a"))
			if err := v.UnmountImage(fs.a.ID); err != nil {
				t.Errorf("UnmountImage: %v", err)
			}
		})
	}
}

func mustExist(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); err != nil {
		t.Errorf("%v", err)
	}
}

// TestRefresh: the index follows changes made in this process, by podman
// in another process, and ours (Invalidate); it is not rebuilt when
// nothing changed, and the check is cheap.
func TestRefresh(t *testing.T) {
	testenv.RequireRoot(t)
	s := fixture.NewStore(t, "overlay")
	a := s.Add(t, fixture.Image{Names: []string{"localhost/a:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("a", "a")}}}})
	v := open(t, s)
	ix1 := v.Index()
	if len(ix1.Images) != 1 {
		t.Fatalf("%d images", len(ix1.Images))
	}

	settle()
	if ix := v.Index(); ix != ix1 {
		t.Errorf("index rebuilt without a change (generation %d → %d)", ix1.Generation, ix.Generation)
	}

	b := s.Add(t, fixture.Image{Names: []string{"localhost/b:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("b", "b")}}}})
	settle()
	ix2 := v.Index()
	if ix2.ImageByID(b.ID) == nil || ix2.Generation != ix1.Generation+1 {
		t.Errorf("new image not seen (generation %d → %d)", ix1.Generation, ix2.Generation)
	}

	// Another process.
	testenv.RequirePodman(t)
	s.PodmanOutput(t, "tag", a.ID, "localhost/c:1")
	settle()
	ix3 := v.Index()
	if img := ix3.ImageByName("localhost/c:1"); img == nil || img.ID != a.ID || ix3.Generation != ix2.Generation+1 {
		t.Errorf("podman's tag not seen")
	}

	// Our own change: visible at once after Invalidate.
	if err := s.Store.SetNames(b.ID, []string{"localhost/b:1", "localhost/b:2"}); err != nil {
		t.Fatal(err)
	}
	v.Invalidate()
	if v.Index().ImageByName("localhost/b:2") == nil {
		t.Errorf("Invalidate: the next Index does not show the change")
	}

	// Concurrent callers after a change: one rebuild, one new index for all.
	before := v.Index()
	if err := s.Store.SetNames(b.ID, []string{"localhost/b:1"}); err != nil {
		t.Fatal(err)
	}
	settle()
	got := make([]*storageview.Index, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			got[i] = v.Index()
			if _, err := v.InspectJSON(b.ID); err != nil {
				t.Errorf("InspectJSON: %v", err)
			}
			if _, err := v.DF(); err != nil {
				t.Errorf("DF: %v", err)
			}
		})
	}
	wg.Wait()
	for _, ix := range got {
		if ix != got[0] || ix.Generation != before.Generation+1 || ix.ImageByName("localhost/b:2") != nil {
			t.Errorf("concurrent Index: generation %d (want %d), same index %v", ix.Generation, before.Generation+1, ix == got[0])
		}
	}

	// A container: df and Containers follow.
	if _, err := s.Store.CreateContainer("", nil, a.ID, "", "", nil); err != nil {
		t.Fatal(err)
	}
	settle()
	if img := v.Index().ImageByID(a.ID); len(img.Containers) != 1 {
		t.Errorf("container not seen: %v", img.Containers)
	}

	// An unchanged check (forced past the interval) reads the tokens only.
	settle()
	cur := v.Index()
	for range 20 {
		storageview.ExpireCheck(v)
		checks, rebuilds := storageview.StoreReads(v)
		ix := v.Index()
		checks2, rebuilds2 := storageview.StoreReads(v)
		if ix != cur || checks2 != checks+1 || rebuilds2 != rebuilds {
			t.Fatalf("unchanged check: index replaced %v, %d token checks (want 1), %d rebuilds (want 0)", ix != cur, checks2-checks, rebuilds2-rebuilds)
		}
	}
	// Within the interval: not even the tokens.
	checks, _ := storageview.StoreReads(v)
	for range 1000 {
		v.Index()
	}
	if n, _ := storageview.StoreReads(v); n-checks > 1 { // the interval may end once meanwhile
		t.Errorf("1000 Index calls within the check interval read the tokens %d times", n-checks)
	}
}

// BenchmarkIndexUnchangedCheck is an Index call that reads the store's
// tokens and finds nothing changed (the check interval has passed).
func BenchmarkIndexUnchangedCheck(b *testing.B) {
	v := benchView(b)
	for b.Loop() {
		storageview.ExpireCheck(v)
		v.Index()
	}
}

// BenchmarkIndexThrottled is an Index call within the check interval.
func BenchmarkIndexThrottled(b *testing.B) {
	v := benchView(b)
	for b.Loop() {
		v.Index()
	}
}

func benchView(b *testing.B) *storageview.View {
	testenv.RequireRoot(b)
	s := fixture.NewStore(b, "overlay")
	s.Add(b, fixture.Image{Names: []string{"localhost/a:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("a", "a")}}}})
	v := open(b, s)
	v.Index()
	return v
}

// TestAdditionalImageStore: images of a read-only additional store show
// up ReadOnly, with their layers found in that store. podman fills that
// store: containers/storage cannot open a store read-only in a process that
// has it open read-write.
func TestAdditionalImageStore(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequirePodman(t)
	s := fixture.NewStore(t, "overlay")
	own := s.Add(t, fixture.Image{Names: []string{"localhost/own:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("own", "x")}}}})

	roDir := shortTempDir(t, "ro")
	roRoot := filepath.Join(roDir, "graph")
	roID := podmanImport(t, s.PodmanEnv(), roDir, "from the ro store", "localhost/shared:1")

	s.Close()
	s.Store.Free() // else GetStore hands Open the fixture's store object, options and all
	v := open(t, s, "overlay.imagestore="+roRoot)
	ix := v.Index()
	shared, mine := ix.ImageByID(roID), ix.ImageByID(own.ID)
	if shared == nil || mine == nil {
		t.Fatalf("images: additional %v, own %v", shared, mine)
	}
	if !shared.ReadOnly || mine.ReadOnly {
		t.Errorf("ReadOnly: additional %v, own %v", shared.ReadOnly, mine.ReadOnly)
	}
	if ix.ImageByName("localhost/shared:1") != shared || len(shared.Layers) != 1 || !ix.Layer(shared.Layers[0]).ReadOnly {
		t.Errorf("additional store's names or layers missing: %+v", shared)
	}
	dirs, err := v.LayerDirs(roID)
	if err != nil || len(dirs) != 1 || dirs[0].Path != filepath.Join(roRoot, "overlay", shared.Layers[0], "diff") {
		t.Fatalf("LayerDirs = %+v, %v", dirs, err)
	}
	mustExist(t, filepath.Join(dirs[0].Path, "ro"))
	if _, err := v.InspectJSON(roID); err != nil {
		t.Errorf("InspectJSON of a read-only image: %v", err)
	}
	// Its layers are never reclaimable.
	du := v.Usage(ix)
	if want := ix.Layer(own.LayerIDs[0]).UncompressedSize; du.Reclaimable != want {
		t.Errorf("reclaimable %d, want only the own image's layer (%d)", du.Reclaimable, want)
	}
}

// tarOf is a one-file uncompressed tar.
func tarOf(t *testing.T, name, content string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte(content))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestMountProgramWhiteouts: a store used with fuse-overlayfs keeps
// ".wh." whiteouts, and LayerDir says so.
func TestMountProgramWhiteouts(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := os.Stat("/usr/bin/fuse-overlayfs"); err != nil {
		if os.Getenv(testenv.RequireAllVar) == "1" {
			t.Fatalf("fuse-overlayfs is missing and %s=1", testenv.RequireAllVar)
		}
		t.Skip("fuse-overlayfs not installed")
	}
	s := fixture.NewStore(t, "overlay", fixture.MountProgramOpt)
	a := s.Add(t, fixture.Image{Layers: []fixture.Layer{
		{Entries: []fixture.Entry{fixture.File("gone", "x")}},
		{Entries: []fixture.Entry{fixture.Whiteout("gone")}},
	}})
	v := open(t, s)
	dirs, err := v.LayerDirs(a.ID)
	if err != nil || len(dirs) != 2 || !dirs[1].AUFSWhiteouts {
		t.Fatalf("LayerDirs = %+v, %v", dirs, err)
	}
	mustExist(t, filepath.Join(dirs[1].Path, ".wh.gone"))
}

func TestOpenErrors(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := storageview.Open(storageview.Options{GraphRoot: file, RunRoot: filepath.Join(dir, "run"), Driver: "vfs"}); err == nil {
		t.Errorf("Open with a file as root: no error")
	}
	if _, err := storageview.Open(storageview.Options{GraphRoot: filepath.Join(dir, "g"), RunRoot: filepath.Join(dir, "run"), Driver: "nosuchdriver"}); err == nil {
		t.Errorf("Open with an unknown driver: no error")
	}
}

// TestClosed: after Close the view serves its last index and never
// touches the store again (a late call must not mount the driver home
// again), and Close is idempotent.
func TestClosed(t *testing.T) {
	testenv.RequireRoot(t)
	s := fixture.NewStore(t, "overlay")
	a := s.Add(t, fixture.Image{Names: []string{"localhost/a:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("a", "a")}}}})
	s.Close()
	s.Store.Free() // our own store object, shut down by Close below
	v, err := storageview.Open(storageview.Options{GraphRoot: s.GraphRoot, RunRoot: s.RunRoot, Driver: s.Driver})
	if err != nil {
		t.Fatal(err)
	}
	ix := v.Index()
	if err := v.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := v.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if left, _ := testenv.MountsUnder(s.Dir); len(left) > 0 {
		t.Fatalf("mounts left after Close: %v", left)
	}
	storageview.ExpireCheck(v)
	if v.Index() != ix {
		t.Errorf("Index after Close is not the last index")
	}
	if _, err := v.InspectJSON(a.ID); err == nil {
		t.Errorf("InspectJSON after Close: no error")
	}
	if _, err := v.DF(); err == nil {
		t.Errorf("DF after Close: no error")
	}
	if left, _ := testenv.MountsUnder(s.Dir); len(left) > 0 {
		t.Errorf("calls after Close mounted %v", left)
	}
}

// Close must undo only imagefs's own mounts: a container's root filesystem
// mounted by podman stays mounted (forcing the store down would unmount
// the rootfs of every running container on the host).
func TestCloseKeepsOtherMounts(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequirePodman(t)
	s := fixture.NewStore(t, "overlay")
	a := s.Add(t, fixture.Image{Names: []string{"localhost/a:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("a", "a")}}}})
	s.Close()
	s.Store.Free()
	ctr := strings.TrimSpace(s.PodmanOutput(t, "create", "--pull=never", "localhost/a:1", "true"))
	ctrDir := strings.TrimSpace(s.PodmanOutput(t, "mount", ctr))
	t.Cleanup(func() { s.Podman("umount", "--all", "--force").Run() })

	v, err := storageview.Open(storageview.Options{GraphRoot: s.GraphRoot, RunRoot: s.RunRoot, Driver: s.Driver})
	if err != nil {
		t.Fatal(err)
	}
	ourDir, err := v.MountImage(a.ID)
	if err != nil {
		t.Fatalf("MountImage: %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	left, _ := testenv.MountsUnder(s.Dir)
	if !slices.Contains(left, ctrDir) {
		t.Errorf("the container's mount %s went away with Close; mounts now: %v", ctrDir, left)
	}
	if slices.Contains(left, ourDir) {
		t.Errorf("our own image mount %s is still there after Close", ourDir)
	}
}

// TestNameInBothStores: a name held by an image of the writable store and
// by one of an additional store leads to the writable store's image, in
// the index, names/ and ResolveImage alike, as containers/storage's own
// lookup (and so podman) finds it. The additional store's image is
// re-imported until its ID sorts after the writable one's, the order in
// which an index keeping the last image by ID goes wrong.
func TestNameInBothStores(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequirePodman(t)
	const name = "localhost/shared:1"
	s := fixture.NewStore(t, "overlay")
	own := s.Add(t, fixture.Image{Names: []string{name}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("own", "x")}}}})

	roDir := shortTempDir(t, "ro")
	roRoot := filepath.Join(roDir, "graph")
	var roID string
	for try := 0; roID <= own.ID; try++ {
		if try == 30 {
			t.Fatalf("30 imports gave no ID after %s", own.ID)
		}
		roID = podmanImport(t, s.PodmanEnv(), roDir, fmt.Sprintf("from the ro store, try %d", try), name)
	}

	s.Close()
	s.Store.Free() // else GetStore hands Open the fixture's store object, options and all
	v := open(t, s, "overlay.imagestore="+roRoot)
	ix := v.Index()
	if ro := ix.ImageByID(roID); ro == nil || !ro.ReadOnly || !slices.Contains(ro.Names, name) {
		t.Fatalf("the additional store's image: %+v", ro)
	}
	if img := ix.ImageByName(name); img == nil || img.ID != own.ID {
		t.Errorf("ImageByName(%s) is not the writable store's %s: %+v", name, own.ID, img)
	}
	if got := ix.NameDir([]string{"localhost"}).Leaves["shared:1"]; got != own.ID {
		t.Errorf("names/%s leads to %s, want the writable store's %s", name, got, own.ID)
	}
	if img, err := v.ResolveImage(name); err != nil || img.ID != own.ID {
		t.Errorf("ResolveImage(%s) = %+v, %v; want the writable store's %s", name, img, err, own.ID)
	}
}

// TestContainerLayersLeftOut: a container's writable layer changes as the
// container runs, so the index (and with it layers/) has only the images'
// layers, never a container's.
func TestContainerLayersLeftOut(t *testing.T) {
	s := fixture.NewStore(t, "overlay")
	img := s.Add(t, fixture.Image{Names: []string{"localhost/a:1"}, Layers: []fixture.Layer{
		{Entries: []fixture.Entry{fixture.File("a", "a")}},
		{Entries: []fixture.Entry{fixture.File("b", "b")}},
	}})
	v := open(t, s)
	c, err := s.Store.CreateContainer("", nil, img.ID, "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store.Layer(c.LayerID); err != nil {
		t.Fatalf("the store has no layer %s for the container: %v", c.LayerID, err)
	}
	v.Invalidate()
	ix := v.Index()
	if got := ix.ImageByID(img.ID); got == nil || !slices.Equal(got.Containers, []string{c.ID}) {
		t.Fatalf("the index has not seen the container: %+v", got)
	}
	if l := ix.Layer(c.LayerID); l != nil {
		t.Errorf("the container's layer is in the index: %+v", l)
	}
	if l, matches := ix.ResolveLayerPrefix(c.LayerID[:12]); l != nil || len(matches) != 0 {
		t.Errorf("the container's layer resolves by prefix: %+v %v", l, matches)
	}
	if _, err := v.LayerInfoJSON(c.LayerID); !errors.Is(err, storageview.ErrNotFound) {
		t.Errorf("LayerInfoJSON of the container's layer: %v, want ErrNotFound", err)
	}
	var ids []string
	for _, l := range ix.Layers {
		ids = append(ids, l.ID)
	}
	if want := slices.Sorted(slices.Values(img.LayerIDs)); !slices.Equal(ids, want) {
		t.Errorf("index layers %v, want the image's %v", ids, want)
	}
}

// podmanImport makes, with podman alone (containers/storage cannot open a
// store read-only in a process that has it open read-write), an image of
// one file "ro" holding content, named name, in the overlay store of graph
// root dir/graph, for tests of additional image stores. It returns its ID.
func podmanImport(t *testing.T, env []string, dir, content, name string) string {
	t.Helper()
	root := filepath.Join(dir, "graph")
	tarball := filepath.Join(dir, "layer.tar")
	if err := os.WriteFile(tarball, tarOf(t, "ro", content), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("podman", "--root", root, "--runroot", filepath.Join(dir, "run"), "--storage-driver", "overlay",
		"import", "-q", tarball, name)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("podman import: %v", err)
	}
	// podman leaves its private bind mount of the driver home behind.
	if err := syscall.Unmount(filepath.Join(root, "overlay"), 0); err != nil && err != syscall.EINVAL {
		t.Logf("unmounting podman's %s: %v", filepath.Join(root, "overlay"), err)
	}
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "sha256:")
}

// shortTempDir is a temporary directory with a short path (t.TempDir's are
// long, and podman 4.3 refuses a run root longer than 50 bytes), removed
// when the test ends, and checked to hold no mounts then.
func shortTempDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	testenv.NoMountsLeft(t, dir)
	return dir
}

// TestAdditionalImageStoreOfNewGraphRoot: a graph root that does not exist
// yet, opened with an additional image store, shows that store's images
// from the start, as podman does. containers/storage makes the new root's
// lock files only as it reads: a root without them must not pass for a
// removed store.
func TestAdditionalImageStoreOfNewGraphRoot(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequirePodman(t)
	s := fixture.NewStore(t, "overlay") // for its podman configuration
	roDir := shortTempDir(t, "ro")
	roID := podmanImport(t, s.PodmanEnv(), roDir, "from the ro store", "localhost/shared:1")

	dir := shortTempDir(t, "new")
	v, err := storageview.Open(storageview.Options{
		GraphRoot:     filepath.Join(dir, "graph"),
		RunRoot:       filepath.Join(dir, "run"),
		Driver:        "overlay",
		DriverOptions: []string{"overlay.imagestore=" + filepath.Join(roDir, "graph")},
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	for _, when := range []string{"first index", "after the next check"} {
		if got := v.Index().ImageByName("localhost/shared:1"); got == nil || got.ID != roID || !got.ReadOnly {
			t.Errorf("%s: the additional store's image: %+v", when, got)
		}
		settle()
	}
}
