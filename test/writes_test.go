package test

// Writes through a real kernel mount (in-process server, as imagefs mount
// runs it), with podman on the same store as the witness: every change
// agrees with `podman images`/`podman image inspect`, every refusal
// returns its errno, logs one line and leaves `podman images -a` byte for
// byte unchanged.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	iofs "io/fs"
	"log"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/internal/fixture"
	"github.com/imagefs/imagefs/internal/testenv"
	"github.com/imagefs/imagefs/nodes"
	"github.com/imagefs/imagefs/storageview"
)

// The view is what the tree writes through and follows.
var (
	_ nodes.Writer     = (*storageview.View)(nil)
	_ nodes.Subscriber = (*storageview.View)(nil)
)

// logBuf collects the mount's log lines.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuf) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSuffix(b.buf.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// wenv is one writes test's world: a store with four images, its view and
// a kernel mount of it.
type wenv struct {
	t    *testing.T
	s    *fixture.Store
	v    *storageview.View
	mnt  string
	logs *logBuf
	// unmount ends the mount early (once; the view is closed with it).
	unmount func()

	base, tool, busy, lone fixture.Added
}

// writesImages: base and tool share their base layer, busy is used by a
// container, lone is dangling.
func writesImages(s *fixture.Store, t *testing.T) (base, tool, busy, lone fixture.Added) {
	t.Helper()
	shared := fixture.Layer{Entries: []fixture.Entry{fixture.File("etc/os", "base\n")}}
	base = s.Add(t, fixture.Image{
		Names:  []string{"docker.io/library/alpine:3.19", "localhost/app:1"},
		Layers: []fixture.Layer{shared},
		Config: fixture.Config{Cmd: []string{"/bin/true"}},
	})
	tool = s.Add(t, fixture.Image{
		Names:  []string{"quay.io/org/tool:2"},
		Layers: []fixture.Layer{shared, {Entries: []fixture.Entry{fixture.File("usr/bin/tool", "tool\n")}}},
		Config: fixture.Config{Cmd: []string{"/usr/bin/tool"}},
	})
	busy = s.Add(t, fixture.Image{
		Names:  []string{"localhost/busy:1"},
		Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("busy", "busy\n")}}},
		Config: fixture.Config{Cmd: []string{"/busy"}},
	})
	lone = s.Add(t, fixture.Image{
		Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("lone", "lone\n")}}},
	})
	s.PodmanOutput(t, "create", "--pull=never", "--net", "none", "--name", "c1", busy.ID)
	return
}

// newWenv makes the store and mounts it; vo and fo adjust the view's and
// the mount's options.
func newWenv(t *testing.T, driver string, vo storageview.Options, fo fs.Options) *wenv {
	t.Helper()
	testenv.RequireFUSE(t)
	testenv.RequirePodman(t)
	e := &wenv{t: t, s: fixture.NewStore(t, driver), logs: &logBuf{}}
	e.base, e.tool, e.busy, e.lone = writesImages(e.s, t)
	e.v = openWritesView(t, e.s, vo, e.logs)
	fo.Log = log.New(e.logs, "", 0)
	e.mnt, e.unmount = mountInProcess(t, e.v, fo)
	return e
}

// openWritesView opens the store as imagefs mount does, logging to logs.
// The mount owns the view and closes it when it ends.
func openWritesView(t *testing.T, s *fixture.Store, vo storageview.Options, logs *logBuf) *storageview.View {
	t.Helper()
	vo.GraphRoot, vo.RunRoot, vo.Driver, vo.DriverOptions = s.GraphRoot, s.RunRoot, s.Driver, s.StorageOpts
	vo.Log = log.New(logs, "", 0)
	v, err := storageview.Open(vo)
	if err != nil {
		t.Fatalf("opening the store: %v", err)
	}
	return v
}

func (e *wenv) p(rel string) string { return filepath.Join(e.mnt, rel) }

// podmanImages is `podman images -a --format json`, the byte-for-byte
// witness of refusals.
func (e *wenv) podmanImages() string {
	e.t.Helper()
	return e.s.PodmanOutput(e.t, "images", "-a", "--format", "json")
}

// repoTags maps every image podman lists to its names.
func (e *wenv) repoTags() map[string][]string {
	e.t.Helper()
	var listed []struct {
		ID    string `json:"Id"`
		Names []string
	}
	if err := json.Unmarshal([]byte(e.podmanImages()), &listed); err != nil {
		e.t.Fatal(err)
	}
	m := map[string][]string{}
	for _, l := range listed {
		m[l.ID] = l.Names
	}
	return m
}

// wantTags requires podman to list image id with exactly these names, in
// this order (nil: the image must be gone).
func (e *wenv) wantTags(what, id string, names ...string) {
	e.t.Helper()
	got, ok := e.repoTags()[id]
	switch {
	case names == nil && ok:
		e.t.Errorf("%s: podman still lists %.12s (%v)", what, id, got)
	case names != nil && !ok:
		e.t.Errorf("%s: podman does not list %.12s", what, id)
	case names != nil && !slices.Equal(got, names) && !(len(got) == 0 && len(names) == 0):
		e.t.Errorf("%s: podman names of %.12s: %v, want %v", what, id, got, names)
	}
	if names == nil {
		return
	}
	// The tree agrees: images/<id>/names lists the same, each names/ link
	// leads to the image.
	b, err := os.ReadFile(e.p("images/" + id + "/names"))
	if err != nil {
		e.t.Errorf("%s: %v", what, err)
		return
	}
	want := ""
	if len(names) > 0 {
		want = strings.Join(names, "\n") + "\n"
	}
	if string(b) != want {
		e.t.Errorf("%s: images/%.12s/names = %q, want %q", what, id, b, want)
	}
	for _, n := range names {
		target, err := os.Readlink(e.p("names/" + n))
		if err != nil || !strings.HasSuffix(target, "images/"+id) {
			e.t.Errorf("%s: names/%s -> %q, %v; want …images/%.12s", what, n, target, err, id)
		}
	}
}

// refused checks a refused change: errno want, exactly one new log line
// naming the path and the errno, and podman's listing unchanged.
func (e *wenv) refused(what string, want syscall.Errno, path string, op func() error) {
	e.t.Helper()
	before := e.podmanImages()
	nlog := len(e.logs.lines())
	err := op()
	if !errors.Is(err, want) {
		e.t.Errorf("%s: %v, want %v", what, err, want)
	}
	lines := e.logs.lines()[nlog:]
	if os.Getenv("IFS_SHOWLOG") != "" { // to see the log lines of refusals

		e.t.Log(lines)
	}
	var matching []string
	for _, l := range lines {
		if strings.Contains(l, path) {
			matching = append(matching, l)
		}
	}
	if len(matching) != 1 || !strings.Contains(matching[0], errnoName(want)) {
		e.t.Errorf("%s: want one log line naming %s and %s, got %q", what, path, errnoName(want), lines)
	}
	if after := e.podmanImages(); after != before {
		e.t.Errorf("%s changed podman's listing:\nbefore %s\nafter  %s", what, before, after)
	}
}

func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.EACCES:
		return "EACCES"
	case syscall.EBUSY:
		return "EBUSY"
	case syscall.EEXIST:
		return "EEXIST"
	case syscall.EINVAL:
		return "EINVAL"
	case syscall.ENOENT:
		return "ENOENT"
	case syscall.ENOTEMPTY:
		return "ENOTEMPTY"
	case syscall.EROFS:
		return "EROFS"
	case syscall.EXDEV:
		return "EXDEV"
	case syscall.EISDIR:
		return "EISDIR"
	}
	return e.Error()
}

// eventually polls cond until it holds, failing after one second.
func eventually(t *testing.T, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > time.Second {
			t.Fatalf("%s: not within 1s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func gone(p string) error {
	if _, err := os.Lstat(p); !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("lstat %s: %v, want ENOENT", p, err)
	}
	return nil
}

// TestWrites: every write operation through the mount, podman agreeing
// after each.
func TestWrites(t *testing.T) {
	e := newWenv(t, "overlay", storageview.Options{}, fs.Options{})
	base, tool, busy, lone := e.base.ID, e.tool.ID, e.busy.ID, e.lone.ID

	// mkdir -p makes the directories a new name needs.
	if err := os.MkdirAll(e.p("names/quay.io/me/team"), 0o755); err != nil {
		t.Fatalf("mkdir -p: %v", err)
	}
	if st, err := os.Stat(e.p("names/quay.io/me/team")); err != nil || !st.IsDir() {
		t.Fatalf("stat of a made directory: %v %v", st, err)
	}
	if ents, err := os.ReadDir(e.p("names/quay.io/me")); err != nil || len(ents) != 1 || ents[0].Name() != "team" {
		t.Errorf("ls names/quay.io/me: %v %v", ents, err)
	}
	// A made directory is listed by its parent, also when the parent holds
	// names of the store (quay.io/org/tool:2).
	if ents, err := os.ReadDir(e.p("names/quay.io")); err != nil || !slices.ContainsFunc(ents, func(d os.DirEntry) bool { return d.Name() == "me" && d.IsDir() }) {
		t.Errorf("ls names/quay.io does not show the made me/: %v %v", ents, err)
	}
	if err := os.Remove(e.p("names/quay.io/me/team")); err != nil {
		t.Errorf("rmdir of an empty made directory: %v", err)
	}
	if err := gone(e.p("names/quay.io/me/team")); err != nil {
		t.Error(err)
	}

	// ln -s, target relative to the link: tags base.
	link := e.p("names/quay.io/me/app:1")
	if err := os.Symlink("../../../images/"+base, link); err != nil {
		t.Fatalf("ln -s: %v", err)
	}
	if got, err := os.Readlink(link); err != nil || got != "../../../images/"+base {
		t.Errorf("readlink right after ln -s: %q %v", got, err)
	}
	if b, err := os.ReadFile(filepath.Join(link, "digest")); err != nil || string(b) != e.base.ManifestDigest.String()+"\n" {
		t.Errorf("reading through the new link: %q %v", b, err)
	}
	e.wantTags("ln -s relative", base, "docker.io/library/alpine:3.19", "localhost/app:1", "quay.io/me/app:1")

	// Absolute target through an ID prefix; no tag: :latest.
	if err := os.Symlink(e.p("images/"+tool[:12]), e.p("names/quay.io/me/tool")); err != nil {
		t.Fatalf("ln -s absolute: %v", err)
	}
	e.wantTags("ln -s absolute, no tag", tool, "quay.io/org/tool:2", "quay.io/me/tool:latest")
	if got, err := os.Readlink(e.p("names/quay.io/me/tool")); err != nil || got != "../../../images/"+tool {
		t.Errorf("readlink names/quay.io/me/tool: %q %v", got, err)
	}

	// A digest, a name, an ID prefix as targets.
	if err := os.Symlink("../../digests/"+e.lone.ManifestDigest.String(), e.p("names/localhost/lone:1")); err != nil {
		t.Fatalf("ln -s digests/: %v", err)
	}
	if err := os.Symlink("quay.io/org/tool:2", e.p("names/localhost/byname:1")); err != nil {
		t.Fatalf("ln -s NAME: %v", err)
	}
	e.wantTags("ln -s digests/", lone, "localhost/lone:1")
	e.wantTags("ln -s NAME", tool, "quay.io/org/tool:2", "quay.io/me/tool:latest", "localhost/byname:1")

	// ln -sfn moves a name from another image, as podman tag does.
	if out, err := exec.Command("ln", "-sfn", "../../images/"+lone, e.p("names/localhost/app:1")).CombinedOutput(); err != nil {
		t.Fatalf("ln -sfn: %v\n%s", err, out)
	}
	e.wantTags("ln -sf (name moved away)", base, "docker.io/library/alpine:3.19", "quay.io/me/app:1")
	e.wantTags("ln -sf (name moved here)", lone, "localhost/lone:1", "localhost/app:1")

	// mv retags within an image: the new link reads back at once.
	if err := os.Rename(e.p("names/localhost/byname:1"), e.p("names/localhost/renamed:2")); err != nil {
		t.Fatalf("mv: %v", err)
	}
	if got, err := os.Readlink(e.p("names/localhost/renamed:2")); err != nil || got != "../../images/"+tool {
		t.Errorf("readlink right after mv: %q %v", got, err)
	}
	if err := gone(e.p("names/localhost/byname:1")); err != nil {
		t.Error(err)
	}
	e.wantTags("mv", tool, "quay.io/org/tool:2", "quay.io/me/tool:latest", "localhost/renamed:2")
	// mv of a name the read side looked up, to another directory.
	if _, err := os.Lstat(e.p("names/quay.io/org/tool:2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(e.p("names/quay.io/org/tool:2"), e.p("names/quay.io/me/tool:2")); err != nil {
		t.Fatalf("mv across directories: %v", err)
	}
	took := eventually(t, "readlink after mv of a looked-up name", func() error {
		if got, err := os.Readlink(e.p("names/quay.io/me/tool:2")); err != nil || got != "../../../images/"+tool {
			return fmt.Errorf("%q %v", got, err)
		}
		return nil
	})
	t.Logf("a looked-up name reads back %s after mv", took)
	e.wantTags("mv across directories", tool, "quay.io/me/tool:latest", "localhost/renamed:2", "quay.io/me/tool:2")

	// rm of one of several names: untag only.
	if err := os.Remove(e.p("names/quay.io/me/tool")); err != nil {
		t.Fatalf("rm (untag): %v", err)
	}
	if err := gone(e.p("names/quay.io/me/tool:latest")); err != nil {
		t.Error(err)
	}
	e.wantTags("rm of one name", tool, "localhost/renamed:2", "quay.io/me/tool:2")

	// rm of an image's last name removes the image; the layer it shares
	// with tool stays.
	if err := os.Remove(e.p("names/docker.io/library/alpine:3.19")); err != nil {
		t.Fatalf("rm: %v", err)
	}
	if err := os.Remove(e.p("names/quay.io/me/app:1")); err != nil {
		t.Fatalf("rm of the last name: %v", err)
	}
	e.wantTags("rm of the last name", base, nil...)
	eventually(t, "images/<id> of a removed image", func() error { return gone(e.p("images/" + base)) })
	if _, err := os.Stat(e.p("layers/" + e.base.LayerIDs[0])); err != nil {
		t.Errorf("the layer base shared with tool: %v", err)
	}

	// rmdir images/<prefix> removes the image and its names; the shared
	// layer goes with its last user.
	if err := os.Remove(e.p("images/" + tool[:10])); err != nil {
		t.Fatalf("rmdir images/<prefix>: %v", err)
	}
	e.wantTags("rmdir images/<prefix>", tool, nil...)
	for _, p := range []string{"images/" + tool, "names/localhost/renamed:2", "names/quay.io/me/tool:2", "layers/" + e.tool.LayerIDs[0], "layers/" + e.tool.LayerIDs[1]} {
		eventually(t, p+" after rmdir", func() error { return gone(e.p(p)) })
	}

	// rm digests/<digest> removes the image it belongs to.
	if err := os.Remove(e.p("digests/" + e.lone.ManifestDigest.String())); err != nil {
		t.Fatalf("rm digests/: %v", err)
	}
	e.wantTags("rm digests/", lone, nil...)
	eventually(t, "names of the image removed by digest", func() error { return gone(e.p("names/localhost/app:1")) })

	if got := e.repoTags(); len(got) != 1 || got[busy] == nil {
		t.Errorf("podman lists %v, want busy alone", got)
	}

	// A digested name (as a pull by digest leaves) goes like a tag.
	digested := "localhost/busy@" + e.busy.ManifestDigest.String()
	e.s.PodmanOutput(t, "tag", busy, "localhost/busy:2")
	if err := e.s.Store.AddNames(busy, []string{digested}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the digested name", func() error { return readlinkTo(e.p("names/"+digested), busy) })
	if err := os.Remove(e.p("names/" + digested)); err != nil {
		t.Fatalf("rm of a digested name: %v", err)
	}
	e.wantTags("rm of a digested name", busy, "localhost/busy:1", "localhost/busy:2")
}

// TestWritesReadBack: what a write changed reads back at once, also from
// files the kernel had cached just before: the image's names and
// inspect.json, df, and the info.json of a layer the image used. The
// write invalidates them before it returns; without that they lag by the
// store follower's turn (milliseconds).
func TestWritesReadBack(t *testing.T) {
	e := newWenv(t, "overlay", storageview.Options{}, fs.Options{})
	tool := e.tool.ID
	sharedLink, err := os.Readlink(e.p("images/" + tool + "/layers/000"))
	if err != nil {
		t.Fatal(err)
	}
	infoJSON := "layers/" + filepath.Base(sharedLink) + "/info.json"
	files := []string{"images/" + tool + "/names", "images/" + tool + "/inspect.json", "df"}
	read := func(rel string) string {
		t.Helper()
		b, err := os.ReadFile(e.p(rel))
		if err != nil {
			t.Fatalf("cat %s: %v", rel, err)
		}
		return string(b)
	}
	// shows checks, right after a write, that each file shows name (or
	// no longer does); of inspect.json its RepoTags (NamesHistory keeps
	// every name the image had).
	shows := func(after, name string, want bool) {
		t.Helper()
		for _, f := range files {
			got := read(f)
			if strings.HasSuffix(f, "inspect.json") {
				var inspect struct{ RepoTags []string }
				if err := json.Unmarshal([]byte(got), &inspect); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				got = strings.Join(inspect.RepoTags, "\n") + "\n"
			}
			if strings.Contains(got, name) != want {
				t.Errorf("cat %s right after %s: shows %s = %v, want %v:\n%s", f, after, name, !want, want, got)
			}
		}
	}
	for i := range 5 {
		for _, f := range files {
			read(f) // the kernel caches them
		}
		name, moved := fmt.Sprintf("quay.io/org/rb:%d", i), fmt.Sprintf("quay.io/org/rb:%d-moved", i)
		if err := os.Symlink("../../../images/"+tool, e.p("names/"+name)); err != nil {
			t.Fatalf("ln -s: %v", err)
		}
		shows("ln -s", name, true)
		if err := os.Rename(e.p("names/"+name), e.p("names/"+moved)); err != nil {
			t.Fatalf("mv: %v", err)
		}
		shows("mv", moved, true)
		shows("mv", name+"\n", false)
		if err := os.Remove(e.p("names/" + moved)); err != nil {
			t.Fatalf("rm: %v", err)
		}
		shows("rm", moved, false)
	}

	// rm -r of a repository: the names go one by one, and each directory
	// goes with its last name, before rm -r's own rmdir reaches it.
	if err := os.MkdirAll(e.p("names/quay.io/rr/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"quay.io/rr/app:1", "quay.io/rr/app:2", "quay.io/rr/sub/app:1"} {
		if err := os.Symlink(e.p("images/"+tool), e.p("names/"+n)); err != nil {
			t.Fatalf("ln -s %s: %v", n, err)
		}
	}
	// A directory whose last name just went stays for the next ln -s.
	if err := os.Remove(e.p("names/quay.io/rr/sub/app:1")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(e.p("images/"+tool), e.p("names/quay.io/rr/sub/app:9")); err != nil {
		t.Errorf("ln -s into a directory whose last name just went: %v", err)
	}
	if out, err := exec.Command("rm", "-r", e.p("names/quay.io/rr")).CombinedOutput(); err != nil {
		t.Errorf("rm -r names/quay.io/rr: %v: %s", err, out)
	}
	e.wantTags("rm -r", tool, "quay.io/org/tool:2")
	if err := gone(e.p("names/quay.io/rr")); err != nil {
		t.Error(err)
	}

	if !strings.Contains(read(infoJSON), tool) { // and the kernel caches it
		t.Fatalf("%s does not list %s", infoJSON, tool)
	}
	if err := os.Remove(e.p("images/" + tool)); err != nil {
		t.Fatalf("rmdir images/%s: %v", tool, err)
	}
	if got := read(infoJSON); strings.Contains(got, tool) {
		t.Errorf("%s right after rmdir of an image using the layer still lists it:\n%s", infoJSON, got)
	}
	if got := read("df"); strings.Contains(got, tool) {
		t.Errorf("df right after rmdir still lists the image:\n%s", got)
	}

	// rm of an image's last name: its images/ and digests/ entries are
	// gone when rm returns, also those the kernel had looked up.
	lone := e.lone
	if err := os.Symlink("../../images/"+lone.ID, e.p("names/localhost/lone:1")); err != nil {
		t.Fatal(err)
	}
	entries := []string{"images/" + lone.ID, "images/" + lone.ID[:12], "digests/" + lone.ManifestDigest.String()}
	for _, p := range entries {
		if _, err := os.Stat(e.p(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(e.p("names/localhost/lone:1")); err != nil {
		t.Fatalf("rm of the last name: %v", err)
	}
	for _, p := range entries {
		if err := gone(e.p(p)); err != nil {
			t.Errorf("right after rm of the last name: %v", err)
		}
	}
}

// TestWritesPruneParents: rm of a built image's last name also removes the
// untagged intermediate images podman build --layers left under it, as
// podman rmi does; its named base and the other images stay.
func TestWritesPruneParents(t *testing.T) {
	e := newWenv(t, "overlay", storageview.Options{}, fs.Options{})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("f\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Containerfile"), []byte("FROM localhost/busy:1\nCOPY f /f\nLABEL built=yes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fixtures := e.repoTags()
	e.s.PodmanOutput(t, "build", "--layers", "--pull=never", "-t", "localhost/built:1", dir)
	var built string
	var intermediates []string
	for id, names := range e.repoTags() {
		_, isFixture := fixtures[id]
		switch {
		case isFixture:
		case len(names) == 0:
			intermediates = append(intermediates, id)
		default:
			built = id
		}
	}
	if built == "" || len(intermediates) != 1 {
		t.Fatalf("podman build left image %q and intermediates %v; want one of each (COPY; LABEL is the tagged one)", built, intermediates)
	}
	eventually(t, "the built image's name", func() error { return readlinkTo(e.p("names/localhost/built:1"), built) })

	if err := os.Remove(e.p("names/localhost/built:1")); err != nil {
		t.Fatalf("rm of the built image's name: %v", err)
	}
	after := e.repoTags()
	for _, id := range append(intermediates, built) {
		if _, ok := after[id]; ok {
			t.Errorf("podman still lists %.12s after rm of localhost/built:1", id)
		}
	}
	if !maps.EqualFunc(after, fixtures, slices.Equal) {
		t.Errorf("podman lists %v, want the fixtures %v", after, fixtures)
	}
	eventually(t, "images/<intermediate>", func() error { return gone(e.p("images/" + intermediates[0])) })
}

// TestWritesRefused: each refusal's errno, its one log line, and podman's
// listing unchanged.
func TestWritesRefused(t *testing.T) {
	e := newWenv(t, "vfs", storageview.Options{}, fs.Options{})
	busy := e.busy.ID
	in := func(p string) string { return e.p(p) }
	symlink := func(target, p string) func() error { return func() error { return os.Symlink(target, in(p)) } }
	remove := func(p string) func() error { return func() error { return os.Remove(in(p)) } }
	rename := func(a, b string) func() error { return func() error { return os.Rename(in(a), in(b)) } }

	// An image a container uses: EBUSY by every path, nothing untagged.
	e.refused("rm the only name of an image in use", syscall.EBUSY, "/names/localhost/busy:1", remove("names/localhost/busy:1"))
	e.refused("rmdir images/<id> in use", syscall.EBUSY, "/images/"+busy, remove("images/"+busy))
	e.refused("rmdir images/<prefix> in use", syscall.EBUSY, "/images/"+busy[:8], remove("images/"+busy[:8]))
	e.refused("rm digests/ of an image in use", syscall.EBUSY, "/digests/"+e.busy.ManifestDigest.String(), remove("digests/"+e.busy.ManifestDigest.String()))
	e.wantTags("after the refusals", busy, "localhost/busy:1")

	target := "../../images/" + e.base.ID
	for what, c := range map[string]struct{ target, path string }{
		"upper case":        {target, "names/localhost/Bad:1"},
		"bad tag character": {target, "names/localhost/bad:a+b"},
		"tag too long":      {target, "names/localhost/bad:" + strings.Repeat("t", 129)},
		"no registry (podman would store localhost/app:2)": {"../images/" + e.base.ID, "names/app:2"},
		"docker.io short form":                             {"../../images/" + e.base.ID, "names/docker.io/alpine:2"},
		"digested name":                                    {target, "names/localhost/app@" + e.busy.ManifestDigest.String()},
	} {
		e.refused("ln -s, "+what, syscall.EINVAL, "/"+c.path, symlink(c.target, c.path))
	}
	long := "names/localhost/" + strings.Repeat("n", 250) + ":1"
	e.refused("ln -s, name too long", syscall.EINVAL, "/"+long, symlink(target, long))
	e.refused("ln -s to nothing", syscall.ENOENT, "/names/localhost/x:1", symlink("../../images/"+strings.Repeat("0", 64), "names/localhost/x:1"))
	e.refused("ln -s to an unknown name", syscall.ENOENT, "/names/localhost/x:1", symlink("quay.io/no/such:1", "names/localhost/x:1"))
	e.refused("ln -s outside the mount", syscall.ENOENT, "/names/localhost/x:1", symlink("/etc/passwd", "names/localhost/x:1"))

	e.refused("mv onto another image's name", syscall.EEXIST, "/names/localhost/app:1", rename("names/localhost/app:1", "names/localhost/busy:1"))
	e.refused("mv out of names/", syscall.EXDEV, "/names/localhost/app:1", rename("names/localhost/app:1", "images/x"))
	e.refused("mv to a bad name", syscall.EINVAL, "/names/localhost/UP:1", rename("names/localhost/app:1", "names/localhost/UP:1"))
	e.refused("mv a directory of names", syscall.EXDEV, "/names/localhost", rename("names/localhost", "names/example.com"))
	// GNU mv then copies the directory name by name, starting with the
	// mkdir of the new one: refused, so no name is made.
	e.refused("mv(1) of a directory of names", syscall.EXDEV, "/names/example.com", func() error {
		out, err := exec.Command("mv", in("names/localhost"), in("names/example.com")).CombinedOutput()
		if err != nil && strings.Contains(string(out), "Invalid cross-device link") {
			return syscall.EXDEV
		}
		return fmt.Errorf("mv: %v %s", err, out)
	})
	// Onto an empty directory, mv removes it first: refused too.
	if err := os.MkdirAll(in("names/example.org/localhost"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.refused("mv(1) of a directory of names onto an empty one", syscall.EXDEV, "/names/example.org/localhost", func() error {
		out, err := exec.Command("mv", "-T", in("names/localhost"), in("names/example.org/localhost")).CombinedOutput()
		if err != nil && strings.Contains(string(out), "Invalid cross-device link") {
			return syscall.EXDEV
		}
		return fmt.Errorf("mv: %v %s", err, out)
	})
	if st, err := os.Stat(in("names/example.org/localhost")); err != nil || !st.IsDir() {
		t.Errorf("mv removed the directory in its way: %v", err)
	}

	// mv out of the mount: the kernel says EXDEV, and mv copies the link
	// and then removes the source; that removal is refused, so the image
	// keeps its name (the name is base's last in lone's case: rmi).
	outside := t.TempDir()
	mvOut := func(p string) func() error {
		return func() error {
			out, err := exec.Command("mv", in(p), outside).CombinedOutput()
			if err != nil && strings.Contains(string(out), "Invalid cross-device link") {
				return syscall.EXDEV
			}
			return fmt.Errorf("mv: %v %s", err, out)
		}
	}
	e.refused("mv of a name out of the mount", syscall.EXDEV, "/names/localhost/app:1", mvOut("names/localhost/app:1"))
	// mv run by another name, through a symlink to it.
	mvPath, err := exec.LookPath("mv")
	if err != nil {
		t.Fatal(err)
	}
	move := filepath.Join(t.TempDir(), "move")
	if err := os.Symlink(mvPath, move); err != nil {
		t.Fatal(err)
	}
	e.refused("mv (as move) of a name out of the mount", syscall.EXDEV, "/names/localhost/app:1", func() error {
		out, err := exec.Command(move, in("names/localhost/app:1"), outside).CombinedOutput()
		if err != nil && strings.Contains(string(out), "Invalid cross-device link") {
			return syscall.EXDEV
		}
		return fmt.Errorf("move: %v %s", err, out)
	})
	e.refused("mv of a digest out of the mount", syscall.EXDEV, "/digests/"+e.lone.ManifestDigest.String(), mvOut("digests/"+e.lone.ManifestDigest.String()))
	e.wantTags("after mv out of the mount", e.base.ID, "docker.io/library/alpine:3.19", "localhost/app:1")

	e.refused("rmdir a directory holding names", syscall.ENOTEMPTY, "/names/localhost", remove("names/localhost"))
	nlog := len(e.logs.lines())
	e.refused("ln -s of a layer", syscall.ENOENT, "/names/localhost/lt:1", symlink("../../layers/"+e.base.LayerIDs[0], "names/localhost/lt:1"))
	if lines := e.logs.lines()[nlog:]; len(lines) == 0 || !strings.Contains(lines[len(lines)-1], "a layer, not an image") {
		t.Errorf("the refusal of a layer as a target does not say so: %q", lines)
	}
	nlog = len(e.logs.lines())
	e.refused("create in names/", syscall.EROFS, "/names/localhost/file", func() error { return os.WriteFile(in("names/localhost/file"), nil, 0o644) })
	if lines := e.logs.lines()[nlog:]; len(lines) == 0 || !strings.Contains(lines[len(lines)-1], "only symbolic links") {
		t.Errorf("the refusal of a file in names/ does not say what names/ holds: %q", lines)
	}
	e.refused("O_TMPFILE in names/", syscall.EROFS, "/names/localhost", func() error { return testenv.OpenTmpfile(in("names/localhost")) })
	e.refused("mkdir of a non-registry", syscall.EINVAL, "/names/foo", func() error { return os.Mkdir(in("names/foo"), 0o755) })
	e.refused("mkdir of an upper-case directory", syscall.EINVAL, "/names/localhost/UP", func() error { return os.Mkdir(in("names/localhost/UP"), 0o755) })

	// The read-only places: layers/ and an image's own directory.
	layer := "layers/" + e.base.LayerIDs[0]
	img := "images/" + e.base.ID
	e.refused("rmdir layers/<id>", syscall.EROFS, "/"+layer, remove(layer))
	e.refused("rm images/<id>/manifest", syscall.EROFS, "/"+img+"/manifest", remove(img+"/manifest"))
	e.refused("create in images/<id>", syscall.EROFS, "/"+img+"/new", func() error { return os.WriteFile(in(img+"/new"), nil, 0o644) })
	e.refused("mkdir in images/<id>", syscall.EROFS, "/"+img+"/dir", func() error { return os.Mkdir(in(img+"/dir"), 0o755) })
	e.refused("ln -s in images/<id>/layers", syscall.EROFS, "/"+img+"/layers/999", symlink("x", img+"/layers/999"))
	e.refused("mkdir images/x", syscall.EROFS, "/images/x", func() error { return os.Mkdir(in("images/x"), 0o755) })
	e.refused("write to a name's image file", syscall.EROFS, "/"+img+"/names", func() error {
		// Open succeeds (the kernel does not ask imagefs), the write is refused.
		f, err := os.OpenFile(in(img+"/names"), os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.Write([]byte("x"))
		return err
	})
}

// TestWritesReadOnlyMount: a --read-only view refuses every change with
// EROFS (and one log line), changing nothing.
func TestWritesReadOnlyMount(t *testing.T) {
	e := newWenv(t, "overlay", storageview.Options{ReadOnly: true}, fs.Options{})
	in := func(p string) string { return e.p(p) }
	e.refused("ln -s", syscall.EROFS, "/names/localhost/new:1", func() error {
		return os.Symlink("../../images/"+e.base.ID, in("names/localhost/new:1"))
	})
	e.refused("rm name", syscall.EROFS, "/names/localhost/app:1", func() error { return os.Remove(in("names/localhost/app:1")) })
	e.refused("rmdir images/<id>", syscall.EROFS, "/images/"+e.lone.ID, func() error { return os.Remove(in("images/" + e.lone.ID)) })
	e.refused("rm digests/", syscall.EROFS, "/digests/"+e.lone.ManifestDigest.String(), func() error {
		return os.Remove(in("digests/" + e.lone.ManifestDigest.String()))
	})
	e.refused("mv", syscall.EROFS, "/names/localhost/app:1", func() error {
		return os.Rename(in("names/localhost/app:1"), in("names/localhost/app:2"))
	})
	e.refused("mkdir", syscall.EROFS, "/names/quay.io/new", func() error { return os.Mkdir(in("names/quay.io/new"), 0o755) })
	// Nothing is writable, and the modes say so.
	for _, p := range []string{"names", "names/localhost", "images", "digests"} {
		if st, err := os.Stat(in(p)); err != nil || st.Mode() != iofs.ModeDir|0o555 {
			t.Errorf("%s of a --read-only mount: %v %v, want dr-xr-xr-x", p, st.Mode(), err)
		}
	}
}

// mountForOthers mounts a vfs store of writesImages with allow_other, at a
// mount point every user can reach (t.TempDir is private to root), the
// tree made with nopts.
func mountForOthers(t *testing.T, nopts nodes.Options) *wenv {
	t.Helper()
	testenv.RequireFUSE(t)
	testenv.RequirePodman(t)
	dir, err := os.MkdirTemp("/tmp", "ifsao")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	testenv.NoMountsLeft(t, dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &wenv{t: t, s: fixture.NewStore(t, "vfs"), mnt: mnt, logs: &logBuf{}}
	e.base, e.tool, e.busy, e.lone = writesImages(e.s, t)
	e.v = openWritesView(t, e.s, storageview.Options{}, e.logs)
	srv, err := fs.Mount(mnt, e.v, fs.Options{AllowOther: true, Log: log.New(e.logs, "", 0), NodeOptions: nopts})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(false); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return e
}

// TestWritesAllowOther: under allow_other another user reads but cannot
// change anything (EACCES) — refused by the kernel's permission check, and
// by imagefs itself when the caller can pass that check (CAP_DAC_OVERRIDE)
// without being root or the user who mounted.
func TestWritesAllowOther(t *testing.T) {
	e := mountForOthers(t, nodes.Options{})
	base := e.base

	asNobody := func(caps []uintptr, name string, args ...string) error {
		cmd := exec.Command(name, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, AmbientCaps: caps}
		out, err := cmd.CombinedOutput()
		if err != nil && strings.Contains(string(out), "Permission denied") {
			return syscall.EACCES
		}
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	// Reading works for everybody.
	if err := asNobody(nil, "readlink", "-e", e.p("names/localhost/app:1")); err != nil {
		t.Fatalf("another user reading: %v", err)
	}
	before := e.podmanImages()
	for _, args := range [][]string{
		{"ln", "-s", "../../images/" + base.ID, e.p("names/localhost/other:1")},
		{"rm", e.p("names/localhost/app:1")},
		{"rmdir", e.p("images/" + base.ID)},
		{"mv", e.p("names/localhost/app:1"), e.p("names/localhost/app:2")},
	} {
		if err := asNobody(nil, args[0], args[1:]...); !errors.Is(err, syscall.EACCES) {
			t.Errorf("%v as another user: %v, want EACCES", args, err)
		}
	}
	// Past the kernel's check, imagefs refuses by itself.
	dacOverride := []uintptr{1} // CAP_DAC_OVERRIDE
	e.refused("ln -s by another user with CAP_DAC_OVERRIDE", syscall.EACCES, "/names/localhost/other:1", func() error {
		return asNobody(dacOverride, "ln", "-s", "../../images/"+base.ID, e.p("names/localhost/other:1"))
	})
	e.refused("rm by another user with CAP_DAC_OVERRIDE", syscall.EACCES, "/names/localhost/app:1", func() error {
		return asNobody(dacOverride, "rm", e.p("names/localhost/app:1"))
	})
	if after := e.podmanImages(); after != before {
		t.Errorf("another user changed the store")
	}
}

// TestWritesDigestsOfLists: every empty manifest list podman makes has the
// same manifest, which a list keeps as a recorded digest once it has
// instances. digests/ leads to the list whose manifest has the digest now;
// removing a digest that is the manifest of several lists is refused, since
// it cannot tell which one is meant.
func TestWritesDigestsOfLists(t *testing.T) {
	e := newWenv(t, "overlay", storageview.Options{}, fs.Options{})
	create := func(name string) string { // podman prints the list's ID
		return strings.TrimSpace(e.s.PodmanOutput(t, "manifest", "create", name))
	}
	full := create("localhost/full:1")
	e.s.PodmanOutput(t, "manifest", "add", "localhost/full:1", "containers-storage:"+e.base.ID)
	empty1, empty2 := create("localhost/empty:1"), create("localhost/empty:2")

	emptyDigest := func() string {
		b, err := os.ReadFile(e.p("images/" + empty1 + "/digest"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	var d string
	eventually(t, "the lists in the tree", func() error {
		if _, err := os.Stat(e.p("images/" + empty2)); err != nil {
			return err
		}
		d = emptyDigest()
		return nil
	})
	if info, err := os.ReadFile(e.p("images/" + full + "/inspect.json")); err != nil || !strings.Contains(string(info), d) {
		t.Fatalf("the full list does not record the empty manifest's digest %s (%v): the test's premise is gone\n%s", d, err, info)
	}
	target, err := os.Readlink(e.p("digests/" + d))
	if err != nil {
		t.Fatal(err)
	}
	if id := path.Base(target); id != empty1 && id != empty2 {
		t.Errorf("digests/%s -> %s, want one of the empty lists %s, %s, not the full list %s", d, target, empty1, empty2, full)
	}
	e.refused("rm digests/ of the manifest of two lists", syscall.EINVAL, "/digests/"+d, func() error {
		return os.Remove(e.p("digests/" + d))
	})

	// With one empty list left, the digest is its own.
	if err := os.Remove(e.p("images/" + empty2)); err != nil {
		t.Fatalf("rmdir images/<second empty list>: %v", err)
	}
	if err := os.Remove(e.p("digests/" + d)); err != nil {
		t.Fatalf("rm digests/ of the one empty list: %v", err)
	}
	got := e.repoTags()
	if _, ok := got[empty1]; ok {
		t.Errorf("the empty list is still there: %v", got)
	}
	if _, ok := got[full]; !ok {
		t.Errorf("rm digests/<empty manifest> removed the full list too: %v", got)
	}
}

// TestWritesByMountingUser: a mount made by a user other than root is that
// user's: the directories writes change are theirs and writable (drwxr-xr-x),
// so the kernel passes their ln -s, rm, mv, mkdir and rmdir on, and each
// does what podman does. (The server here runs as root, mounting for user
// nobody; allow_other lets nobody in, as the mounting user always is.)
func TestWritesByMountingUser(t *testing.T) {
	nobody := fuse.Owner{Uid: 65534, Gid: 65534}
	e := mountForOthers(t, nodes.Options{Owner: &nobody})
	base, tool, lone := e.base, e.tool, e.lone
	for _, p := range []string{"names", "names/localhost", "images", "digests"} {
		var st syscall.Stat_t
		if err := syscall.Stat(e.p(p), &st); err != nil || st.Uid != nobody.Uid || st.Gid != nobody.Gid || st.Mode != syscall.S_IFDIR|0o755 {
			t.Errorf("%s: owner %d:%d mode %o, %v; want the mounting user's, drwxr-xr-x", p, st.Uid, st.Gid, st.Mode, err)
		}
	}
	as := func(uid uint32, args ...string) error {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	// Another user still may not.
	if err := as(65533, "ln", "-s", "../../images/"+base.ID, e.p("names/localhost/other:1")); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("ln -s by another user: %v, want Permission denied", err)
	}
	for _, args := range [][]string{
		{"ln", "-s", "../../images/" + base.ID, e.p("names/localhost/mine:1")},
		{"mkdir", "-p", e.p("names/quay.io/me")},
		{"mv", "-T", e.p("names/localhost/mine:1"), e.p("names/quay.io/me/mine:2")},
		{"rm", e.p("names/localhost/app:1")},
		{"rmdir", e.p("images/" + tool.ID)},
		{"rm", e.p("digests/" + lone.ManifestDigest.String())},
	} {
		if err := as(nobody.Uid, args...); err != nil {
			t.Errorf("%v by the mounting user: %v", args, err)
		}
	}
	got := e.repoTags()
	if want := []string{"docker.io/library/alpine:3.19", "quay.io/me/mine:2"}; !slices.Equal(got[base.ID], want) {
		t.Errorf("podman shows %v for the tagged image, want %v", got[base.ID], want)
	}
	for _, id := range []string{tool.ID, lone.ID} {
		if _, ok := got[id]; ok {
			t.Errorf("image %s is still there: %v", id[:12], got)
		}
	}
}

// TestWritesMkdirBesideLatest: a directory mkdir made and a :latest name
// of the same repository: the directory is what the repository's name
// shows (listed and looked up alike) until rmdir, then the alias link.
func TestWritesMkdirBesideLatest(t *testing.T) {
	e := newWenv(t, "overlay", storageview.Options{}, fs.Options{})
	dir := e.p("names/localhost/q2")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../images/"+e.base.ID, dir+":latest"); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(e.p("names/localhost"))
	if err != nil {
		t.Fatal(err)
	}
	var listed uint64
	for _, ent := range ents {
		if ent.Name() == "q2" {
			info, _ := ent.Info()
			listed = info.Sys().(*syscall.Stat_t).Ino
		}
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(dir, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR || st.Ino != listed {
		t.Errorf("q2 beside q2:latest: lstat mode %o ino %d (%v), listed ino %d; want the directory", st.Mode, st.Ino, err, listed)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatalf("rmdir q2: %v", err)
	}
	eventually(t, "rmdir of q2", func() error {
		if target, err := os.Readlink(dir); err != nil || !strings.HasSuffix(target, e.base.ID) {
			return fmt.Errorf("q2 after the rmdir: %q %v, want the :latest alias", target, err)
		}
		return nil
	})
}

// TestWritesMkdirLinkCount: a directory mkdir makes in names/ counts in
// its parent's link count (2 plus its subdirectories), whether the parent
// is the store's or mkdir's too.
func TestWritesMkdirLinkCount(t *testing.T) {
	e := newWenv(t, "overlay", storageview.Options{}, fs.Options{})
	nlink := func(p string) uint64 {
		var st syscall.Stat_t
		if err := syscall.Stat(e.p(p), &st); err != nil {
			t.Fatal(err)
		}
		return uint64(st.Nlink)
	}
	subdirs := func(p string) uint64 {
		ents, err := os.ReadDir(e.p(p))
		if err != nil {
			t.Fatal(err)
		}
		n := uint64(0)
		for _, d := range ents {
			if d.IsDir() {
				n++
			}
		}
		return n
	}
	if err := os.MkdirAll(e.p("names/example.com/team"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"names", "names/example.com"} {
		eventually(t, p+"'s link count", func() error {
			if got, want := nlink(p), 2+subdirs(p); got != want {
				return fmt.Errorf("%s: link count %d, want %d", p, got, want)
			}
			return nil
		})
	}
}

// TestWritesCopiersKeepNames: cp and tar restoring a backup of names/ over
// the names it holds remove each existing name before making theirs; that
// removal is refused, so no image loses a name (an image's last name going
// would remove it, and its link could not be made again). rsync makes its
// link under a temporary dot name and renames it over the name, which
// moves the name as ln -sfn does.
func TestWritesCopiersKeepNames(t *testing.T) {
	e := newWenv(t, "overlay", storageview.Options{}, fs.Options{})
	const name = "names/quay.io/org/tool:2" // tool's only name
	backup := t.TempDir()
	if out, err := exec.Command("cp", "-P", e.p(name), backup).CombinedOutput(); err != nil {
		t.Fatalf("cp -P to the backup: %v %s", err, out)
	}
	run := func(dir string, args ...string) func() error {
		return func() error {
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil && strings.Contains(string(out), "File exists") {
				return syscall.EEXIST
			}
			return fmt.Errorf("%v: %v %s", args, err, out)
		}
	}
	e.refused("cp -r of a backup over its names", syscall.EEXIST, "/"+name, run(backup, "cp", "-r", ".", e.p("names/quay.io/org/")))
	tarball := filepath.Join(backup, "names.tar")
	if out, err := exec.Command("tar", "-C", e.p("names"), "-cf", tarball, "quay.io/org/tool:2").CombinedOutput(); err != nil {
		t.Fatalf("tar -c: %v %s", err, out)
	}
	e.refused("tar -x of a backup over its names", syscall.EEXIST, "/"+name, run(e.p("names"), "tar", "-xf", tarball))
	e.wantTags("after the restores", e.tool.ID, "quay.io/org/tool:2")

	// rsync's way: the link under ".<name>.XXXXXX", renamed over the name.
	temp := e.p("names/quay.io/org/.tool:2.Ab12Cd")
	if err := os.Symlink("../../../images/"+e.base.ID, temp); err != nil {
		t.Fatalf("symlink under a dot name: %v", err)
	}
	if err := os.Rename(temp, e.p(name)); err != nil {
		t.Fatalf("rename of the dot name over the name: %v", err)
	}
	e.wantTags("the name moved", e.base.ID, "docker.io/library/alpine:3.19", "localhost/app:1", "quay.io/org/tool:2")
	if _, err := os.Lstat(temp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temporary name is still there: %v", err)
	}
}
