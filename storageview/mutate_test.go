package storageview

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/fixture"
	"github.com/imagefs/imagefs/internal/testenv"
	"go.podman.io/storage"
)

// mutateImages are the images of the mutation tests. base and tool share
// the base layer; busy gets a container; lone is dangling.
func mutateImages() map[string]fixture.Image {
	baseLayer := fixture.Layer{Entries: []fixture.Entry{fixture.File("etc/os", "base\n")}}
	return map[string]fixture.Image{
		"base": {
			Names:  []string{"docker.io/library/alpine:3.19", "localhost/app:1"},
			Layers: []fixture.Layer{baseLayer},
			Config: fixture.Config{Cmd: []string{"/bin/true"}},
		},
		"tool": {
			Names: []string{"quay.io/org/tool:2"},
			Layers: []fixture.Layer{baseLayer,
				{Entries: []fixture.Entry{fixture.File("usr/bin/tool", "tool\n")}}},
			Config: fixture.Config{Cmd: []string{"/usr/bin/tool"}},
		},
		"busy": {
			Names:  []string{"localhost/busy:1"},
			Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("busy", "busy\n")}}},
			Config: fixture.Config{Cmd: []string{"/busy"}},
		},
		"lone": {
			Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("lone", "lone\n")}}},
		},
	}
}

// mutateStore makes a store of driver holding mutateImages, with a
// container using busy; it returns the images' IDs by key.
func mutateStore(t *testing.T, driver string) (*fixture.Store, map[string]string) {
	t.Helper()
	testenv.RequirePodman(t)
	s := fixture.NewStore(t, driver)
	ids := map[string]string{}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range mutateImages() {
			if !yield(k) {
				return
			}
		}
	}) {
		ids[k] = s.Add(t, mutateImages()[k]).ID
	}
	s.PodmanOutput(t, "create", "--pull=never", "--net", "none", "--name", "c1", ids["busy"])
	return s, ids
}

// podmanTry runs podman on s and returns its combined output and error.
func podmanTry(s *fixture.Store, args ...string) (string, error) {
	out, err := s.Podman(args...).CombinedOutput()
	return string(out), err
}

// storeState is the part of a store the mutations change, read from the
// store's own records: image → names and names history, and the image
// layers.
type storeState struct {
	Names   map[string][]string
	History map[string][]string
	Layers  []string
}

func stateOf(t *testing.T, st storage.Store) storeState {
	t.Helper()
	imgs, err := st.Images()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := st.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ctrs, err := st.Containers()
	if err != nil {
		t.Fatal(err)
	}
	ctrLayer := map[string]bool{}
	for _, c := range ctrs {
		ctrLayer[c.LayerID] = true
	}
	s := storeState{Names: map[string][]string{}, History: map[string][]string{}}
	for _, img := range imgs {
		s.Names[img.ID] = slices.Clone(img.Names)
		s.History[img.ID] = slices.Clone(img.NamesHistory)
	}
	for _, l := range layers {
		if !ctrLayer[l.ID] { // a container's own layer has a random ID
			s.Layers = append(s.Layers, l.ID)
		}
	}
	sort.Strings(s.Layers)
	return s
}

func (s storeState) String() string {
	b, _ := json.MarshalIndent(s, "", "  ")
	return string(b)
}

// podmanImages is `podman images -a --format json` as podman prints it.
func podmanImages(t *testing.T, s *fixture.Store) string {
	t.Helper()
	return s.PodmanOutput(t, "images", "-a", "--format", "json")
}

// podmanRepoTags maps image ID → RepoTags from podman images -a.
func podmanRepoTags(t *testing.T, s *fixture.Store) map[string][]string {
	t.Helper()
	var listed []struct {
		ID    string `json:"Id"`
		Names []string
	}
	if err := json.Unmarshal([]byte(podmanImages(t, s)), &listed); err != nil {
		t.Fatal(err)
	}
	m := map[string][]string{}
	for _, p := range listed {
		m[p.ID] = p.Names
	}
	return m
}

// agree checks that the view's index and podman see the same images and
// names.
func agree(t *testing.T, v *View, s *fixture.Store) {
	t.Helper()
	ix := v.Index()
	theirs := podmanRepoTags(t, s)
	ours := map[string][]string{}
	for _, img := range ix.Images {
		ours[img.ID] = img.Names
	}
	if len(ours) != len(theirs) {
		t.Errorf("index has %d images, podman %d", len(ours), len(theirs))
	}
	for id, names := range theirs {
		n, ok := ours[id]
		if !ok {
			t.Errorf("podman lists %s, the index does not", short(id))
			continue
		}
		if len(names) == 0 {
			names = nil
		}
		if len(n) == 0 {
			n = nil
		}
		if !slices.Equal(n, names) {
			t.Errorf("image %s: index names %v, podman %v", short(id), n, names)
		}
	}
}

// TestMutate applies the same changes to two copies of one store, through
// the View to one (overlay) and through podman to the other (vfs), and
// requires identical records after every step: names, names history,
// images, layers. podman on the View's store must agree with the index.
func TestMutate(t *testing.T) {
	start := time.Now()
	a, ids := mutateStore(t, "overlay")
	b, idsB := mutateStore(t, "vfs")
	for k := range ids {
		if ids[k] != idsB[k] {
			t.Fatalf("the fixture is not deterministic: %s is %s and %s", k, ids[k], idsB[k])
		}
	}
	v := openView(t, a)
	t.Logf("setup %s", time.Since(start))

	steps := []struct {
		what   string
		ours   func() error
		podman [][]string
	}{
		{"tag with a short name",
			func() error { return v.Tag(ids["base"], "myapp") },
			[][]string{{"tag", ids["base"], "myapp"}}},
		{"tag with a short name and tag (localhost, not docker.io)",
			func() error { return v.Tag(ids["tool"], "alpine:3.19") },
			[][]string{{"tag", ids["tool"], "alpine:3.19"}}},
		{"take a name another image holds (it moves)",
			func() error { return v.TakeName(ids["tool"], "docker.io/alpine:3.19") },
			[][]string{{"tag", ids["tool"], "docker.io/alpine:3.19"}}},
		{"tag an image with a name it already has",
			func() error { return v.Tag(ids["tool"], "quay.io/org/tool:2") },
			[][]string{{"tag", ids["tool"], "quay.io/org/tool:2"}}},
		{"tag a dangling image",
			func() error { return v.Tag(ids["lone"], "example.com:5000/lone") },
			[][]string{{"tag", ids["lone"], "example.com:5000/lone"}}},
		{"remove one of several names (untag only)",
			func() error { return v.RemoveName("localhost/app:1") },
			[][]string{{"rmi", "localhost/app:1"}}},
		{"retag",
			func() error { return v.Retag("localhost/myapp:latest", "quay.io/x/y:1") },
			[][]string{{"tag", ids["base"], "quay.io/x/y:1"}, {"untag", ids["base"], "localhost/myapp:latest"}}},
		{"remove an image's last name (the image goes, the shared layer stays)",
			func() error { return v.RemoveName("quay.io/x/y:1") },
			[][]string{{"rmi", "quay.io/x/y:1"}}},
		{"remove by ID an image with several names",
			func() error { return v.RemoveImage(ids["tool"]) },
			[][]string{{"rmi", "-f", ids["tool"]}}},
		{"remove by ID a once dangling image",
			func() error { return v.RemoveImage(ids["lone"]) },
			[][]string{{"rmi", ids["lone"]}}},
	}
	for _, st := range steps {
		if err := st.ours(); err != nil {
			t.Fatalf("%s: %v", st.what, err)
		}
		for _, args := range st.podman {
			if out, err := podmanTry(b, args...); err != nil {
				t.Fatalf("%s: podman %v: %v\n%s", st.what, args, err, out)
			}
		}
		got, want := stateOf(t, a.Store), stateOf(t, b.Store)
		if got.String() != want.String() {
			t.Fatalf("%s: the store differs from podman's doing the same\nours:\n%s\npodman's:\n%s", st.what, got, want)
		}
		agree(t, v, a)
	}
	// busy's layer is all that is left: the base layer tool and base shared went with the last of them.
	if left := stateOf(t, a.Store).Layers; len(left) != 1 {
		t.Errorf("layers left: %v, want busy's only", left)
	}
	t.Logf("total %s", time.Since(start))
}

// TestMutateRefused: each refused change returns its error and leaves
// podman's listing byte for byte unchanged; an image a container uses
// cannot be removed by name, by ID or through its digest.
func TestMutateRefused(t *testing.T) {
	s, ids := mutateStore(t, "overlay")
	list := s.AddList(t, []string{"localhost/list:1"}, nil)
	v := openView(t, s)
	before := podmanImages(t, s)
	busyDigest := v.Index().ImageByID(ids["busy"]).Digest

	cases := []struct {
		what string
		op   func() error
		want error
	}{
		{"rm the last name of an image in use", func() error { return v.RemoveName("localhost/busy:1") }, ErrInUse},
		{"rmdir an image in use", func() error { return v.RemoveImage(ids["busy"]) }, ErrInUse},
		{"rm the digest of an image in use", func() error {
			img, err := v.ResolveImage(busyDigest.String())
			if err != nil {
				return err
			}
			return v.RemoveImage(img.ID)
		}, ErrInUse},
		{"upper case repository", func() error { return v.Tag(ids["base"], "localhost/Bad:1") }, ErrInvalidName},
		{"bad tag characters", func() error { return v.Tag(ids["base"], "localhost/bad:a/b") }, ErrInvalidName},
		{"tag too long", func() error { return v.Tag(ids["base"], "localhost/bad:"+strings.Repeat("t", 129)) }, ErrInvalidName},
		{"name too long", func() error { return v.Tag(ids["base"], "localhost/"+strings.Repeat("n", 260)+":1") }, ErrInvalidName},
		{"a digest as a name", func() error { return v.Tag(ids["base"], busyDigest.String()) }, ErrInvalidName},
		{"a digested name", func() error { return v.Tag(ids["base"], "localhost/x@"+busyDigest.String()) }, ErrInvalidName},
		{"empty name", func() error { return v.Tag(ids["base"], "") }, ErrInvalidName},
		{"tag an unknown image", func() error { return v.Tag(strings.Repeat("0", 64), "localhost/x:1") }, ErrNotFound},
		{"remove an unknown name", func() error { return v.RemoveName("localhost/nothing:1") }, ErrNotFound},
		{"remove an unknown image", func() error { return v.RemoveImage(strings.Repeat("0", 64)) }, ErrNotFound},
		{"retag onto another image's name", func() error { return v.Retag("localhost/app:1", "quay.io/org/tool:2") }, ErrNameTaken},
		{"retag an unknown name", func() error { return v.Retag("localhost/nothing:1", "localhost/x:1") }, ErrNotFound},
		{"retag to a bad name", func() error { return v.Retag("localhost/app:1", "localhost/UP:1") }, ErrInvalidName},
		{"resolve nothing", func() error { _, err := v.ResolveImage("localhost/nothing:1"); return err }, ErrNotFound},
	}
	for _, c := range cases {
		err := c.op()
		if !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", c.what, err, c.want)
		}
		if after := podmanImages(t, s); after != before {
			t.Fatalf("%s changed podman's listing:\nbefore %s\nafter  %s", c.what, before, after)
		}
	}

	// podman refuses the same removals (the witness agrees these are refusals).
	for _, args := range [][]string{{"rmi", "localhost/busy:1"}, {"rmi", ids["busy"]}} {
		if out, err := podmanTry(s, args...); err == nil {
			t.Errorf("podman %v succeeded, expected a refusal:\n%s", args, out)
		}
	}

	// A second name does not protect: removing one name of an image in
	// use only untags, as podman rmi does.
	if err := v.Tag(ids["busy"], "localhost/busy:2"); err != nil {
		t.Fatal(err)
	}
	if err := v.RemoveName("localhost/busy:1"); err != nil {
		t.Fatalf("untag of an image in use with two names: %v", err)
	}
	agree(t, v, s)

	// A read-only view refuses everything, changing nothing.
	ro := &mutator{store: s.Store, readOnly: true}
	before = podmanImages(t, s)
	for what, op := range map[string]func() error{
		"tag":    func() error { _, err := ro.tag(ids["base"], "localhost/x:1", false); return err },
		"untag":  func() error { _, _, err := ro.removeName("localhost/app:1"); return err },
		"remove": func() error { return ro.removeImage(ids["lone"], false) },
		"retag":  func() error { _, _, err := ro.retag("localhost/app:1", "localhost/x:1"); return err },
	} {
		if err := op(); !errors.Is(err, ErrReadOnly) {
			t.Errorf("read-only %s: %v, want ErrReadOnly", what, err)
		}
	}
	if after := podmanImages(t, s); after != before {
		t.Fatalf("the read-only view changed the store")
	}

	// A manifest list can be removed.
	if err := v.RemoveImage(list.ID); err != nil {
		t.Fatalf("removing a manifest list: %v", err)
	}
	agree(t, v, s)
}

// TestResolve compares ResolveImage with podman's own lookup of the same
// references (podman image inspect --format {{.Id}}).
func TestResolve(t *testing.T) {
	s, ids := mutateStore(t, "overlay")
	v := openView(t, s)
	if err := v.Tag(ids["tool"], "docker.io/library/tool:latest"); err != nil {
		t.Fatal(err)
	}
	ix := v.Index()
	base := ix.ImageByID(ids["base"])
	refs := []string{
		ids["base"],                     // full ID
		ids["tool"][:12],                // prefix
		"sha256:" + ids["busy"],         // sha256:ID
		"docker.io/library/alpine:3.19", // stored name
		"alpine:3.19",                   // short name → docker.io
		"app:1",                         // short name → localhost
		"localhost/app:1",               // qualified
		"tool",                          // short, no tag → docker.io/library/tool:latest
		"org/tool:2",                    // suffix of quay.io/org/tool:2
		"quay.io/org/tool:2",
		"docker.io/library/alpine@" + base.Digest.String(), // digested
		"alpine:3.19@" + base.Digest.String(),              // tagged and digested: the digest counts
	}
	for _, ref := range refs {
		img, err := v.ResolveImage(ref)
		if err != nil {
			t.Errorf("ResolveImage(%q): %v", ref, err)
			continue
		}
		want := strings.TrimSpace(s.PodmanOutput(t, "image", "inspect", "--format", "{{.Id}}", ref))
		if img.ID != want {
			t.Errorf("ResolveImage(%q) = %s, podman %s", ref, short(img.ID), short(want))
		}
	}
	// imagefs also resolves a manifest digest (digests/ entries), which
	// podman only takes as an ID.
	if img, err := v.ResolveImage(base.Digest.String()); err != nil || img.ID != base.ID {
		t.Errorf("ResolveImage(manifest digest) = %v, %v; want %s", img, err, short(base.ID))
	}
	for _, ref := range []string{"nothing", "localhost/nothing:1", "sha256:" + strings.Repeat("f", 64), "Bad Ref",
		"sha256:" + ids["tool"][:12]} { // sha256: takes no prefix
		if _, err := v.ResolveImage(ref); !errors.Is(err, ErrNotFound) {
			t.Errorf("ResolveImage(%q): %v, want ErrNotFound", ref, err)
		}
		if _, err := podmanTry(s, "image", "exists", ref); err == nil {
			t.Errorf("podman finds %q", ref)
		}
	}
}

// TestIDPrefixAmbiguous: a prefix two IDs share is ErrAmbiguous, a longer
// one resolves; a prefix also matched as a name goes to the name, as
// c/storage looks names up before prefixes.
func TestIDPrefixAmbiguous(t *testing.T) {
	imgs := []storage.Image{
		{ID: "abc1" + strings.Repeat("0", 60)},
		{ID: "abc2" + strings.Repeat("0", 60)},
		{ID: "fed0" + strings.Repeat("0", 60), Names: []string{"abc"}},
	}
	if _, err := byIDPrefix(imgs, "abc"); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("abc: %v, want ErrAmbiguous", err)
	}
	if img, err := byIDPrefix(imgs, "abc2"); err != nil || img == nil || img.ID != imgs[1].ID {
		t.Errorf("abc2: %v %v", img, err)
	}
	if img, _ := byIDPrefix(imgs, "ABC"); img != nil {
		t.Errorf("upper case prefix matched %s", img.ID)
	}
	if img := byName(imgs, "abc"); img == nil || img.ID != imgs[2].ID {
		t.Errorf("name abc: %v", img)
	}
}

// TestNormalizeName: podman tag's naming rules.
func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{
		"app":                           "localhost/app:latest",
		"app:1":                         "localhost/app:1",
		"org/app:1":                     "localhost/org/app:1",
		"localhost/app":                 "localhost/app:latest",
		"docker.io/alpine":              "docker.io/library/alpine:latest",
		"quay.io/me/app:1":              "quay.io/me/app:1",
		"example.com:5000/a/b/c:v1.2-3": "example.com:5000/a/b/c:v1.2-3",
		"quay.io/me/app@sha256:" + strings.Repeat("a", 64):   "quay.io/me/app@sha256:" + strings.Repeat("a", 64),
		"quay.io/me/app:1@sha256:" + strings.Repeat("a", 64): "quay.io/me/app@sha256:" + strings.Repeat("a", 64),
	} {
		got, err := NormalizeName(in)
		if err != nil || got != want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "App", "quay.io/Me/app", "app:", "app:bad/tag", "-app", "sha256:" + strings.Repeat("a", 64), "a b"} {
		if got, err := NormalizeName(in); !errors.Is(err, ErrInvalidName) {
			t.Errorf("NormalizeName(%q) = %q, %v; want ErrInvalidName", in, got, err)
		}
	}
}

// TestMutateVisibleAtOnce: while other goroutines read the index and
// podman writes the store from another process, each of our changes shows
// in the very next Index call.
func TestMutateVisibleAtOnce(t *testing.T) {
	testenv.RequirePodman(t)
	s := fixture.NewStore(t, "overlay")
	a := s.Add(t, fixture.Image{Names: []string{"localhost/a:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("a", "a")}}}})
	b := s.Add(t, fixture.Image{Names: []string{"localhost/b:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("b", "b")}}}})
	v := openView(t, s)
	cancel := v.Subscribe(func(old, new *Index) {})
	defer cancel()
	stop := time.Now().Add(4 * time.Second)
	done := make(chan struct{})
	readers := 3
	for g := 0; g < readers; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for time.Now().Before(stop) {
				v.Index()
			}
		}()
	}
	go func() {
		defer func() { done <- struct{}{} }()
		for i := 0; time.Now().Before(stop); i++ {
			args := []string{"tag", b.ID, fmt.Sprintf("localhost/p:%d", i)}
			if i%2 == 1 {
				args = []string{"untag", b.ID, fmt.Sprintf("localhost/p:%d", i-1)}
			}
			if out, err := podmanTry(s, args...); err != nil {
				t.Errorf("podman %v: %v\n%s", args, err, out)
			}
		}
	}()
	stale, n := 0, 0
	for i := 0; time.Now().Before(stop); i++ {
		name := fmt.Sprintf("localhost/x/m%d:1", i)
		if err := v.Tag(a.ID, name); err != nil {
			t.Fatal(err)
		}
		if v.Index().ImageByName(name) == nil {
			stale++
		}
		if err := v.RemoveName(name); err != nil {
			t.Fatal(err)
		}
		if v.Index().ImageByName(name) != nil {
			stale++
		}
		n += 2
	}
	for g := 0; g < readers+1; g++ {
		<-done
	}
	if stale > 0 {
		t.Errorf("%d of %d changes did not show in the next Index", stale, n)
	}
	t.Logf("%d changes", n)
}

// TestNameChangesKeepOthers: names another writer gives the same image
// while we tag and retag it all stay. Our changes are applied under the
// store's lock to the names it holds then (AddNames, RemoveNames): a list
// read first and written back with SetNames drops a name added in between.
func TestNameChangesKeepOthers(t *testing.T) {
	s := fixture.NewStore(t, "overlay")
	img := s.Add(t, fixture.Image{Names: []string{"localhost/a:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("a", "a")}}}})
	v := openView(t, s)
	const n = 40
	theirs := make(chan error, 1)
	go func() {
		for i := range n {
			if err := s.Store.AddNames(img.ID, []string{fmt.Sprintf("localhost/theirs:%d", i)}); err != nil {
				theirs <- err
				return
			}
		}
		theirs <- nil
	}()
	for i := range n {
		if err := v.Tag(img.ID, fmt.Sprintf("localhost/ours:%d", i)); err != nil {
			t.Fatal(err)
		}
		if err := v.Retag(fmt.Sprintf("localhost/ours:%d", i), fmt.Sprintf("localhost/moved:%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-theirs; err != nil {
		t.Fatal(err)
	}
	got, err := s.Store.Names(img.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"localhost/a:1"}
	for i := range n {
		want = append(want, fmt.Sprintf("localhost/theirs:%d", i), fmt.Sprintf("localhost/moved:%d", i))
	}
	var lost, extra []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			lost = append(lost, w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			extra = append(extra, g)
		}
	}
	if len(lost)+len(extra) > 0 {
		t.Errorf("after the concurrent changes %d names are lost: %q; %d should not be there: %q", len(lost), lost, len(extra), extra)
	}
}

// TestMutateReadOnlyStore: images of an additional (read-only) image store
// refuse every change with ErrReadOnly, and nothing changes; a name such
// an image holds cannot be taken by tagging a writable image either.
func TestMutateReadOnlyStore(t *testing.T) {
	testenv.RequirePodman(t)
	// The additional store is made by podman alone: this process must not
	// hold its lock files open for writing.
	roDir, err := os.MkdirTemp("/tmp", "ifro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(roDir) })
	testenv.NoMountsLeft(t, roDir)
	envStore := fixture.NewStore(t, "vfs") // its private podman configuration
	roPodman := func(args ...string) string {
		cmd := exec.Command("podman", append([]string{"--root", roDir + "/g", "--runroot", roDir + "/r", "--storage-driver", "overlay"}, args...)...)
		cmd.Env = envStore.PodmanEnv()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("podman %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	tarball := filepath.Join(t.TempDir(), "ro.tar")
	writeFile(t, tarball, tarOf(t, map[string]string{"ro": "ro\n"}))
	roID := strings.TrimPrefix(roPodman("import", tarball, "localhost/ro:1"), "sha256:")
	roPodman("tag", roID, "localhost/ro:2")
	s := fixture.NewStore(t, "overlay", "overlay.imagestore="+roDir+"/g")
	rw := s.Add(t, fixture.Image{Names: []string{"localhost/rw:1"},
		Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("rw", "rw\n")}}}})
	roImg := struct{ ID string }{roID}
	v := openView(t, s)
	img := v.Index().ImageByID(roImg.ID)
	if img == nil || !img.ReadOnly {
		t.Fatalf("the additional store's image: %+v", img)
	}
	before := podmanImages(t, s)
	for what, op := range map[string]func() error{
		"tag":                      func() error { return v.Tag(roImg.ID, "localhost/ro:3") },
		"untag":                    func() error { return v.RemoveName("localhost/ro:1") },
		"remove":                   func() error { return v.RemoveImage(roImg.ID) },
		"retag":                    func() error { return v.Retag("localhost/ro:1", "localhost/ro:9") },
		"take its name by tagging": func() error { return v.Tag(rw.ID, "localhost/ro:2") },
	} {
		if err := op(); !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s: %v, want ErrReadOnly", what, err)
		}
	}
	if after := podmanImages(t, s); after != before {
		t.Errorf("refused changes changed podman's listing:\nbefore %s\nafter  %s", before, after)
	}
	// The writable image still changes.
	if err := v.Tag(rw.ID, "localhost/rw:2"); err != nil {
		t.Errorf("tagging the writable image: %v", err)
	}
	agree(t, v, s)
}

// TestTagNameTakenMeanwhile: a name another writer has just given another
// image, which the view's index may not show yet, is not taken by a plain
// tag (ln -s): ErrNameTaken (EEXIST), and the name stays where it is.
// TakeName (ln -sfn) moves it.
func TestTagNameTakenMeanwhile(t *testing.T) {
	s := fixture.NewStore(t, "vfs")
	a := s.Add(t, fixture.Image{Names: []string{"localhost/a:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("a", "a")}}}})
	b := s.Add(t, fixture.Image{Names: []string{"localhost/b:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("b", "b")}}}})
	v := openView(t, s)
	v.Index()
	const name = "localhost/new:1"
	// As podman tag would: straight to the store, no refresh of the view.
	if err := s.Store.AddNames(a.ID, []string{name}); err != nil {
		t.Fatal(err)
	}
	holder := func() string {
		t.Helper()
		for _, id := range []string{a.ID, b.ID} {
			img, err := s.Store.Image(id)
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(img.Names, name) {
				return id
			}
		}
		return ""
	}
	if err := v.Tag(b.ID, name); !errors.Is(err, ErrNameTaken) {
		t.Errorf("Tag onto a name image a holds: %v, want ErrNameTaken", err)
	}
	if got := holder(); got != a.ID {
		t.Errorf("after the refused tag the name is on %q, want a (%s)", got, a.ID)
	}
	if err := v.TakeName(b.ID, name); err != nil {
		t.Fatalf("TakeName: %v", err)
	}
	if got := holder(); got != b.ID {
		t.Errorf("after TakeName the name is on %q, want b (%s)", got, b.ID)
	}
	if img := v.Index().ImageByName(name); img == nil || img.ID != b.ID {
		t.Errorf("the index has the name on %+v, want b", img)
	}
}

// TestTagDiskFull: a tag that cannot be saved (the disk is full) is not
// shown, and the next tag that is saved does not save it too, although
// containers/storage kept it in memory.
func TestTagDiskFull(t *testing.T) {
	testenv.RequireRoot(t)
	disk, err := os.MkdirTemp("/tmp", "ifd") // short: podman takes a run root of 50 bytes at most
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size=16m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the store's cleanups
		_ = syscall.Unmount(disk, syscall.MNT_DETACH)
		_ = os.Remove(disk)
	})
	t.Setenv(fixture.TmpDirVar, disk)
	s := fixture.NewStore(t, "vfs")
	a := s.Add(t, fixture.Image{Names: []string{"localhost/a:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("a", "a\n")}}}})
	s.Close()
	v := openView(t, s)
	fill, err := os.Create(filepath.Join(disk, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	for chunk := make([]byte, 1<<20); err == nil; {
		_, err = fill.Write(chunk)
	}
	fill.Close()
	if err := v.Tag(a.ID, "localhost/full:1"); err == nil {
		t.Fatal("a tag on a full disk succeeded: the test's premise is gone")
	}
	if img := v.Index().ImageByName("localhost/full:1"); img != nil {
		t.Errorf("the index shows the tag that failed")
	}
	if err := os.Remove(fill.Name()); err != nil {
		t.Fatal(err)
	}
	if err := v.Tag(a.ID, "localhost/later:1"); err != nil {
		t.Fatal(err)
	}
	out := strings.TrimSpace(s.PodmanOutput(t, "image", "inspect", "--format", "{{.RepoTags}}", a.ID))
	if out != "[localhost/a:1 localhost/later:1]" {
		t.Errorf("names on disk after the failed tag and a later one: %s, want [localhost/a:1 localhost/later:1]", out)
	}
}
