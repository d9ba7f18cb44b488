package test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	iofs "io/fs"
	"log"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/internal/fixture"
	"github.com/imagefs/imagefs/internal/testenv"
)

// treeStore is a real store with the image kinds the tree must show: a
// single-layer image, a multi-layer image sharing its base with another,
// an image with several names (tags, a digested name), a dangling image
// and a manifest list with one local and one missing instance.
type treeStore struct {
	s                                    *fixture.Store
	single, multi, named, dangling, list fixture.Added
	missing                              digest.Digest
}

func newTreeStore(t *testing.T, driver string) *treeStore {
	t.Helper()
	s := fixture.NewStore(t, driver)
	ts := &treeStore{s: s, missing: digest.FromString("an instance that is not stored here")}
	base := fixture.Layer{Entries: []fixture.Entry{fixture.File("etc/os-release", "ID=fixture\n")}}
	ts.single = s.Add(t, fixture.Image{Names: []string{"docker.io/library/single:1"},
		Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("etc/hostname", "single\n")}}}})
	ts.multi = s.Add(t, fixture.Image{Names: []string{"localhost/multi"}, Layers: []fixture.Layer{
		base,
		{Entries: []fixture.Entry{fixture.File("usr/bin/app", "app\n")}},
		{Entries: []fixture.Entry{fixture.Whiteout("etc/os-release"), fixture.File("etc/motd", "hi\n")}},
	}})
	ts.named = s.Add(t, fixture.Image{
		Names:  []string{"docker.io/library/alpine:3.19", "docker.io/library/alpine:latest", "quay.io/org/team/app:v1"},
		Layers: []fixture.Layer{base, {Entries: []fixture.Entry{fixture.File("named", "yes\n")}}},
	})
	digested := "quay.io/org/team/app@" + ts.named.ManifestDigest.String()
	if err := s.Store.AddNames(ts.named.ID, []string{digested}); err != nil {
		t.Fatal(err)
	}
	ts.named.Names = append(ts.named.Names, digested)
	ts.dangling = s.Add(t, fixture.Image{Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("d", "dangling\n")}}}})
	ts.list = s.AddList(t, []string{"localhost/list:1"}, []fixture.ListInstance{
		ts.single.Instance(),
		{Digest: ts.missing, Size: 123, OS: "linux", Architecture: "arm64", Variant: "v8"},
	})
	return ts
}

// mount opens the store as imagefs does and mounts its tree in-process.
func (ts *treeStore) mount(t *testing.T) (string, func()) {
	t.Helper()
	return mountInProcess(t, newTestStore(t, ts.s), fs.Options{})
}

func readDirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("readdir %s: %v", dir, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// readSized reads a file and checks that stat's size is what was read
// and that the mode is 0444.
func readSized(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("read %s: %v", path, err)
		return nil
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Errorf("stat %s: %v", path, err)
		return data
	}
	if st.Size() != int64(len(data)) || st.Mode() != 0o444 {
		t.Errorf("%s: stat size %d mode %v, read %d bytes; want equal sizes and -r--r--r--", path, st.Size(), st.Mode(), len(data))
	}
	return data
}

func ino(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Errorf("stat %s: %v", path, err)
	}
	return st.Ino
}

func sha256Of(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestTree checks every file and link of the tree through the kernel,
// against the store's own records, for both drivers.
func TestTree(t *testing.T) {
	for _, driver := range []string{"overlay", "vfs"} {
		t.Run(driver, func(t *testing.T) {
			ts := newTreeStore(t, driver)
			mnt, _ := ts.mount(t)
			checkImages(t, ts, mnt)
			checkNames(t, ts, mnt)
			checkDigests(t, ts, mnt)
			checkLayers(t, ts, mnt)
			checkList(t, ts, mnt)
			checkStatfs(t, ts, mnt)
		})
	}
}

// checkStatfs: statfs anywhere in the mount describes the file system of
// the store's graph root (df of the mount, NAME_MAX).
func checkStatfs(t *testing.T, ts *treeStore, mnt string) {
	var want syscall.Statfs_t
	if err := syscall.Statfs(ts.s.GraphRoot, &want); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{mnt, filepath.Join(mnt, "names"), filepath.Join(mnt, "images", ts.multi.ID, "rootfs")} {
		var got syscall.Statfs_t
		if err := syscall.Statfs(p, &got); err != nil {
			t.Errorf("statfs %s: %v", p, err)
			continue
		}
		if got.Blocks != want.Blocks || got.Bsize != want.Bsize || got.Namelen != want.Namelen || got.Files != want.Files {
			t.Errorf("statfs %s: blocks %d × %d, %d inodes, namelen %d; the graph root's: %d × %d, %d, %d",
				p, got.Blocks, got.Bsize, got.Files, got.Namelen, want.Blocks, want.Bsize, want.Files, want.Namelen)
		}
	}
}

func checkImages(t *testing.T, ts *treeStore, mnt string) {
	images, err := ts.s.Store.Images()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, img := range images {
		ids = append(ids, img.ID)
	}
	sort.Strings(ids)
	if got := readDirNames(t, filepath.Join(mnt, "images")); !slices.Equal(got, ids) {
		t.Errorf("images/ lists %q, the store holds %q", got, ids)
	}
	for _, a := range []fixture.Added{ts.single, ts.multi, ts.named, ts.dangling} {
		dir := filepath.Join(mnt, "images", a.ID)
		stored, err := ts.s.Store.Image(a.ID)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(dir)
		if err != nil || st.Mode() != iofs.ModeDir|0o555 || !st.ModTime().Equal(stored.Created) {
			t.Errorf("%s: %v %v; want dr-xr-xr-x with mtime %v", dir, st, err, stored.Created)
		}
		manifest := readSized(t, filepath.Join(dir, "manifest"))
		if string(manifest) != string(a.Manifest) {
			t.Errorf("%s: manifest differs from the stored one", a.ID[:12])
		}
		dg := readSized(t, filepath.Join(dir, "digest"))
		if string(dg) != a.ManifestDigest.String()+"\n" || "sha256:"+sha256Of(manifest)+"\n" != string(dg) {
			t.Errorf("%s: digest file %q, manifest digest %s, sha256(manifest) %s", a.ID[:12], dg, a.ManifestDigest, sha256Of(manifest))
		}
		if stored.Digest != a.ManifestDigest {
			t.Errorf("%s: the store's digest %s, the fixture's %s", a.ID[:12], stored.Digest, a.ManifestDigest)
		}
		config := readSized(t, filepath.Join(dir, "config"))
		if sha256Of(config) != a.ID || string(config) != string(a.Config) {
			t.Errorf("%s: sha256(config) = %s", a.ID[:12], sha256Of(config))
		}
		wantNames := ""
		for _, n := range stored.Names {
			wantNames += n + "\n"
		}
		if got := readSized(t, filepath.Join(dir, "names")); string(got) != wantNames {
			t.Errorf("%s: names %q, the store has %q", a.ID[:12], got, wantNames)
		}
		var inspect map[string]any
		if err := json.Unmarshal(readSized(t, filepath.Join(dir, "inspect.json")), &inspect); err != nil || inspect["Id"] != a.ID {
			t.Errorf("%s: inspect.json: Id %v, %v", a.ID[:12], inspect["Id"], err)
		}
		if h := readSized(t, filepath.Join(dir, "history")); len(h) == 0 {
			t.Errorf("%s: empty history", a.ID[:12])
		}
		// The layer chain, base first, is the store's.
		var chain []string
		for _, n := range readDirNames(t, filepath.Join(dir, "layers")) {
			target, err := os.Readlink(filepath.Join(dir, "layers", n))
			if err != nil || !strings.HasPrefix(target, "../../../layers/") {
				t.Errorf("%s/layers/%s -> %q, %v", a.ID[:12], n, target, err)
				continue
			}
			if want := fmt.Sprintf("%03d", len(chain)); n != want {
				t.Errorf("%s: layer link %q, want %q", a.ID[:12], n, want)
			}
			chain = append(chain, strings.TrimPrefix(target, "../../../layers/"))
			if _, err := os.Stat(filepath.Join(dir, "layers", n, "info.json")); err != nil {
				t.Errorf("%s/layers/%s does not lead to a layer: %v", a.ID[:12], n, err)
			}
		}
		if !slices.Equal(chain, a.LayerIDs) {
			t.Errorf("%s: layers/ chain %q, the store's %q", a.ID[:12], chain, a.LayerIDs)
		}
		// Any unique prefix of at least 3 hex digits is the same directory.
		for _, n := range []int{3, 12} {
			prefix := filepath.Join(mnt, "images", a.ID[:n])
			if got := ino(t, prefix); got != ino(t, dir) {
				t.Errorf("images/%s: ino %d, the full ID's %d", a.ID[:n], got, ino(t, dir))
			}
		}
		if got, err := os.ReadFile(filepath.Join(mnt, "images", a.ID[:7], "config")); err != nil || string(got) != string(config) {
			t.Errorf("config through a prefix: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, "images", ts.single.ID[:2])); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("a 2-digit prefix: %v, want ENOENT", err)
	}
	if got := readDirNames(t, filepath.Join(mnt, "images")); len(got) != len(ids) {
		t.Errorf("prefix lookups show up in images/: %q", got)
	}
	df := readSized(t, filepath.Join(mnt, "df"))
	if len(df) == 0 {
		t.Error("df is empty")
	}
}

func checkNames(t *testing.T, ts *treeStore, mnt string) {
	want := map[string]string{} // name → image ID
	images, _ := ts.s.Store.Images()
	for _, img := range images {
		for _, n := range img.Names {
			want[n] = img.ID
		}
	}
	got := map[string]string{}
	root := filepath.Join(mnt, "names")
	err := filepath.WalkDir(root, func(p string, d iofs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if d.Type() != iofs.ModeSymlink {
			t.Errorf("%s: %v, want a symlink", p, d.Type())
			return nil
		}
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		// Relative, up to the mount's root, into images/.
		rel, _ := filepath.Rel(filepath.Dir(p), mnt)
		if !strings.HasPrefix(target, rel+"/images/") {
			t.Errorf("%s -> %q, want %s/images/<id>", p, target, rel)
		}
		name, _ := filepath.Rel(root, p)
		got[name] = filepath.Base(target)
		if ino(t, p) != ino(t, filepath.Join(mnt, "images", filepath.Base(target))) {
			t.Errorf("%s does not resolve to its image directory", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("names/ holds\n%v\nthe store's names are\n%v", got, want)
	}
	// A repository without a tag is its :latest.
	latest, err1 := os.Readlink(filepath.Join(root, "docker.io/library/alpine:latest"))
	bare, err2 := os.Readlink(filepath.Join(root, "docker.io/library/alpine"))
	if err1 != nil || err2 != nil || bare != latest {
		t.Errorf("alpine -> %q (%v), alpine:latest -> %q (%v)", bare, err2, latest, err1)
	}
	if _, err := os.Lstat(filepath.Join(root, "docker.io/library/single")); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("single has no :latest, yet the bare name resolves: %v", err)
	}
}

func checkDigests(t *testing.T, ts *treeStore, mnt string) {
	want := map[string]string{}
	images, _ := ts.s.Store.Images()
	for _, img := range images {
		for _, d := range append([]digest.Digest{img.Digest}, img.Digests...) {
			if d != "" {
				want[d.String()] = img.ID
			}
		}
	}
	got := map[string]string{}
	for _, n := range readDirNames(t, filepath.Join(mnt, "digests")) {
		target, err := os.Readlink(filepath.Join(mnt, "digests", n))
		if err != nil || !strings.HasPrefix(target, "../images/") {
			t.Errorf("digests/%s -> %q, %v", n, target, err)
		}
		got[n] = strings.TrimPrefix(target, "../images/")
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("digests/ holds\n%v\nthe store's digests are\n%v", got, want)
	}
	if _, ok := got[ts.list.ManifestDigest.String()]; !ok {
		t.Errorf("the list's digest is missing from digests/")
	}
}

func checkLayers(t *testing.T, ts *treeStore, mnt string) {
	layers, err := ts.s.Store.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, l := range layers {
		ids = append(ids, l.ID)
		dir := filepath.Join(mnt, "layers", l.ID)
		var info map[string]any
		if err := json.Unmarshal(readSized(t, filepath.Join(dir, "info.json")), &info); err != nil {
			t.Errorf("layers/%s/info.json: %v", l.ID[:12], err)
		}
		target, err := os.Readlink(filepath.Join(dir, "parent"))
		switch {
		case l.Parent == "" && !errors.Is(err, iofs.ErrNotExist):
			t.Errorf("base layer %s: parent -> %q, %v; want none", l.ID[:12], target, err)
		case l.Parent != "" && (err != nil || target != "../"+l.Parent):
			t.Errorf("layer %s: parent -> %q, %v; want ../%s", l.ID[:12], target, err, l.Parent)
		}
	}
	sort.Strings(ids)
	// A unique prefix is the same directory (as podman image tree shows
	// layer IDs, 12 digits), not listed.
	for _, id := range ids {
		if got, want := ino(t, filepath.Join(mnt, "layers", id[:12])), ino(t, filepath.Join(mnt, "layers", id)); got != want {
			t.Errorf("layers/%s: inode %d, the full ID's is %d", id[:12], got, want)
		}
	}
	if got := readDirNames(t, filepath.Join(mnt, "layers")); !slices.Equal(got, ids) {
		t.Errorf("layers/ lists %q, the store holds %q", got, ids)
	}
	// multi and named share their base layer.
	if ts.multi.LayerIDs[0] != ts.named.LayerIDs[0] {
		t.Logf("note: the store did not share the identical base layer")
	}
}

func checkList(t *testing.T, ts *treeStore, mnt string) {
	dir := filepath.Join(mnt, "images", ts.list.ID)
	var own []string
	for _, n := range readDirNames(t, dir) {
		if n != "rootfs" {
			own = append(own, n)
		}
	}
	if want := []string{"digest", "inspect.json", "instances", "manifest", "names"}; !slices.Equal(own, want) {
		t.Errorf("a list's directory lists %q, want %q", own, want)
	}
	for _, n := range []string{"config", "layers", "history", "rootfs"} {
		if _, err := os.Stat(filepath.Join(dir, n)); !errors.Is(err, iofs.ErrNotExist) {
			t.Errorf("list %s: %v, want ENOENT", n, err)
		}
	}
	manifest := readSized(t, filepath.Join(dir, "manifest"))
	if string(manifest) != string(ts.list.Manifest) || "sha256:"+sha256Of(manifest)+"\n" != string(readSized(t, filepath.Join(dir, "digest"))) {
		t.Errorf("list manifest/digest do not match the stored list")
	}
	if got := string(readSized(t, filepath.Join(dir, "names"))); got != "localhost/list:1\n" {
		t.Errorf("list names %q", got)
	}
	var inspect map[string]any
	if err := json.Unmarshal(readSized(t, filepath.Join(dir, "inspect.json")), &inspect); err != nil || inspect["Id"] != ts.list.ID {
		t.Errorf("list inspect.json: Id %v, %v", inspect["Id"], err)
	}
	inst := filepath.Join(dir, "instances")
	want := []string{ts.single.ManifestDigest.String(), ts.missing.String(), "platforms"}
	sort.Strings(want)
	if got := readDirNames(t, inst); !slices.Equal(got, want) {
		t.Errorf("instances/ lists %q, want %q", got, want)
	}
	if target, err := os.Readlink(filepath.Join(inst, ts.single.ManifestDigest.String())); err != nil || target != "../../"+ts.single.ID {
		t.Errorf("local instance -> %q, %v", target, err)
	}
	if ino(t, filepath.Join(inst, ts.single.ManifestDigest.String())) != ino(t, filepath.Join(mnt, "images", ts.single.ID)) {
		t.Errorf("the local instance does not resolve to its image")
	}
	if _, err := os.Stat(filepath.Join(inst, ts.missing.String())); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("missing instance: %v, want a dangling link", err)
	}
	platforms := string(readSized(t, filepath.Join(inst, "platforms")))
	wantPlatforms := fmt.Sprintf("%s %s/%s\n%s linux/arm64/v8\n", ts.single.ManifestDigest, ts.single.Platform.OS, ts.single.Platform.Architecture, ts.missing)
	if ts.single.Platform.Variant != "" {
		wantPlatforms = fmt.Sprintf("%s %s/%s/%s\n%s linux/arm64/v8\n", ts.single.ManifestDigest, ts.single.Platform.OS, ts.single.Platform.Architecture, ts.single.Platform.Variant, ts.missing)
	}
	if platforms != wantPlatforms {
		t.Errorf("platforms = %q, want %q", platforms, wantPlatforms)
	}
}

// TestTreeStableInodes: the same image, name, digest and layer have the
// same inode number through every path and on a new mount.
func TestTreeStableInodes(t *testing.T) {
	ts := newTreeStore(t, "overlay")
	paths := []string{
		"images/" + ts.named.ID, "images/" + ts.named.ID + "/manifest", "images/" + ts.named.ID + "/layers",
		"layers/" + ts.named.LayerIDs[1], "layers/" + ts.named.LayerIDs[1] + "/info.json", "df", "names/docker.io/library",
	}
	links := []string{"names/docker.io/library/alpine:3.19", "digests/" + ts.named.ManifestDigest.String(), "images/" + ts.named.ID + "/layers/001"}
	collect := func(mnt string) map[string]uint64 {
		inos := map[string]uint64{}
		for _, p := range paths {
			inos[p] = ino(t, filepath.Join(mnt, p))
		}
		for _, p := range links {
			st, err := os.Lstat(filepath.Join(mnt, p))
			if err != nil {
				t.Fatal(err)
			}
			inos[p] = st.Sys().(*syscall.Stat_t).Ino
		}
		return inos
	}
	mnt, unmount := ts.mount(t)
	first := collect(mnt)
	again := collect(mnt)
	seen := map[uint64]string{}
	for p, n := range first {
		if again[p] != n {
			t.Errorf("%s: ino %d, then %d", p, n, again[p])
		}
		if other, dup := seen[n]; dup {
			t.Errorf("%s and %s share inode %d", p, other, n)
		}
		seen[n] = p
	}
	if ino(t, filepath.Join(mnt, "names/docker.io/library/alpine:3.19")) != first["images/"+ts.named.ID] {
		t.Errorf("a name does not lead to its image's inode")
	}
	unmount()
	mnt2, _ := ts.mount(t)
	if second := collect(mnt2); fmt.Sprint(second) != fmt.Sprint(first) {
		t.Errorf("inode numbers changed across remounts:\n%v\n%v", first, second)
	}
}

// TestTreeReadOnly: the parts of the tree that are never written (an
// image's own entries, layers/, df, a list's instances/, the root) refuse
// every change through the kernel with EROFS, and the store stays as it
// was. (names/, rmdir images/<id> and rm digests/… are the writes issue's,
// tested there.)
func TestTreeReadOnly(t *testing.T) {
	ts := newTreeStore(t, "vfs")
	before, err := ts.s.Store.Images()
	if err != nil {
		t.Fatal(err)
	}
	mnt, _ := ts.mount(t)
	p := func(s string) string { return filepath.Join(mnt, s) }
	img := p("images/" + ts.named.ID)
	inst := p("images/" + ts.list.ID + "/instances")
	names, err := os.ReadFile(filepath.Join(img, "names"))
	if err != nil {
		t.Fatal(err)
	}
	changes := p("layers/" + ts.single.LayerIDs[0] + "/changes")
	var st syscall.Stat_t
	if err := syscall.Stat(changes, &st); err != nil || st.Blocks != (st.Size+511)/512 {
		t.Errorf("changes: %d blocks for %d bytes (%v), want %d", st.Blocks, st.Size, err, (st.Size+511)/512)
	}
	now := time.Now()
	refused := map[string]error{
		"mkdir at the root":   os.Mkdir(p("new"), 0o755),
		"rm df":               os.Remove(p("df")),
		"write manifest":      os.WriteFile(filepath.Join(img, "manifest"), []byte("x"), 0o644),
		"append to names":     appendFile(filepath.Join(img, "names"), "localhost/x:1\n"),
		"create in image":     os.WriteFile(filepath.Join(img, "new"), []byte("x"), 0o644),
		"mkdir in image":      os.Mkdir(filepath.Join(img, "dir"), 0o755),
		"rm config":           os.Remove(filepath.Join(img, "config")),
		"mv config":           os.Rename(filepath.Join(img, "config"), filepath.Join(img, "config2")),
		"chmod names":         os.Chmod(filepath.Join(img, "names"), 0o644),
		"chown inspect.json":  os.Chown(filepath.Join(img, "inspect.json"), 1, 1),
		"truncate df":         os.Truncate(p("df"), 0),
		"utimes df":           os.Chtimes(p("df"), now, now),
		"setxattr config":     syscall.Setxattr(filepath.Join(img, "config"), "user.x", []byte("y"), 0),
		"rm layers/NNN":       os.Remove(filepath.Join(img, "layers/000")),
		"ln -s in layers/":    os.Symlink("../../../layers/"+ts.single.LayerIDs[0], filepath.Join(img, "layers/009")),
		"hard link in image":  os.Link(filepath.Join(img, "manifest"), filepath.Join(img, "m")),
		"mkfifo in image":     syscall.Mkfifo(filepath.Join(img, "fifo"), 0o644),
		"rmdir layers/<id>":   os.Remove(p("layers/" + ts.single.LayerIDs[0])),
		"rm info.json":        os.Remove(p("layers/" + ts.single.LayerIDs[0] + "/info.json")),
		"mkdir in layers/":    os.Mkdir(p("layers/new"), 0o755),
		"rm instance":         os.Remove(filepath.Join(inst, ts.single.ManifestDigest.String())),
		"mv platforms":        os.Rename(filepath.Join(inst, "platforms"), filepath.Join(inst, "p")),
		"write platforms":     os.WriteFile(filepath.Join(inst, "platforms"), []byte("x"), 0o644),
		"mmap write names":    testenv.MmapWrite(filepath.Join(img, "names"), []byte("HACK")),
		"fallocate config":    testenv.Fallocate(filepath.Join(img, "config")),
		"O_TMPFILE in image":  testenv.OpenTmpfile(img),
		"O_TMPFILE in rootfs": testenv.OpenTmpfile(filepath.Join(img, "rootfs")),
		"fallocate in rootfs": testenv.Fallocate(filepath.Join(img, "rootfs/named")),
		"write changes":       appendFile(changes, "A /x\n"),
		"fallocate changes":   testenv.Fallocate(changes),
		"setxattr changes":    syscall.Setxattr(changes, "user.x", []byte("y"), 0),
		"chmod changes":       os.Chmod(changes, 0o644),
	}
	for op, err := range refused {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", op, err)
		}
	}
	// Nothing is ever held back to sync: fsync succeeds (sync FILE).
	for _, f := range []string{mnt, p("df"), img, filepath.Join(img, "config"), filepath.Join(img, "rootfs/named"), p("names")} {
		if err := testenv.Fsync(f); err != nil {
			t.Errorf("fsync %s: %v", f, err)
		}
	}
	testenv.WaitContent(t, filepath.Join(img, "names"), string(names))
	after, err := ts.s.Store.Images()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("the store changed:\n%v\n%v", before, after)
	}
}

func appendFile(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// TestListingsAbandonedThenForgotten: directories listed half way and
// then forgotten by the kernel (dropped from its caches) leave nothing
// behind that breaks later listings: every listing of the tree still
// works when newer listings push the abandoned ones out.
func TestListingsAbandonedThenForgotten(t *testing.T) {
	s := fixture.NewStore(t, "overlay")
	var entries []fixture.Entry
	for d := 0; d < 70; d++ {
		for f := 0; f < 100; f++ {
			entries = append(entries, fixture.File(fmt.Sprintf("d%02d/file-with-a-longish-name-%03d", d, f), ""))
		}
	}
	added := s.Add(t, fixture.Image{Names: []string{"localhost/wide:1"}, Layers: []fixture.Layer{{Entries: entries}}})
	mnt, _ := mountInProcess(t, newTestStore(t, s), fs.Options{})
	buf := make([]byte, 1024)
	for d := 0; d < 70; d++ {
		fd, err := unix.Open(filepath.Join(mnt, "images", added.ID, "rootfs", fmt.Sprintf("d%02d", d)), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Getdents(fd, buf); err != nil { // the first few names only
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	// The kernel forgets the directories it no longer uses.
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 80; i++ {
		for _, dir := range []string{"names", "images", "names/localhost"} {
			if _, err := os.ReadDir(filepath.Join(mnt, dir)); err != nil {
				t.Fatalf("listing %s (%d): %v", dir, i, err)
			}
		}
	}
}

// TestTreeConfigMissing: an image whose config blob is gone from the store
// (a damaged store) lists config but cannot read it: EIO with the cause in
// the log, as inspect.json and history, not ENOENT for an entry listed.
func TestTreeConfigMissing(t *testing.T) {
	s := fixture.NewStore(t, "vfs")
	img := s.Add(t, fixture.Image{Names: []string{"localhost/broken:1"},
		Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("f", "f\n")}}}})
	key := "sha256:" + img.ID // the config's big-data key, as containers/storage names its file
	blob := filepath.Join(s.GraphRoot, "vfs-images", img.ID, "="+base64.StdEncoding.EncodeToString([]byte(key)))
	saved, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(blob); err != nil {
		t.Fatalf("removing the config blob: %v", err)
	}
	logs := &logBuf{}
	mnt, _ := mountInProcess(t, newTestStore(t, s), fs.Options{Log: log.New(logs, "", 0)})
	dir := filepath.Join(mnt, "images", img.ID)
	if !slices.Contains(readDirNames(t, dir), "config") {
		t.Fatalf("images/<id>/ does not list config")
	}
	for _, f := range []string{"config", "inspect.json"} {
		if _, err := os.ReadFile(filepath.Join(dir, f)); !errors.Is(err, syscall.EIO) {
			t.Errorf("cat %s: %v, want EIO", f, err)
		}
	}
	if lines := strings.Join(logs.lines(), "\n"); !strings.Contains(lines, "/images/"+img.ID+"/config") {
		t.Errorf("no log line names the config:\n%s", lines)
	}
	// Put back (podman's repair, skopeo copy of the image again, writes
	// the same blob under the same manifest), it reads again.
	if err := os.WriteFile(blob, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"config", "inspect.json"} {
		if _, err := os.ReadFile(filepath.Join(dir, f)); err != nil {
			t.Errorf("cat %s after the config is back: %v", f, err)
		}
	}
}
