package storageview

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/storage"
)

func hexID(prefix string, n int) string {
	s := fmt.Sprintf("%s%0*x", prefix, 64-len(prefix), n)
	return s[:64]
}

func dg(s string) digest.Digest { return digest.FromString(s) }

// records makes store records: a base layer, a two-layer chain on it, an
// image on each top, one image with two names, a dangling image, a
// layerless list, a container.
func records() ([]storage.Image, []storage.Layer, []storage.Container) {
	l1, l2, l3 := hexID("1111", 1), hexID("2222", 2), hexID("3333", 3)
	layers := []storage.Layer{
		{ID: l3, Parent: l2, UncompressedDigest: dg("l3"), UncompressedSize: 300},
		{ID: l1, UncompressedDigest: dg("l1"), UncompressedSize: 100, CompressedDigest: dg("c1"), CompressedSize: 50},
		{ID: l2, Parent: l1, UncompressedDigest: dg("l2"), UncompressedSize: 200},
		{ID: l1, UncompressedSize: 999}, // same ID again (an additional store): the first wins
	}
	images := []storage.Image{
		{ID: hexID("abc1", 1), Names: []string{"docker.io/library/alpine:3.19", "quay.io/org/app:1"}, TopLayer: l3,
			Digest: dg("m1"), Digests: []digest.Digest{dg("z"), dg("m1"), dg("a")},
			BigDataDigests: map[string]digest.Digest{"manifest": dg("m1")}, BigDataSizes: map[string]int64{"manifest": 10, "cfg": 5}},
		{ID: hexID("abc2", 2), Names: []string{"localhost/base:latest"}, TopLayer: l1,
			Digest: dg("m2"), BigDataDigests: map[string]digest.Digest{"manifest": dg("m2")}},
		{ID: hexID("def0", 3), TopLayer: l2, Digest: dg("m3")}, // dangling, no big data digests
		{ID: hexID("fed0", 4), Names: []string{"localhost/list:1"},
			Digest: dg("stale"), BigDataDigests: map[string]digest.Digest{"manifest": dg("list")}},
		{ID: hexID("abc1", 1), Names: []string{"shadowed:1"}}, // duplicate ID: the first wins
	}
	containers := []storage.Container{
		{ID: "c2", ImageID: hexID("abc2", 2)},
		{ID: "c1", ImageID: hexID("abc2", 2)},
	}
	return images, layers, containers
}

func TestBuildIndex(t *testing.T) {
	images, layers, containers := records()
	var asked []string
	isList := func(si *storage.Image) bool {
		asked = append(asked, si.ID)
		return si.ID == hexID("fed0", 4)
	}
	ix := buildIndex(7, images, layers, containers, isList)

	if ix.Generation != 7 || len(ix.Images) != 4 || len(ix.Layers) != 3 {
		t.Fatalf("generation %d, %d images, %d layers; want 7, 4, 3", ix.Generation, len(ix.Images), len(ix.Layers))
	}
	if !slices.Equal(asked, []string{hexID("fed0", 4)}) {
		t.Errorf("isList asked about %v; only layerless images should be asked", asked)
	}
	a := ix.ImageByID(hexID("abc1", 1))
	l1, l2, l3 := hexID("1111", 1), hexID("2222", 2), hexID("3333", 3)
	if !slices.Equal(a.Layers, []string{l1, l2, l3}) {
		t.Errorf("chain %v, want base first %v", a.Layers, []string{l1, l2, l3})
	}
	if !slices.Equal(a.Names, []string{"docker.io/library/alpine:3.19", "quay.io/org/app:1"}) {
		t.Errorf("names %v: the first record of a duplicate ID must win", a.Names)
	}
	wantDigests := []digest.Digest{dg("m1")}
	rest := []digest.Digest{dg("z"), dg("a")}
	slices.Sort(rest)
	wantDigests = append(wantDigests, rest...)
	if a.Digest != dg("m1") || !slices.Equal(a.Digests, wantDigests) {
		t.Errorf("digest %s digests %v, want %s %v", a.Digest, a.Digests, dg("m1"), wantDigests)
	}
	if a.metaSize != 15 {
		t.Errorf("metaSize %d, want 15", a.metaSize)
	}
	list := ix.ImageByID(hexID("fed0", 4))
	if !list.IsList || list.Digest != dg("list") || !slices.Contains(list.Digests, dg("stale")) {
		t.Errorf("list: IsList %v Digest %s Digests %v; want the manifest item's digest first, the record's kept", list.IsList, list.Digest, list.Digests)
	}
	if ix.ImageByDigest(dg("stale")) != list || ix.ImageByDigest(dg("list")) != list {
		t.Errorf("both digests of the list must resolve to it")
	}
	d := ix.ImageByID(hexID("def0", 3))
	if d.Digest != dg("m3") || len(d.Names) != 0 {
		t.Errorf("dangling: digest %s names %v", d.Digest, d.Names)
	}
	base := ix.ImageByID(hexID("abc2", 2))
	if !slices.Equal(base.Containers, []string{"c1", "c2"}) {
		t.Errorf("containers %v, want sorted [c1 c2]", base.Containers)
	}
	if l := ix.Layer(l1); l.UncompressedSize != 100 || l.CompressedSize != 50 ||
		!slices.Equal(l.Images, []string{hexID("abc1", 1), hexID("abc2", 2), hexID("def0", 3)}) {
		t.Errorf("layer 1: %+v", l)
	}
	if l := ix.Layer(l3); l.CompressedSize != -1 || !slices.Equal(l.Images, []string{hexID("abc1", 1)}) {
		t.Errorf("layer 3: compressed size %d (want -1, no digest), images %v", l.CompressedSize, l.Images)
	}
	if on := ix.ImagesByTopLayer(l1); len(on) != 1 || on[0] != base {
		t.Errorf("ImagesByTopLayer(l1) = %v", on)
	}
	if on := ix.ImagesByTopLayer(""); len(on) != 1 || on[0] != list {
		t.Errorf("ImagesByTopLayer(\"\") = %v", on)
	}
}

func TestBuildIndexMissingLayer(t *testing.T) {
	// A chain whose middle layer is gone stops there.
	layers := []storage.Layer{{ID: "top", Parent: "gone"}}
	images := []storage.Image{{ID: hexID("a", 1), TopLayer: "top"}}
	ix := buildIndex(1, images, layers, nil, nil)
	if got := ix.ImageByID(hexID("a", 1)).Layers; !slices.Equal(got, []string{"top"}) {
		t.Errorf("chain %v, want [top]", got)
	}
	// A loop in the parents does not hang.
	layers = []storage.Layer{{ID: "x", Parent: "y"}, {ID: "y", Parent: "x"}}
	images = []storage.Image{{ID: hexID("b", 1), TopLayer: "x"}}
	ix = buildIndex(1, images, layers, nil, nil)
	if n := len(ix.ImageByID(hexID("b", 1)).Layers); n > 3 {
		t.Errorf("looping chain has %d entries", n)
	}
}

func TestResolveIDPrefix(t *testing.T) {
	images, layers, containers := records()
	ix := buildIndex(1, images, layers, containers, nil)
	tests := []struct {
		prefix     string
		want       string
		candidates int
	}{
		{"abc1", hexID("abc1", 1), 0},
		{hexID("abc2", 2), hexID("abc2", 2), 0},
		{"abc", "", 2},  // ambiguous: abc1…, abc2…
		{"ab", "", 0},   // too short
		{"ABC1", "", 0}, // not lower-case hex
		{"abz", "", 0},
		{"fed", hexID("fed0", 4), 0},
		{"999", "", 0},
		{hexID("abc2", 2) + "0", "", 0}, // longer than an ID
	}
	for _, tc := range tests {
		img, cands := ix.ResolveIDPrefix(tc.prefix)
		got := ""
		if img != nil {
			got = img.ID
		}
		if got != tc.want || len(cands) != tc.candidates {
			t.Errorf("ResolveIDPrefix(%q) = %q, %d candidates; want %q, %d", tc.prefix, got, len(cands), tc.want, tc.candidates)
		}
	}
}

func TestNamesTree(t *testing.T) {
	images := []storage.Image{
		{ID: hexID("a", 1), Names: []string{"docker.io/library/alpine:3.19", "docker.io/library/alpine:latest"}},
		{ID: hexID("b", 2), Names: []string{"quay.io/org/app@sha256:" + strings.Repeat("e", 64), "localhost/x:1"}},
	}
	ix := buildIndex(1, images, nil, nil, nil)
	lib := ix.NameDir([]string{"docker.io", "library"})
	if lib == nil || lib.Leaves["alpine:3.19"] != hexID("a", 1) || lib.Leaves["alpine:latest"] != hexID("a", 1) {
		t.Fatalf("names/docker.io/library = %+v", lib)
	}
	org := ix.NameDir([]string{"quay.io", "org"})
	if org == nil || org.Leaves["app@sha256:"+strings.Repeat("e", 64)] != hexID("b", 2) {
		t.Errorf("names/quay.io/org = %+v", org)
	}
	root := ix.NameDir(nil)
	if got := slices.Sorted(func(yield func(string) bool) {
		for k := range root.Dirs {
			if !yield(k) {
				return
			}
		}
	}); !slices.Equal(got, []string{"docker.io", "localhost", "quay.io"}) {
		t.Errorf("names/ has %v", got)
	}
	if ix.NameDir([]string{"docker.io", "nope"}) != nil {
		t.Errorf("NameDir of a missing path is not nil")
	}
	if ix.ImageByName("localhost/x:1").ID != hexID("b", 2) || ix.ImageByName("localhost/x:2") != nil {
		t.Errorf("ImageByName")
	}
}

// TestNamesOfOtherCopies: an image that an additional store holds too,
// under other names, is found by those names as well (podman finds it by
// them), while its own names stay those of the copy found first; a name
// another image holds earlier in the lookup stays that image's.
func TestNamesOfOtherCopies(t *testing.T) {
	id, other := hexID("a", 1), hexID("b", 2)
	images := []storage.Image{
		{ID: id, Names: []string{"localhost/own:1"}},
		{ID: other, Names: []string{"localhost/taken:1"}},
		{ID: id, Names: []string{"localhost/own:1", "localhost/ro:1", "localhost/taken:1"}, ReadOnly: true},
	}
	ix := buildIndex(1, images, nil, nil, nil)
	if img := ix.ImageByName("localhost/ro:1"); img == nil || img.ID != id {
		t.Errorf("ImageByName(localhost/ro:1) = %+v, want %s", img, id)
	}
	if got := ix.NameDir([]string{"localhost"}).Leaves["ro:1"]; got != id {
		t.Errorf("names/localhost/ro:1 leads to %q, want %s", got, id)
	}
	if img := ix.ImageByName("localhost/taken:1"); img == nil || img.ID != other {
		t.Errorf("ImageByName(localhost/taken:1) = %+v, want the writable store's %s", img, other)
	}
	if img := ix.ImageByID(id); img.ReadOnly || !slices.Equal(img.Names, []string{"localhost/own:1"}) {
		t.Errorf("the image is its first copy: %+v", img)
	}
	// A change of the other copy's names is a change of the records.
	images[2].Names = []string{"localhost/ro:2"}
	if sameRecords(ix, buildIndex(2, images, nil, nil, nil)) {
		t.Errorf("a new name of the other copy did not count as a change")
	}
}

func TestSameRecords(t *testing.T) {
	images, layers, containers := records()
	a := buildIndex(1, images, layers, containers, nil)
	images, layers, containers = records()
	b := buildIndex(2, images, layers, containers, nil)
	if !sameRecords(a, b) {
		t.Errorf("indexes of the same records differ")
	}
	images, layers, containers = records()
	images[1].Names = append(images[1].Names, "localhost/base:2")
	if sameRecords(a, buildIndex(3, images, layers, containers, nil)) {
		t.Errorf("a new name is not a change")
	}
	images, layers, containers = records()
	if sameRecords(a, buildIndex(3, images, layers, containers[:1], nil)) {
		t.Errorf("a removed container is not a change")
	}
	images, layers, containers = records()
	layers[0].UncompressedSize = 301
	if sameRecords(a, buildIndex(3, images, layers, containers, nil)) {
		t.Errorf("a layer size is not a change")
	}
}

// scaleRecords are 1000 images of 3 layers each, one name each: the
// records of the benchmark's scale store.
func scaleRecords() ([]storage.Image, []storage.Layer) {
	var layers []storage.Layer
	var images []storage.Image
	created := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 1000 {
		parent := ""
		for j := range 3 {
			id := hexID(fmt.Sprintf("%03x%x", i, j), i*3+j)
			layers = append(layers, storage.Layer{ID: id, Parent: parent, UncompressedDigest: dg(id), UncompressedSize: 1000, Created: created})
			parent = id
		}
		id := digest.FromString(fmt.Sprint(i)).Encoded()
		images = append(images, storage.Image{
			ID: id, TopLayer: parent, Digest: dg(id + "m"),
			Names:          []string{fmt.Sprintf("registry.example.com/team%d/app%d:v%d", i%10, i, i%3)},
			NamesHistory:   []string{fmt.Sprintf("registry.example.com/team%d/app%d:v%d", i%10, i, i%3)},
			BigDataDigests: map[string]digest.Digest{"manifest": dg(id + "m")},
			BigDataSizes:   map[string]int64{"manifest": 500, "sha256:" + id: 1500},
			Created:        created,
		})
	}
	return images, layers
}

// TestBuildIndexScale: at 1000 images every image, name and layer chain
// is found.
func TestBuildIndexScale(t *testing.T) {
	images, layers := scaleRecords()
	ix := buildIndex(1, images, layers, nil, nil)
	if len(ix.Images) != 1000 || len(ix.Layers) != 3000 {
		t.Fatalf("%d images, %d layers", len(ix.Images), len(ix.Layers))
	}
	for i := range images {
		img := ix.ImageByName(images[i].Names[0])
		if img == nil || img.ID != images[i].ID || len(img.Layers) != 3 {
			t.Fatalf("image %d by name: %+v", i, img)
		}
		for _, l := range img.Layers {
			if users := ix.Layer(l).Images; len(users) != 1 || users[0] != img.ID {
				t.Fatalf("layer %s used by %v, want %s", l, users, img.ID)
			}
		}
	}
}

// BenchmarkBuildIndex is a rebuild at 1000 images over 3000 layers (the
// index is rebuilt whenever the store changes).
func BenchmarkBuildIndex(b *testing.B) {
	images, layers := scaleRecords()
	for b.Loop() {
		buildIndex(1, slices.Clone(images), slices.Clone(layers), nil, nil)
	}
}

func TestWatcher(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.lock"), filepath.Join(dir, "missing.lock")
	writeFile(t, a, nil) // a fresh lock file is empty
	w := newWatcher([]string{a, b})
	defer w.close()
	if !w.changed() {
		t.Errorf("first check reports no change")
	}
	if w.changed() {
		t.Errorf("unchanged files report a change")
	}
	token := []byte(strings.Repeat("1", lastWriterSize))
	if err := os.WriteFile(a, token, 0o644); err != nil {
		t.Fatal(err)
	}
	if !w.changed() {
		t.Errorf("a new token is not a change")
	}
	// Same length, one byte different, same mtime second: still a change.
	f, err := os.OpenFile(a, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("2"), 63); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if !w.changed() {
		t.Errorf("a token differing in its last byte is not a change")
	}
	writeFile(t, b, token)
	if !w.changed() {
		t.Errorf("a lock file appearing is not a change")
	}
	if w.changed() {
		t.Errorf("spurious change")
	}
	w.forget()
	if !w.changed() {
		t.Errorf("forget: next check must report a change")
	}
}

// BenchmarkWatcher is one check of two lock files, one of them missing.
func BenchmarkWatcher(b *testing.B) {
	dir := b.TempDir()
	a := filepath.Join(dir, "a.lock")
	writeFile(b, a, []byte(strings.Repeat("1", lastWriterSize)))
	w := newWatcher([]string{a, filepath.Join(dir, "missing.lock")})
	defer w.close()
	for b.Loop() {
		w.changed()
	}
}

func TestAreParentAndChild(t *testing.T) {
	t1 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Second)
	h := func(by string, at *time.Time, empty bool) imgspecv1.History {
		return imgspecv1.History{CreatedBy: by, Created: at, EmptyLayer: empty}
	}
	parent := &imgspecv1.Image{
		RootFS:  imgspecv1.RootFS{DiffIDs: []digest.Digest{dg("a")}},
		History: []imgspecv1.History{h("ADD", &t1, false)},
	}
	child := &imgspecv1.Image{
		RootFS:  imgspecv1.RootFS{DiffIDs: []digest.Digest{dg("a"), dg("b")}},
		History: []imgspecv1.History{h("ADD", &t1, false), h("COPY", &t2, false)},
	}
	if !areParentAndChild(parent, child) {
		t.Errorf("parent/child not recognized")
	}
	if areParentAndChild(child, parent) {
		t.Errorf("child/parent recognized backwards")
	}
	other := *child
	other.History = []imgspecv1.History{h("ADD", &t2, false), h("COPY", &t2, false)}
	if areParentAndChild(parent, &other) {
		t.Errorf("different creation time accepted")
	}
	other = *child
	other.RootFS.DiffIDs = []digest.Digest{dg("x"), dg("b")}
	if areParentAndChild(parent, &other) {
		t.Errorf("different layers accepted")
	}
	grandchild := &imgspecv1.Image{
		RootFS:  child.RootFS,
		History: append(slices.Clone(child.History), h("ENV", &t2, true)),
	}
	if areParentAndChild(parent, grandchild) {
		t.Errorf("two history entries apart accepted")
	}
	if !areParentAndChild(child, grandchild) {
		t.Errorf("empty-layer child not recognized")
	}
}

func TestPodmanSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 999: "999 B", 2048: "2.05 kB", 10240: "10.2 kB", 1000000: "1 MB", 123456789: "123 MB"} {
		if got := podmanSize(n); got != want {
			t.Errorf("podmanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestIndexLookupOrder: a name or digest held by images of several stores
// leads where containers/storage's lookup finds it, whatever the IDs'
// order: the writable store first, then the additional stores in their
// order (the order of the store's listing).
func TestIndexLookupOrder(t *testing.T) {
	w1, w2, r1, r2 := hexID("1111", 1), hexID("ffff", 2), hexID("dddd", 3), hexID("eeee", 4)
	images := []storage.Image{ // as MultiList lists them
		{ID: w1, Names: []string{"localhost/x:1"}, Digest: dg("w1")},
		{ID: w2, Digest: dg("shared")},
		{ID: r1, Names: []string{"localhost/x:1", "localhost/y:1"}, Digest: dg("r1"), Digests: []digest.Digest{dg("shared")}, ReadOnly: true},
		{ID: r2, Names: []string{"localhost/y:1"}, Digest: dg("r2"), ReadOnly: true},
	}
	ix := buildIndex(1, images, nil, nil, nil)
	idOf := func(img *Image) string {
		if img == nil {
			return "none"
		}
		return img.ID
	}
	for name, want := range map[string]string{"localhost/x:1": w1, "localhost/y:1": r1} {
		if got := idOf(ix.ImageByName(name)); got != want {
			t.Errorf("ImageByName(%s) = %s, want %s", name, got, want)
		}
		leaf := strings.TrimPrefix(name, "localhost/")
		if got := ix.NameDir([]string{"localhost"}).Leaves[leaf]; got != want {
			t.Errorf("names/%s leads to %s, want %s", name, got, want)
		}
	}
	if got := idOf(ix.ImageByDigest(dg("shared"))); got != w2 {
		t.Errorf("ImageByDigest(shared) = %s, want the writable %s", got, w2)
	}
}
