package storageview

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/internal/fixture"
	"github.com/imagefs/imagefs/internal/testenv"
	digest "github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/manifest"
)

// podmanStore fills a fresh overlay store with podman itself, covering what
// inspect, history and df must get right:
//   - base: imported tarball (OCI), two names (tagged in two repositories)
//   - child: built FROM base (OCI), a COPY layer plus empty LABEL/ENV
//     entries, leaving intermediate (nameless) images behind
//   - dock: docker format, healthcheck, author, user, ports, volumes,
//     labels with <, > and &, two names
//   - plain: an imported tarball without config changes, no labels
//   - a dangling import (no name)
//   - list: a manifest list of base and child (podman manifest create/add)
//   - old: plain stored again with a docker schema 1 manifest (skopeo
//     copy --format v2s1), which is signed and has no config blob
//   - a container using child, so child is the one active image
func podmanStore(t *testing.T) *fixture.Store {
	t.Helper()
	s, dir := newPodmanStore(t, map[string]string{"etc/": "", "etc/hello": "hello\n", "bin/": ""})
	base := filepath.Join(dir, "base.tar")
	other := filepath.Join(dir, "other.tar")
	writeFile(t, other, tarOf(t, map[string]string{"data/": "", "data/x": strings.Repeat("x", 5000)}))

	s.PodmanOutput(t, "import", "--change", "LABEL a=b", "--change", `CMD ["/bin/sh"]`, base, "localhost/base:1")
	s.PodmanOutput(t, "tag", "localhost/base:1", "quay.io/org/base:latest")
	s.PodmanOutput(t, "import", other, "localhost/plain:1")
	s.PodmanOutput(t, "import", "--change", "LABEL dangling=yes", other)

	child := filepath.Join(dir, "child")
	writeFile(t, filepath.Join(child, "Containerfile"), []byte("FROM localhost/base:1\nCOPY Containerfile /x\nLABEL foo=bar\nENV A=b\n"))
	s.PodmanOutput(t, "build", "--format", "oci", "-t", "localhost/child:1", child)

	dock := filepath.Join(dir, "dock")
	writeFile(t, filepath.Join(dock, "Containerfile"), []byte(`FROM localhost/base:1
LABEL weird="a<b>&c" empty=""
USER 1000:1000
MAINTAINER someone <me@example.com>
HEALTHCHECK --interval=5s CMD ["/bin/true"]
ENTRYPOINT ["/bin/sh","-c"]
EXPOSE 80/tcp
VOLUME /data
WORKDIR /srv
STOPSIGNAL SIGTERM
COPY Containerfile /y
`))
	s.PodmanOutput(t, "build", "--format", "docker", "-t", "localhost/dock:1", "-t", "example.com/org/dock:2", dock)

	storage := "containers-storage:[overlay@" + s.GraphRoot + "+" + s.RunRoot + "]"
	schema1 := "dir:" + filepath.Join(dir, "schema1")
	skopeo(t, s, "copy", "--format", "v2s1", storage+"localhost/plain:1", schema1)
	skopeo(t, s, "copy", schema1, storage+"localhost/old:1")

	s.PodmanOutput(t, "manifest", "create", "localhost/list:1")
	s.PodmanOutput(t, "manifest", "add", "localhost/list:1", "containers-storage:localhost/base:1")
	s.PodmanOutput(t, "manifest", "add", "--arch", "arm64", "--variant", "v8", "localhost/list:1", "containers-storage:localhost/child:1")
	s.PodmanOutput(t, "create", "--net", "none", "--name", "c1", "localhost/child:1", "/bin/sh")
	return s
}

// skopeo runs skopeo with the store's configuration.
func skopeo(t *testing.T, s *fixture.Store, args ...string) {
	t.Helper()
	testenv.RequireSkopeo(t)
	cmd := exec.Command("skopeo", args...)
	cmd.Env = s.PodmanEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newPodmanStore is a fresh overlay store for podman to fill, and a
// scratch directory holding base.tar, a tarball of files to import.
func newPodmanStore(t *testing.T, files map[string]string) (*fixture.Store, string) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequirePodman(t)
	s := fixture.NewStore(t, "overlay")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "base.tar"), tarOf(t, files))
	return s, dir
}

// podmanInspect runs `podman image inspect` and returns its one object,
// raw (re-indented to the top level) and decoded.
func podmanInspect(t *testing.T, s *fixture.Store, id string) ([]byte, map[string]any) {
	t.Helper()
	out := s.PodmanOutput(t, "image", "inspect", id)
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 {
		t.Fatalf("podman image inspect %s: %v (%d objects)", id, err, len(list))
	}
	// podman prints a list: "[", the object indented by one level, "]".
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if lines[0] != "[" || lines[len(lines)-1] != "]" {
		t.Fatalf("podman image inspect %s: unexpected framing:\n%s", id, out)
	}
	var b strings.Builder
	for _, l := range lines[1 : len(lines)-1] {
		b.WriteString(strings.TrimPrefix(l, "     "))
		b.WriteString("\n")
	}
	return []byte(b.String()), list[0]
}

// withoutGraphDriver drops the GraphDriver block from indented inspect
// output.
func withoutGraphDriver(b []byte) string {
	lines := strings.Split(string(b), "\n")
	var out []string
	skip := false
	for _, l := range lines {
		switch {
		case l == `     "GraphDriver": {`:
			skip = true
		case skip && l == `     },`:
			skip = false
			continue
		}
		if !skip {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestInteropPodman(t *testing.T) {
	s := podmanStore(t)
	v := openView(t, s)
	ix := v.Index()

	// podman's own view of the image set.
	var listed []struct {
		ID         string `json:"Id"`
		Names      []string
		Digest     digest.Digest
		Digests    []digest.Digest
		Containers int
	}
	if err := json.Unmarshal([]byte(s.PodmanOutput(t, "images", "-a", "--format", "json")), &listed); err != nil {
		t.Fatal(err)
	}
	podmanIDs := map[string]bool{}
	for _, p := range listed {
		podmanIDs[p.ID] = true
	}

	t.Run("ImageSet", func(t *testing.T) {
		var ours []string
		for _, img := range ix.Images {
			ours = append(ours, img.ID)
		}
		theirs := slices.Sorted(func(yield func(string) bool) {
			for id := range podmanIDs {
				if !yield(id) {
					return
				}
			}
		})
		if !slices.Equal(ours, theirs) {
			t.Errorf("images differ:\nours   %v\npodman %v", ours, theirs)
		}
		// The fixture has intermediate images, names, a list and a dangling one.
		if len(ours) < 8 {
			t.Errorf("only %d images; the fixture should make at least 8", len(ours))
		}
	})

	t.Run("NamesAndDigests", func(t *testing.T) {
		for _, p := range listed {
			img := ix.ImageByID(p.ID)
			if img == nil {
				t.Errorf("podman image %s not in the index", p.ID)
				continue
			}
			if !slices.Equal(img.Names, p.Names) {
				t.Errorf("image %s: names %v, podman %v", short(p.ID), img.Names, p.Names)
			}
			for _, n := range p.Names {
				if got := ix.ImageByName(n); got != img {
					t.Errorf("name %s resolves to %v, want %s", n, got, short(p.ID))
				}
			}
			// Every digest podman knows resolves to the image; for images
			// (not lists) podman's Digest is the manifest's digest.
			for _, d := range append(p.Digests, p.Digest) {
				if got := ix.ImageByDigest(d); got != img {
					t.Errorf("digest %s resolves to %v, want %s", d, got, short(p.ID))
				}
			}
			man, err := v.Manifest(img.ID)
			if err != nil {
				t.Fatalf("Manifest(%s): %v", short(img.ID), err)
			}
			if got, err := manifest.Digest(man); err != nil || got != img.Digest { // a schema 1 digest leaves the signatures out
				t.Errorf("image %s: manifest hashes to %s, Digest is %s", short(img.ID), got, img.Digest)
			}
			if !img.IsList && img.Digest != p.Digest {
				t.Errorf("image %s: digest %s, podman %s", short(img.ID), img.Digest, p.Digest)
			}
			if p.Containers != len(img.Containers) {
				t.Errorf("image %s: %d containers, podman %d", short(img.ID), len(img.Containers), p.Containers)
			}
		}
	})

	t.Run("Inspect", func(t *testing.T) {
		for _, img := range ix.Images {
			if img.IsList {
				continue // podman inspects the local instance instead
			}
			theirs := compareInspect(t, v, s, img.ID)
			// Layer counts equal RootFS.Layers.
			rootfs, _ := theirs["RootFS"].(map[string]any)
			if layers, _ := rootfs["Layers"].([]any); len(layers) != len(img.Layers) {
				t.Errorf("image %s: %d layers, podman's RootFS has %d", short(img.ID), len(img.Layers), len(layers))
			}
		}
		// Spot checks the comparison above must have covered.
		old, plain := ix.ImageByName("localhost/old:1"), ix.ImageByName("localhost/plain:1")
		if old == nil || plain == nil || old == plain || !old.NoConfig || plain.NoConfig {
			t.Errorf("the schema 1 image %+v is not an image of its own without a config (plain: %+v)", old, plain)
		} else if _, err := v.Config(old.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("Config of the schema 1 image: %v, want ErrNotFound", err)
		}
		child := ix.ImageByName("localhost/child:1")
		var d inspectData
		b, _ := v.InspectJSON(child.ID)
		if err := json.Unmarshal(b, &d); err != nil || d.Parent == "" {
			t.Errorf("child's inspect.json has no Parent (%v): podman's build leaves one", err)
		}
		if !bytes.HasSuffix(b, []byte("}\n")) {
			t.Errorf("inspect.json does not end in a newline")
		}
	})

	t.Run("ListInspect", func(t *testing.T) {
		list := ix.ImageByName("localhost/list:1")
		if list == nil || !list.IsList {
			t.Fatalf("localhost/list:1 is not a list image: %+v", list)
		}
		b, err := v.InspectJSON(list.ID)
		if err != nil {
			t.Fatal(err)
		}
		var d inspectData
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		if d.ID != list.ID || d.Digest != list.Digest || d.ManifestType != "application/vnd.oci.image.index.v1+json" ||
			!slices.Equal(d.RepoTags, []string{"localhost/list:1"}) || d.Config != nil || d.Parent != "" {
			t.Errorf("list inspect.json does not describe the list:\n%s", b)
		}
		ins, err := v.Instances(list.ID)
		if err != nil {
			t.Fatal(err)
		}
		base, child := ix.ImageByName("localhost/base:1"), ix.ImageByName("localhost/child:1")
		want := []Instance{
			{Digest: base.Digest, OS: "linux", Arch: "amd64"},
			{Digest: child.Digest, OS: "linux", Arch: "arm64", Variant: "v8"},
		}
		if !reflect.DeepEqual(ins, want) {
			t.Errorf("Instances = %+v, want %+v", ins, want)
		}
		if _, err := v.Config(list.ID); err == nil {
			t.Errorf("Config of a list: no error")
		}
	})

	t.Run("History", func(t *testing.T) {
		for _, img := range ix.Images {
			if img.IsList {
				continue
			}
			compareHistory(t, v, s, img.ID)
		}
	})

	t.Run("DF", func(t *testing.T) { checkDF(t, v, s) })
}

// checkDF recomputes the df figures from the store's own records (not the
// index) and compares them with the df file.
func checkDF(t *testing.T, v *View, s *fixture.Store) {
	t.Helper()
	images, err := s.Store.Images()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := s.Store.Layers()
	if err != nil {
		t.Fatal(err)
	}
	containers, err := s.Store.Containers()
	if err != nil {
		t.Fatal(err)
	}
	parent := map[string]string{}
	size := map[string]int64{}
	for _, l := range layers {
		parent[l.ID] = l.Parent
		size[l.ID] = l.UncompressedSize
		if l.UncompressedDigest == "" {
			n, err := s.Store.DiffSize("", l.ID)
			if err != nil {
				t.Fatal(err)
			}
			size[l.ID] = n
		}
	}
	chain := func(top string) []string {
		var c []string
		for id := top; id != ""; id = parent[id] {
			c = append(c, id)
		}
		return c
	}
	used := map[string]bool{}
	for _, c := range containers {
		used[c.ImageID] = true
	}
	users := map[string]int{} // layer → images using it
	all, kept := map[string]bool{}, map[string]bool{}
	for _, img := range images {
		for _, l := range chain(img.TopLayer) {
			users[l]++
			all[l] = true
			if used[img.ID] {
				kept[l] = true
			}
		}
	}
	var total, keptSize int64
	for l := range all {
		total += size[l]
	}
	for l := range kept {
		keptSize += size[l]
	}
	want := fmt.Sprintf("Images %d %d %d %d", len(images), len(used), total, total-keptSize)

	b, err := v.DF()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) < 4 || strings.Join(strings.Fields(lines[1]), " ") != want {
		t.Fatalf("df summary %q, want %q; df:\n%s", lines[1], want, b)
	}
	perImage := map[string]string{}
	for _, l := range lines[4:] {
		f := strings.Fields(l)
		perImage[f[0]] = strings.Join(f[1:], " ")
	}
	for _, img := range images {
		var sz, uniq int64
		for _, l := range chain(img.TopLayer) {
			sz += size[l]
			if users[l] == 1 {
				uniq += size[l]
			}
		}
		nc := 0
		for _, c := range containers {
			if c.ImageID == img.ID {
				nc++
			}
		}
		names := "<none>"
		if len(img.Names) > 0 {
			names = strings.Join(img.Names, ",")
		}
		want := fmt.Sprintf("%d %d %d %d %s", sz, uniq, sz-uniq, nc, names)
		if perImage[img.ID] != want {
			t.Errorf("df line of %s: %q, want %q", short(img.ID), perImage[img.ID], want)
		}
	}
	if len(perImage) != len(images) {
		t.Errorf("df lists %d images, the store has %d", len(perImage), len(images))
	}
	ids := slices.Collect(func(yield func(string) bool) {
		for _, l := range lines[4:] {
			if !yield(strings.Fields(l)[0]) {
				return
			}
		}
	})
	if !sort.StringsAreSorted(ids) {
		t.Errorf("df lines are not sorted by ID")
	}
}

// TestDF: df against sums computed from the store's own records, with two
// images sharing a layer, one image with two names, a dangling image and a
// container using one image.
func TestDF(t *testing.T) {
	testenv.RequireRoot(t)
	s := fixture.NewStore(t, "overlay")
	base := fixture.Layer{Entries: []fixture.Entry{fixture.BigFile("big", 100000)}}
	a := s.Add(t, fixture.Image{Names: []string{"localhost/a:1", "localhost/a:2"}, Layers: []fixture.Layer{base, {Entries: []fixture.Entry{fixture.File("a", "aaaa")}}}})
	b := s.Add(t, fixture.Image{Names: []string{"localhost/b:1"}, Layers: []fixture.Layer{base, {Entries: []fixture.Entry{fixture.BigFile("b", 30000)}}}})
	s.Add(t, fixture.Image{Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.BigFile("d", 7000)}}}})
	if a.LayerIDs[0] != b.LayerIDs[0] {
		t.Fatalf("a and b do not share their base layer")
	}
	if _, err := s.Store.CreateContainer("", nil, b.ID, "", "", nil); err != nil {
		t.Fatal(err)
	}
	v := openView(t, s)
	checkDF(t, v, s)
	du := v.Usage(v.Index())
	// Independent of the records: the shared base (>100000) counts once,
	// and only a's top layer and the dangling image are reclaimable.
	ix := v.Index()
	size := func(id string) int64 { return ix.Layer(id).UncompressedSize }
	if du.Images != 3 || du.Active != 1 {
		t.Errorf("images %d active %d, want 3 and 1", du.Images, du.Active)
	}
	dangling := ix.ImageByID(ix.Images[0].ID)
	for _, img := range ix.Images {
		if len(img.Names) == 0 {
			dangling = img
		}
	}
	wantTotal := size(a.LayerIDs[0]) + size(a.LayerIDs[1]) + size(b.LayerIDs[1]) + size(dangling.Layers[0])
	if du.Size != wantTotal || du.Reclaimable != size(a.LayerIDs[1])+size(dangling.Layers[0]) {
		t.Errorf("size %d reclaimable %d, want %d and %d", du.Size, du.Reclaimable, wantTotal, size(a.LayerIDs[1])+size(dangling.Layers[0]))
	}
	if size(a.LayerIDs[0]) < 100000 {
		t.Errorf("base layer size %d", size(a.LayerIDs[0]))
	}
}

// compareInspect requires inspect.json of the image to hold exactly the
// fields of podman's image inspect, with equal values and equal bytes,
// GraphDriver aside (imagefs never shows MergedDir); it returns podman's.
func compareInspect(t *testing.T, v *View, s *fixture.Store, id string) map[string]any {
	t.Helper()
	ours, err := v.InspectJSON(id)
	if err != nil {
		t.Fatalf("InspectJSON(%s): %v", short(id), err)
	}
	raw, theirs := podmanInspect(t, s, id)
	var got map[string]any
	if err := json.Unmarshal(ours, &got); err != nil {
		t.Fatalf("InspectJSON(%s) is not JSON: %v\n%s", short(id), err, ours)
	}
	for k := range theirs {
		if _, ok := got[k]; !ok {
			t.Errorf("image %s: field %s missing", short(id), k)
		}
	}
	for k, want := range theirs {
		if k == "GraphDriver" {
			if gd, _ := want.(map[string]any); gd != nil {
				if data, _ := gd["Data"].(map[string]any); data != nil {
					delete(data, "MergedDir")
				}
			}
		}
		if !reflect.DeepEqual(got[k], want) {
			t.Errorf("image %s: %s = %v, podman %v", short(id), k, got[k], want)
		}
	}
	for k := range got {
		if _, ok := theirs[k]; !ok {
			t.Errorf("image %s: extra field %s", short(id), k)
		}
	}
	if a, b := withoutGraphDriver(ours), withoutGraphDriver(raw); a != b {
		t.Errorf("image %s: inspect.json bytes differ from podman's (GraphDriver aside):\nours:\n%s\npodman:\n%s", short(id), a, b)
	}
	return theirs
}

// compareHistory requires the history file to be podman history's output.
func compareHistory(t *testing.T, v *View, s *fixture.Store, id string) {
	t.Helper()
	ours, err := v.History(id)
	if err != nil {
		t.Fatalf("History(%s): %v", short(id), err)
	}
	theirs := s.PodmanOutput(t, "history", "--no-trunc", "--human=false", id)
	if string(ours) != theirs {
		t.Errorf("image %s: history differs:\nours:\n%s\npodman:\n%s", short(id), ours, theirs)
	}
}

// TestInteropLayerless: images podman builds without a layer (FROM scratch
// and only LABEL steps, intermediates included), and an image whose
// history has more entries that made a layer than it has layers (the base
// layer's size repeats, as podman walks it), inspect and history as
// podman prints them. (A store holding a manifest list would not do:
// podman 4.3 then fails to inspect layerless images.)
func TestInteropLayerless(t *testing.T) {
	s, dir := newPodmanStore(t, map[string]string{"f": "f\n"})
	ctx := filepath.Join(dir, "scratch")
	writeFile(t, filepath.Join(ctx, "Containerfile"), []byte("FROM scratch\nLABEL a=b\nLABEL c=d\n"))
	s.PodmanOutput(t, "build", "--layers", "-t", "localhost/labels:1", ctx)
	crafted := s.Add(t, fixture.Image{Names: []string{"localhost/crafted:1"},
		Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("data", strings.Repeat("d", 10000))}}},
		Config: fixture.Config{History: []fixture.History{{CreatedBy: "one"}, {CreatedBy: "two"}, {CreatedBy: "three"}}},
	})
	v := openView(t, s)
	ix := v.Index()
	labels := ix.ImageByName("localhost/labels:1")
	if labels == nil || labels.TopLayer != "" {
		t.Fatalf("localhost/labels:1 is not a layerless image: %+v", labels)
	}
	layerless := 0
	for _, img := range ix.Images {
		if img.TopLayer == "" {
			layerless++
		}
		compareInspect(t, v, s, img.ID)
		compareHistory(t, v, s, img.ID)
	}
	if layerless < 2 {
		t.Errorf("%d layerless images; the build should leave an intermediate one too", layerless)
	}
	if h, err := v.History(crafted.ID); err != nil || strings.Contains(string(h), " 0 B ") {
		t.Errorf("crafted image's history (%v): every entry made a layer, none may show 0 B:\n%s", err, h)
	}
}
