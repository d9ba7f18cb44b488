package nodes

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	digest "github.com/opencontainers/go-digest"

	"github.com/imagefs/imagefs/storageview"
)

// world is the fake store most tests use: two images sharing a base
// layer (one with two tags, one with a digested name), a dangling image
// and a manifest list with one local and one missing instance.
type world struct {
	s                          *fakeStore
	base, mid, other           string // layer IDs
	alpine, app, dangling, lst *storageview.Image
	missing                    digest.Digest
}

func newWorld() *world {
	s := newFakeStore()
	w := &world{s: s}
	w.base = s.addLayer("base", "")
	w.mid = s.addLayer("mid", w.base)
	w.other = s.addLayer("other", "")
	w.alpine = s.addImage("alpine", []string{w.base, w.mid}, "docker.io/library/alpine:latest", "docker.io/library/alpine:3.19")
	w.app = s.addImage("app", []string{w.base}, "quay.io/org/app:1", "localhost/app:v1")
	s.edit(w.app.ID, func(img *storageview.Image) {
		img.Names = append(img.Names, "quay.io/org/app@"+img.Digest.String())
	})
	w.dangling = s.addImage("dangling", []string{w.other})
	w.missing = digest.FromString("an instance not stored here")
	w.lst = s.addList("list", []storageview.Instance{
		{Digest: w.alpine.Digest, OS: "linux", Arch: "amd64"},
		{Digest: w.missing, OS: "linux", Arch: "arm64", Variant: "v8"},
	}, "localhost/multi:1")
	return w
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestRootAndFixedDirs(t *testing.T) {
	w := newWorld()
	h := newHarness(t, w.s, Options{})
	if got, want := h.mustReaddir(""), []string{"df", "digests", "images", "layers", "names"}; !slices.Equal(got, want) {
		t.Errorf("root lists %q, want %q", got, want)
	}
	a, errno := h.getattr(fuse.FUSE_ROOT_ID)
	if errno != 0 || a.Ino != RootIno || a.Mode != dirMode {
		t.Errorf("root attr ino %d mode %o (%v), want %d %o", a.Ino, a.Mode, errno, RootIno, dirMode)
	}
	// The newest image is the list.
	if a.Mtime != uint64(w.lst.Created.Unix()) {
		t.Errorf("root mtime %d, want newest image's %d", a.Mtime, w.lst.Created.Unix())
	}
	for name, ino := range map[string]uint64{"images": imagesIno, "names": namesIno, "digests": digestsIno, "layers": layersIno} {
		_, _, out := h.mustLookup(name)
		if out.Attr.Ino != ino || out.Attr.Mode != dirMode {
			t.Errorf("%s: ino %d mode %o, want %d %o", name, out.Attr.Ino, out.Attr.Mode, ino, dirMode)
		}
	}
	_, _, out := h.mustLookup("df")
	if out.Attr.Ino < firstHashedIno || out.Attr.Mode != fileMode || out.Attr.Size != uint64(len(w.s.df)) {
		t.Errorf("df: ino %d mode %o size %d", out.Attr.Ino, out.Attr.Mode, out.Attr.Size)
	}
	if ino := h.readdirIno("", "df"); ino != out.Attr.Ino {
		t.Errorf("df: listed with ino %d, looked up as %d", ino, out.Attr.Ino)
	}
	if got := h.mustRead("df"); string(got) != string(w.s.df) {
		t.Errorf("df = %q, want %q", got, w.s.df)
	}
	if _, _, _, errno := h.lookup("nothing"); errno != syscall.ENOENT {
		t.Errorf("lookup of an unknown root entry: %v, want ENOENT", errno)
	}
}

func TestImagesListing(t *testing.T) {
	w := newWorld()
	h := newHarness(t, w.s, Options{})
	want := []string{w.alpine.ID, w.app.ID, w.dangling.ID, w.lst.ID}
	sort.Strings(want)
	names, ents, errno := h.readdir("images")
	if errno != 0 || !slices.Equal(names, want) {
		t.Fatalf("images lists %q (%v), want %q", names, errno, want)
	}
	for _, img := range []*storageview.Image{w.alpine, w.app, w.dangling, w.lst} {
		_, _, out := h.mustLookup("images/" + img.ID)
		if out.Attr.Ino != ents[img.ID].Ino {
			t.Errorf("image %s: lookup ino %d, listing ino %d", img.ID[:12], out.Attr.Ino, ents[img.ID].Ino)
		}
		if out.Attr.Mode != dirMode || out.Attr.Mtime != uint64(img.Created.Unix()) {
			t.Errorf("image %s: mode %o mtime %d, want %o %d", img.ID[:12], out.Attr.Mode, out.Attr.Mtime, dirMode, img.Created.Unix())
		}
		if out.EntryTimeout() != DefaultEntryTimeout {
			t.Errorf("image %s: entry timeout %v, want the short %v", img.ID[:12], out.EntryTimeout(), DefaultEntryTimeout)
		}
	}
	_, _, out := h.mustLookup("images")
	if out.Attr.Nlink != 2+4 {
		t.Errorf("images nlink %d, want 6", out.Attr.Nlink)
	}
}

func TestImageEntries(t *testing.T) {
	w := newWorld()
	w.dangling.NoConfig = true // as a docker schema 1 image
	w.s.rebuild()
	h := newHarness(t, w.s, Options{})
	image := withOthers([]string{"config", "digest", "history", "inspect.json", "layers", "manifest", "names"}, false)
	list := withOthers([]string{"digest", "inspect.json", "instances", "manifest", "names"}, true)
	if got := h.mustReaddir("images/" + w.alpine.ID); !slices.Equal(got, image) {
		t.Errorf("image dir lists %q, want %q", got, image)
	}
	schema1 := slices.DeleteFunc(slices.Clone(image), func(name string) bool { return name == "config" })
	if got := h.mustReaddir("images/" + w.dangling.ID); !slices.Equal(got, schema1) {
		t.Errorf("the dir of an image without a config lists %q, want %q", got, schema1)
	}
	if _, _, _, errno := h.lookup("images/" + w.dangling.ID + "/config"); errno != syscall.ENOENT {
		t.Errorf("config of an image without one: %v, want ENOENT", errno)
	}
	if got := h.mustReaddir("images/" + w.lst.ID); !slices.Equal(got, list) {
		t.Errorf("list dir lists %q, want %q", got, list)
	}
	for _, name := range []string{"config", "layers", "history", "rootfs", "nope"} {
		if _, _, _, errno := h.lookup("images/" + w.lst.ID + "/" + name); errno != syscall.ENOENT {
			t.Errorf("list's %s: %v, want ENOENT", name, errno)
		}
	}
	if _, _, _, errno := h.lookup("images/" + w.alpine.ID + "/instances"); errno != syscall.ENOENT {
		t.Errorf("image's instances: %v, want ENOENT", errno)
	}
	// Listing inode numbers are the ones lookups give.
	_, ents, _ := h.readdir("images/" + w.alpine.ID)
	for _, name := range image {
		if !ownImageEntries[name] {
			continue
		}
		_, _, out := h.mustLookup("images/" + w.alpine.ID + "/" + name)
		if out.Attr.Ino != ents[name].Ino || out.Attr.Mode&syscall.S_IFMT != ents[name].Mode {
			t.Errorf("%s: lookup ino %d mode %o, listing %d %o", name, out.Attr.Ino, out.Attr.Mode, ents[name].Ino, ents[name].Mode)
		}
	}
	_, _, out := h.mustLookup("images/" + w.alpine.ID)
	wantNlink := uint32(2) // . and ..
	for _, name := range image {
		if ents[name].Mode == syscall.S_IFDIR {
			wantNlink++
		}
	}
	if ents["layers"].Mode != syscall.S_IFDIR {
		t.Errorf("layers listed as mode %o", ents["layers"].Mode)
	}
	if out.Attr.Nlink != wantNlink {
		t.Errorf("image nlink %d, want %d", out.Attr.Nlink, wantNlink)
	}
}

// ownImageEntries are the image entries of this issue; others (rootfs/)
// join imageChildren from their own files.
var ownImageEntries = map[string]bool{"config": true, "digest": true, "history": true, "inspect.json": true,
	"layers": true, "manifest": true, "names": true, "instances": true}

var ownLayerEntries = map[string]bool{"info.json": true, "parent": true}

// withOthers adds to own the image entries other files registered, sorted.
func withOthers(own []string, list bool) []string {
	img := &storageview.Image{IsList: list}
	for _, c := range imageChildren {
		if !ownImageEntries[c.name] && (c.in == nil || c.in(img)) {
			own = append(own, c.name)
		}
	}
	sort.Strings(own)
	return own
}

// withOtherLayerEntries adds to own the layer entries other files registered.
func withOtherLayerEntries(own []string, parent bool) []string {
	l := &storageview.Layer{}
	if parent {
		l.Parent = "p"
	}
	for _, c := range layerChildren {
		if !ownLayerEntries[c.name] && (c.in == nil || c.in(l)) {
			own = append(own, c.name)
		}
	}
	sort.Strings(own)
	return own
}

func TestImageFiles(t *testing.T) {
	w := newWorld()
	h := newHarness(t, w.s, Options{})
	dir := "images/" + w.alpine.ID + "/"
	files := map[string]string{
		"manifest":     string(w.s.manifests[w.alpine.ID]),
		"config":       string(w.s.configs[w.alpine.ID]),
		"digest":       w.alpine.Digest.String() + "\n",
		"names":        "docker.io/library/alpine:latest\ndocker.io/library/alpine:3.19\n",
		"inspect.json": string(w.s.inspect[w.alpine.ID]),
		"history":      string(w.s.history[w.alpine.ID]),
	}
	for name, want := range files {
		got := h.mustRead(dir + name)
		if string(got) != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
		_, _, out := h.mustLookup(dir + name)
		if out.Attr.Size != uint64(len(want)) || out.Attr.Mode != fileMode || out.Attr.Nlink != 1 {
			t.Errorf("%s: size %d mode %o nlink %d, want %d %o 1", name, out.Attr.Size, out.Attr.Mode, out.Attr.Nlink, len(want), fileMode)
		}
		if out.Attr.Mtime != uint64(w.alpine.Created.Unix()) {
			t.Errorf("%s: mtime %d, want the image's %d", name, out.Attr.Mtime, w.alpine.Created.Unix())
		}
	}
	if got := "sha256:" + sha256Hex(h.mustRead(dir+"manifest")); got != strings.TrimSpace(files["digest"]) {
		t.Errorf("sha256(manifest) %s != digest file %s", got, files["digest"])
	}
	if got := sha256Hex(h.mustRead(dir + "config")); got != w.alpine.ID {
		t.Errorf("sha256(config) %s != ID %s", got, w.alpine.ID)
	}
	if got := h.mustRead("images/" + w.dangling.ID + "/names"); len(got) != 0 {
		t.Errorf("dangling image's names = %q, want empty", got)
	}
	app := string(h.mustRead("images/" + w.app.ID + "/names"))
	if want := "quay.io/org/app:1\nlocalhost/app:v1\nquay.io/org/app@" + w.app.Digest.String() + "\n"; app != want {
		t.Errorf("names in store order = %q, want %q", app, want)
	}
	if got := h.mustRead("images/" + w.lst.ID + "/manifest"); string(got) != string(w.s.manifests[w.lst.ID]) {
		t.Errorf("list manifest = %q", got)
	}
}

func TestPrefixLookup(t *testing.T) {
	w := newWorld()
	// Two images whose IDs share the prefix "fff".
	for _, id := range []string{"fff0" + strings.Repeat("1", 60), "fff1" + strings.Repeat("2", 60)} {
		w.s.put(&storageview.Image{ID: id, Created: time.Unix(1, 0)}, []byte("m"+id), []byte("c"))
	}
	for _, img := range w.s.Index().Images {
		if img.ID[:3] == "fff" && img.ID[3] != '0' && img.ID[3] != '1' {
			t.Fatalf("test needs fff to match exactly two IDs")
		}
	}
	h := newHarness(t, w.s, Options{})
	fullNid, _, full := h.mustLookup("images/" + w.alpine.ID)
	for _, n := range []int{3, 12, 63} {
		nid, _, out, errno := h.lookup("images/" + w.alpine.ID[:n])
		if errno != 0 {
			t.Errorf("prefix of %d: %v", n, errno)
			continue
		}
		if nid != fullNid || out.Attr.Ino != full.Attr.Ino {
			t.Errorf("prefix of %d: node %d ino %d, want the full ID's %d %d", n, nid, out.Attr.Ino, fullNid, full.Attr.Ino)
		}
	}
	if got := h.mustRead("images/" + w.alpine.ID[:5] + "/config"); string(got) != string(w.s.configs[w.alpine.ID]) {
		t.Errorf("config through a prefix = %q", got)
	}
	for _, name := range []string{w.alpine.ID[:2], strings.ToUpper(w.alpine.ID[:8]), "xyz", w.alpine.ID + "0"} {
		if _, _, _, errno := h.lookup("images/" + name); errno != syscall.ENOENT {
			t.Errorf("lookup images/%s: %v, want ENOENT", name, errno)
		}
	}
	before := h.logs.String()
	if _, _, _, errno := h.lookup("images/fff"); errno != syscall.ENOENT {
		t.Errorf("ambiguous prefix: %v, want ENOENT", errno)
	}
	logged := strings.TrimPrefix(h.logs.String(), before)
	if strings.Count(logged, "\n") != 1 || !strings.Contains(logged, "fff0"+strings.Repeat("1", 60)) ||
		!strings.Contains(logged, "fff1"+strings.Repeat("2", 60)) || !strings.Contains(logged, "ambiguous") {
		t.Errorf("ambiguous prefix logged %q, want one line naming both candidates", logged)
	}
	// Prefixes are never listed.
	if names := h.mustReaddir("images"); slices.Contains(names, w.alpine.ID[:12]) || len(names) != 6 {
		t.Errorf("images lists %q after prefix lookups", names)
	}
}

func TestNames(t *testing.T) {
	w := newWorld()
	h := newHarness(t, w.s, Options{})
	if got, want := h.mustReaddir("names"), []string{"docker.io", "localhost", "quay.io"}; !slices.Equal(got, want) {
		t.Errorf("names lists %q, want %q", got, want)
	}
	if got, want := h.mustReaddir("names/docker.io/library"), []string{"alpine:3.19", "alpine:latest"}; !slices.Equal(got, want) {
		t.Errorf("names/docker.io/library lists %q, want %q", got, want)
	}
	if got, want := h.mustReaddir("names/quay.io/org"), []string{"app:1", "app@" + w.app.Digest.String()}; !slices.Equal(got, want) {
		t.Errorf("names/quay.io/org lists %q, want %q", got, want)
	}
	links := map[string]string{
		"names/docker.io/library/alpine:3.19":            "../../../images/" + w.alpine.ID,
		"names/docker.io/library/alpine:latest":          "../../../images/" + w.alpine.ID,
		"names/quay.io/org/app:1":                        "../../../images/" + w.app.ID,
		"names/quay.io/org/app@" + w.app.Digest.String(): "../../../images/" + w.app.ID,
		"names/localhost/app:v1":                         "../../images/" + w.app.ID,
		"names/localhost/multi:1":                        "../../images/" + w.lst.ID,
	}
	for p, want := range links {
		if got := h.mustReadlink(p); got != want {
			t.Errorf("readlink %s = %q, want %q", p, got, want)
		}
		_, _, out := h.mustLookup(p)
		if out.Attr.Mode != linkMode || out.Attr.Size != uint64(len(want)) {
			t.Errorf("%s: mode %o size %d, want %o %d", p, out.Attr.Mode, out.Attr.Size, linkMode, len(want))
		}
	}
	// A repository without a tag is its :latest name, unlisted.
	latestNid, _, latest := h.mustLookup("names/docker.io/library/alpine:latest")
	nid, _, out := h.mustLookup("names/docker.io/library/alpine")
	if nid != latestNid || out.Attr.Ino != latest.Attr.Ino {
		t.Errorf("alpine: node %d ino %d, want alpine:latest's %d %d", nid, out.Attr.Ino, latestNid, latest.Attr.Ino)
	}
	if got := h.mustReadlink("names/docker.io/library/alpine"); got != links["names/docker.io/library/alpine:latest"] {
		t.Errorf("readlink alpine = %q", got)
	}
	if got := h.mustReaddir("names/docker.io/library"); slices.Contains(got, "alpine") {
		t.Errorf("the tagless name is listed: %q", got)
	}
	for _, p := range []string{"names/quay.io/org/app", "names/localhost/app:v2", "names/docker.io/nope", "names/docker.io/library/alpine:3.19/x"} {
		if _, _, _, errno := h.lookup(p); errno == 0 {
			t.Errorf("lookup %s succeeded, want an error", p)
		}
	}
	// Dangling images have no names.
	for p, ent := range walkNames(t, h, "names") {
		if strings.Contains(h.mustReadlink(p), w.dangling.ID) {
			t.Errorf("%s (%v) leads to the dangling image", p, ent)
		}
	}
}

// walkNames returns every symlink below p.
func walkNames(t *testing.T, h *harness, p string) map[string]fuse.DirEntry {
	out := map[string]fuse.DirEntry{}
	names, ents, errno := h.readdir(p)
	if errno != 0 {
		t.Fatalf("readdir %s: %v", p, errno)
	}
	for _, n := range names {
		if ents[n].Mode == syscall.S_IFDIR {
			for k, v := range walkNames(t, h, p+"/"+n) {
				out[k] = v
			}
		} else {
			out[p+"/"+n] = ents[n]
		}
	}
	return out
}

func TestDigests(t *testing.T) {
	w := newWorld()
	extra := digest.FromString("another manifest of app")
	w.s.edit(w.app.ID, func(img *storageview.Image) { img.Digests = append(img.Digests, extra) })
	h := newHarness(t, w.s, Options{})
	want := map[string]string{
		w.alpine.Digest.String():   w.alpine.ID,
		w.app.Digest.String():      w.app.ID,
		extra.String():             w.app.ID,
		w.dangling.Digest.String(): w.dangling.ID,
		w.lst.Digest.String():      w.lst.ID,
	}
	var wantNames []string
	for d := range want {
		wantNames = append(wantNames, d)
	}
	sort.Strings(wantNames)
	if got := h.mustReaddir("digests"); !slices.Equal(got, wantNames) {
		t.Errorf("digests lists %q, want %q", got, wantNames)
	}
	for d, id := range want {
		if got := h.mustReadlink("digests/" + d); got != "../images/"+id {
			t.Errorf("readlink digests/%s = %q, want ../images/%s", d, got, id)
		}
	}
	for _, name := range []string{w.missing.String(), "sha256:abc", "nope"} {
		if _, _, _, errno := h.lookup("digests/" + name); errno != syscall.ENOENT {
			t.Errorf("lookup digests/%s: %v, want ENOENT", name, errno)
		}
	}
}

func TestLayers(t *testing.T) {
	w := newWorld()
	h := newHarness(t, w.s, Options{})
	want := []string{w.base, w.mid, w.other}
	sort.Strings(want)
	if got := h.mustReaddir("layers"); !slices.Equal(got, want) {
		t.Errorf("layers lists %q, want %q", got, want)
	}
	if got := h.mustReaddir("layers/" + w.base); !slices.Equal(got, withOtherLayerEntries([]string{"info.json"}, false)) {
		t.Errorf("base layer lists %q, want [info.json]", got)
	}
	if _, _, _, errno := h.lookup("layers/" + w.base + "/parent"); errno != syscall.ENOENT {
		t.Errorf("base layer's parent: %v, want ENOENT", errno)
	}
	if got := h.mustReaddir("layers/" + w.mid); !slices.Equal(got, withOtherLayerEntries([]string{"info.json", "parent"}, true)) {
		t.Errorf("upper layer lists %q", got)
	}
	if got := h.mustReadlink("layers/" + w.mid + "/parent"); got != "../"+w.base {
		t.Errorf("parent -> %q, want ../%s", got, w.base)
	}
	if got := h.mustRead("layers/" + w.mid + "/info.json"); string(got) != string(w.s.layerInfo[w.mid]) {
		t.Errorf("info.json = %q", got)
	}
	// The image's chain.
	dir := "images/" + w.alpine.ID + "/layers"
	if got := h.mustReaddir(dir); !slices.Equal(got, []string{"000", "001"}) {
		t.Errorf("%s lists %q", dir, got)
	}
	for i, id := range []string{w.base, w.mid} {
		if got := h.mustReadlink(fmt.Sprintf("%s/%03d", dir, i)); got != "../../../layers/"+id {
			t.Errorf("layers/%03d -> %q, want ../../../layers/%s", i, got, id)
		}
	}
	for _, name := range []string{"002", "1", "0001", "-01", "00a"} {
		if _, _, _, errno := h.lookup(dir + "/" + name); errno != syscall.ENOENT {
			t.Errorf("lookup layers/%s: %v, want ENOENT", name, errno)
		}
	}
	// A unique ID prefix is the same directory, never listed.
	fullNid, _, full := h.mustLookup("layers/" + w.base)
	nid, _, out, errno := h.lookup("layers/" + w.base[:12])
	if errno != 0 || nid != fullNid || out.Attr.Ino != full.Attr.Ino {
		t.Errorf("layers/<prefix>: node %d ino %d %v, want the full ID's %d %d", nid, out.Attr.Ino, errno, fullNid, full.Attr.Ino)
	}
	if got := h.mustRead("layers/" + w.mid[:5] + "/info.json"); string(got) != string(w.s.layerInfo[w.mid]) {
		t.Errorf("info.json through a prefix = %q", got)
	}
	for _, name := range []string{w.base[:2], strings.ToUpper(w.base[:8]), w.base + "0"} {
		if _, _, _, errno := h.lookup("layers/" + name); errno != syscall.ENOENT {
			t.Errorf("lookup layers/%s: %v, want ENOENT", name, errno)
		}
	}
	if got := h.mustReaddir("layers"); !slices.Equal(got, want) {
		t.Errorf("layers lists %q after prefix lookups", got)
	}
}

func TestInstances(t *testing.T) {
	w := newWorld()
	h := newHarness(t, w.s, Options{})
	dir := "images/" + w.lst.ID + "/instances"
	want := []string{w.alpine.Digest.String(), w.missing.String(), "platforms"}
	sort.Strings(want)
	if got := h.mustReaddir(dir); !slices.Equal(got, want) {
		t.Errorf("instances lists %q, want %q", got, want)
	}
	if got := h.mustReadlink(dir + "/" + w.alpine.Digest.String()); got != "../../"+w.alpine.ID {
		t.Errorf("local instance -> %q", got)
	}
	if got := h.mustReadlink(dir + "/" + w.missing.String()); got != "../../../digests/"+w.missing.String() {
		t.Errorf("missing instance -> %q", got)
	}
	wantPlatforms := w.alpine.Digest.String() + " linux/amd64\n" + w.missing.String() + " linux/arm64/v8\n"
	if got := h.mustRead(dir + "/platforms"); string(got) != wantPlatforms {
		t.Errorf("platforms = %q, want %q", got, wantPlatforms)
	}
	// The instance arrives: the link follows.
	arrived := w.s.addImage("arm64", nil)
	w.s.edit(arrived.ID, func(img *storageview.Image) { img.Digest, img.Digests = w.missing, []digest.Digest{w.missing} })
	if got := h.mustReadlink(dir + "/" + w.missing.String()); got != "../../"+arrived.ID {
		t.Errorf("arrived instance -> %q, want ../../%s", got, arrived.ID)
	}
	if n := w.s.readCount("instances:" + w.lst.ID); n != 1 {
		t.Errorf("instances read %d times from the store, want once", n)
	}
}

func TestStableIdentity(t *testing.T) {
	w := newWorld()
	h := newHarness(t, w.s, Options{})
	paths := []string{
		"images/" + w.alpine.ID, "images/" + w.alpine.ID + "/manifest", "images/" + w.alpine.ID + "/layers/001",
		"names/docker.io/library/alpine:3.19", "digests/" + w.app.Digest.String(), "layers/" + w.mid + "/parent",
		"images/" + w.lst.ID + "/instances/platforms",
	}
	first := map[string][2]uint64{}
	for _, p := range paths {
		nid, _, out := h.mustLookup(p)
		first[p] = [2]uint64{nid, out.Attr.Ino}
	}
	for _, p := range paths {
		nid, _, out := h.mustLookup(p)
		if got := [2]uint64{nid, out.Attr.Ino}; got != first[p] {
			t.Errorf("%s: second lookup gave node/ino %v, first %v", p, got, first[p])
		}
	}
	// A new mount of the same store numbers everything the same.
	h2 := newHarness(t, w.s, Options{})
	for _, p := range paths {
		_, _, out := h2.mustLookup(p)
		if out.Attr.Ino != first[p][1] {
			t.Errorf("%s: ino %d on a new mount, %d before", p, out.Attr.Ino, first[p][1])
		}
	}
	// An image's number does not depend on anything but its ID.
	if got := imageIno(w.alpine.ID); got != first["images/"+w.alpine.ID][1] || got < firstHashedIno || got >= hashedInoEnd {
		t.Errorf("image ino %d out of the hashed range or not from its ID", got)
	}
}

// TestNoInodeCollisions walks every listed entry of a store with a few
// hundred images: every entry has its own inode number, and the number a
// listing shows is the one a lookup gives.
func TestNoInodeCollisions(t *testing.T) {
	s := newFakeStore()
	var prev string
	for i := range 300 {
		l := s.addLayer(fmt.Sprint(i), prev)
		if i%3 == 0 {
			prev = l
		}
		names := []string{fmt.Sprintf("example.com/r%d/app:%d", i%7, i)}
		if i%5 == 0 {
			names = nil
		}
		s.addImage(fmt.Sprint("img", i), []string{l}, names...)
	}
	h := newHarness(t, s, Options{})
	seen := map[uint64]string{}
	var walk func(p string)
	walk = func(p string) {
		names, ents, errno := h.readdir(p)
		if errno != 0 {
			t.Fatalf("readdir %s: %v", p, errno)
		}
		for _, n := range names {
			cp := strings.TrimPrefix(p+"/"+n, "/")
			if (strings.HasPrefix(cp, "images/") && strings.Count(cp, "/") == 2 && !ownImageEntries[n]) ||
				(strings.HasPrefix(cp, "layers/") && strings.Count(cp, "/") == 2 && !ownLayerEntries[n]) {
				continue // rootfs/, diff/, changes: tested with their own stores
			}
			_, _, out := h.mustLookup(cp)
			if out.Attr.Ino != ents[n].Ino {
				t.Errorf("%s: lookup ino %d, listing %d", cp, out.Attr.Ino, ents[n].Ino)
			}
			if other, dup := seen[out.Attr.Ino]; dup {
				t.Errorf("%s and %s share inode %d", cp, other, out.Attr.Ino)
			}
			seen[out.Attr.Ino] = cp
			if ents[n].Mode == syscall.S_IFDIR {
				walk(cp)
			}
		}
	}
	walk("")
	if len(seen) < 300*8 {
		t.Errorf("walked only %d entries", len(seen))
	}
}

// TestVanishedImage: nodes re-resolve their identity on every operation,
// so an image removed from the store is ENOENT everywhere at once.
func TestVanishedImage(t *testing.T) {
	w := newWorld()
	h := newHarness(t, w.s, Options{})
	dirNid, _, _ := h.mustLookup("images/" + w.alpine.ID)
	manNid, _, _ := h.mustLookup("images/" + w.alpine.ID + "/manifest")
	namesNid, _, _ := h.mustLookup("images/" + w.alpine.ID + "/names")
	linkNid, _, _ := h.mustLookup("names/docker.io/library/alpine:3.19")
	chainNid, _, _ := h.mustLookup("images/" + w.alpine.ID + "/layers/000")
	h.mustRead("images/" + w.alpine.ID + "/manifest") // cached now

	w.s.remove(w.alpine.ID)
	for what, nid := range map[string]uint64{"dir": dirNid, "manifest": manNid, "names": namesNid, "name link": linkNid, "layers/000": chainNid} {
		if _, errno := h.getattr(nid); errno != syscall.ENOENT {
			t.Errorf("getattr of the removed image's %s: %v, want ENOENT", what, errno)
		}
	}
	if _, errno := h.readNode(manNid); errno != syscall.ENOENT {
		t.Errorf("open of the removed image's manifest: %v, want ENOENT", errno)
	}
	if _, st := h.raw.Readlink(nil, &fuse.InHeader{NodeId: linkNid}); st != fuse.Status(syscall.ENOENT) {
		t.Errorf("readlink of the removed name: %v, want ENOENT", st)
	}
	for _, p := range []string{"images/" + w.alpine.ID, "images/" + w.alpine.ID[:8], "names/docker.io/library/alpine:3.19", "names/docker.io", "digests/" + w.alpine.Digest.String()} {
		if _, _, _, errno := h.lookup(p); errno != syscall.ENOENT {
			t.Errorf("lookup %s after removal: %v, want ENOENT", p, errno)
		}
	}
	if got := h.mustReaddir("images"); slices.Contains(got, w.alpine.ID) || len(got) != 3 {
		t.Errorf("images lists %q after removal", got)
	}
	// The instance that was local dangles now.
	if got := h.mustReadlink("images/" + w.lst.ID + "/instances/" + w.alpine.Digest.String()); !strings.HasPrefix(got, "../../../digests/") {
		t.Errorf("instance of a removed image -> %q, want a dangling link", got)
	}
	if strings.TrimSpace(h.logs.String()) != "" {
		t.Errorf("a vanished image is not an error, but logged: %s", h.logs.String())
	}
}

// TestWritesRefused: over a store without a write side (the fake is not a
// Writer) every change anywhere in the tree is EROFS, logged, and changes
// nothing.
func TestWritesRefused(t *testing.T) {
	w := newWorld()
	h := newHarness(t, w.s, Options{})
	dirs := []string{"", "images", "images/" + w.alpine.ID, "images/" + w.alpine.ID + "/layers", "names", "names/docker.io/library",
		"digests", "layers", "layers/" + w.mid, "images/" + w.lst.ID + "/instances"}
	for _, d := range dirs {
		nid, _, _ := h.mustLookup(d)
		hdr := fuse.InHeader{NodeId: nid}
		var eo fuse.EntryOut
		var co fuse.CreateOut
		checks := map[string]fuse.Status{
			"mkdir":   h.raw.Mkdir(nil, &fuse.MkdirIn{InHeader: hdr, Mode: 0o755}, "x", &eo),
			"create":  h.raw.Create(nil, &fuse.CreateIn{InHeader: hdr, Flags: syscall.O_WRONLY, Mode: 0o644}, "x", &co),
			"mknod":   h.raw.Mknod(nil, &fuse.MknodIn{InHeader: hdr, Mode: syscall.S_IFIFO | 0o644}, "x", &eo),
			"symlink": h.raw.Symlink(nil, &hdr, "../images", "x", &eo),
			"unlink":  h.raw.Unlink(nil, &hdr, "x"),
			"rmdir":   h.raw.Rmdir(nil, &hdr, "x"),
			"rename":  h.raw.Rename(nil, &fuse.RenameIn{InHeader: hdr, Newdir: nid}, "a", "b"),
			"link":    h.raw.Link(nil, &fuse.LinkIn{InHeader: hdr, Oldnodeid: nid}, "x", &eo),
		}
		for op, st := range checks {
			if st != fuse.EROFS {
				t.Errorf("%s in /%s: %v, want EROFS", op, d, st)
			}
		}
	}
	files := []string{"df", "images/" + w.alpine.ID + "/manifest", "images/" + w.alpine.ID + "/names",
		"layers/" + w.mid + "/info.json", "names/docker.io/library/alpine:3.19", "images/" + w.alpine.ID}
	for _, p := range files {
		nid, _, _ := h.mustLookup(p)
		hdr := fuse.InHeader{NodeId: nid}
		var ao fuse.AttrOut
		checks := map[string]fuse.Status{
			"setattr":     h.raw.SetAttr(nil, &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: hdr, Valid: fuse.FATTR_MODE, Mode: 0o777}}, &ao),
			"setxattr":    h.raw.SetXAttr(nil, &fuse.SetXAttrIn{InHeader: hdr}, "user.x", []byte("y")),
			"removexattr": h.raw.RemoveXAttr(nil, &hdr, "user.x"),
			"access W_OK": h.raw.Access(nil, &fuse.AccessIn{InHeader: hdr, Mask: 2}),
		}
		if p != "names/docker.io/library/alpine:3.19" && p != "images/"+w.alpine.ID {
			// Opening for writing reaches no node (handleless.go); writing does.
			_, checks["write"] = h.raw.Write(nil, &fuse.WriteIn{InHeader: hdr, Size: 1}, []byte("x"))
		}
		for op, st := range checks {
			if st != fuse.EROFS {
				t.Errorf("%s of /%s: %v, want EROFS", op, p, st)
			}
		}
	}
	if n := strings.Count(h.logs.String(), "EROFS"); n < 50 {
		t.Errorf("%d refusals logged, want one line per refused change:\n%s", n, h.logs.String())
	}
	// Nothing changed.
	if got := h.mustReaddir("names/docker.io/library"); !slices.Equal(got, []string{"alpine:3.19", "alpine:latest"}) {
		t.Errorf("names changed: %q", got)
	}
}

func TestCaching(t *testing.T) {
	w := newWorld()
	h := newHarness(t, w.s, Options{})
	dir := "images/" + w.alpine.ID + "/"
	for range 3 {
		nid, _, _ := h.mustLookup(dir + "manifest")
		h.getattr(nid)
		data, errno := h.read(dir + "manifest")
		if errno != 0 || string(data) != string(w.s.manifests[w.alpine.ID]) {
			t.Fatalf("manifest: %q %v", data, errno)
		}
	}
	if n := w.s.readCount("manifest:" + w.alpine.ID); n != 1 {
		t.Errorf("manifest read %d times from the store, want once", n)
	}
	_, _, out := h.mustLookup(dir + "config")
	if out.AttrTimeout() != DefaultImmutableTimeout || out.EntryTimeout() != DefaultImmutableTimeout {
		t.Errorf("config timeouts %v/%v, want %v", out.EntryTimeout(), out.AttrTimeout(), DefaultImmutableTimeout)
	}
	// Files that change: short attribute timeouts, read afresh.
	for _, p := range []string{dir + "names", dir + "inspect.json", dir + "history", "df", "layers/" + w.mid + "/info.json"} {
		if _, errno := h.read(p); errno != 0 {
			t.Errorf("%s: %v", p, errno)
		}
		_, _, out := h.mustLookup(p)
		if out.AttrTimeout() != DefaultAttrTimeout {
			t.Errorf("%s: attr timeout %v, want %v", p, out.AttrTimeout(), DefaultAttrTimeout)
		}
	}
	w.s.edit(w.alpine.ID, func(img *storageview.Image) { img.Names = append(img.Names, "localhost/new:1") })
	want := "docker.io/library/alpine:latest\ndocker.io/library/alpine:3.19\nlocalhost/new:1\n"
	if got := h.mustRead(dir + "names"); string(got) != want {
		t.Errorf("names after a tag = %q, want %q", got, want)
	}
	_, _, out = h.mustLookup(dir + "names")
	before := out.Attr
	if before.Size != uint64(len(want)) {
		t.Errorf("names size %d after a tag, want %d", before.Size, len(want))
	}
	// New bytes of the same length get a new mtime, for tools that
	// compare size and mtime (rsync).
	w.s.edit(w.alpine.ID, func(img *storageview.Image) { img.Names[len(img.Names)-1] = "localhost/nex:1" })
	_, _, out = h.mustLookup(dir + "names")
	after := out.Attr
	if after.Size != before.Size || !time.Unix(int64(after.Mtime), int64(after.Mtimensec)).After(time.Unix(int64(before.Mtime), int64(before.Mtimensec))) {
		t.Errorf("names rewritten to the same length: size %d→%d, mtime %d.%09d→%d.%09d, want the same size and a later mtime",
			before.Size, after.Size, before.Mtime, before.Mtimensec, after.Mtime, after.Mtimensec)
	}
	if got := h.mustRead(dir + "names"); !strings.Contains(string(got), "localhost/nex:1") {
		t.Errorf("names not read afresh: %q", got)
	}
	w.s.edit(w.alpine.ID, func(img *storageview.Image) { img.Names[len(img.Names)-1] = "localhost/new:1" })
	if got := h.mustRead(dir + "inspect.json"); !strings.Contains(string(got), "localhost/new:1") {
		t.Errorf("inspect.json not read afresh: %s", got)
	}
	if got := h.mustReadlink("names/localhost/new:1"); got != "../../images/"+w.alpine.ID {
		t.Errorf("new name -> %q", got)
	}
}

// TestChangingFilesAreReplaced: a file whose bytes change is a new node
// with each content, as after a rename over it: a reader that has the old
// one reads its bytes to the end, whatever the store says meanwhile, and
// the next lookup finds the new one. An immutable file pulled again (the
// manifest) keeps its node and serves the bytes whose size the kernel was
// last told until it asks again. Either way no read comes out torn (new
// bytes cut at the old size).
func TestChangingFilesAreReplaced(t *testing.T) {
	w := newWorld()
	h := newHarness(t, w.s, Options{})
	dir := "images/" + w.alpine.ID + "/"
	grow := func(name string) {
		w.s.edit(w.alpine.ID, func(img *storageview.Image) { img.Names = append(img.Names, "localhost/a-much-longer-name:"+name) })
		w.s.mu.Lock()
		defer w.s.mu.Unlock()
		w.s.inspect[w.alpine.ID] = append(w.s.inspect[w.alpine.ID], " longer"...)
		w.s.history[w.alpine.ID] = append(w.s.history[w.alpine.ID], " longer"...)
	}
	for _, name := range []string{"names", "inspect.json", "history"} {
		nid, _, out := h.mustLookup(dir + name)
		old := h.mustRead(dir + name)
		grow(name)
		if got, errno := h.readNode(nid); errno != 0 || string(got) != string(old) {
			t.Errorf("%s: the node read before the change: %q (%v), want its %d bytes", name, got, errno, len(old))
		}
		if a, _ := h.getattr(nid); a.Size != out.Attr.Size || a.Ino != out.Attr.Ino {
			t.Errorf("%s: the old node's attributes changed: size %d ino %d, want %d %d", name, a.Size, a.Ino, out.Attr.Size, out.Attr.Ino)
		}
		nid2, _, out2 := h.mustLookup(dir + name)
		got, errno := h.readNode(nid2)
		if nid2 == nid || out2.Attr.Ino == out.Attr.Ino || errno != 0 || uint64(len(got)) != out2.Attr.Size || string(got) == string(old) {
			t.Errorf("%s after the change: node %d ino %d, %d bytes (%v) of size %d; want a new node with the new bytes", name, nid2, out2.Attr.Ino, len(got), errno, out2.Attr.Size)
		}
		if ino := h.readdirIno(dir, name); ino != out2.Attr.Ino {
			t.Errorf("%s: listed with ino %d, looked up as %d", name, ino, out2.Attr.Ino)
		}
	}

	nid, _, _ := h.mustLookup(dir + "manifest")
	old := h.mustRead(dir + "manifest")
	newManifest := []byte(`{"schemaVersion":2,"a":"longer manifest than before"}`)
	w.s.mu.Lock()
	w.s.manifests[w.alpine.ID] = newManifest
	w.s.mu.Unlock()
	w.s.edit(w.alpine.ID, func(img *storageview.Image) { img.Digest = digest.FromBytes(newManifest) })
	if got, errno := h.readNode(nid); errno != 0 || string(got) != string(old) {
		t.Errorf("manifest read before new attributes: %q (%v), want the %d bytes reported", got, errno, len(old))
	}
	if a, _ := h.getattr(nid); a.Size != uint64(len(newManifest)) {
		t.Errorf("manifest size %d after GETATTR, want %d", a.Size, len(newManifest))
	}
	if got, _ := h.readNode(nid); string(got) != string(newManifest) {
		t.Errorf("manifest after GETATTR: %q, want the new bytes", got)
	}

	nid, _, _ = h.mustLookup("images/" + w.app.ID + "/names")
	w.s.remove(w.app.ID)
	if _, errno := h.readNode(nid); errno != syscall.ENOENT {
		t.Errorf("names of a removed image: %v, want ENOENT", errno)
	}
}

// TestVersionSeen: the first content of a file has no time of its own, a
// new one has the time it was seen, the same one keeps it; what is
// recorded for a removed image goes, and nothing of another one.
func TestVersionSeen(t *testing.T) {
	tr := newTree(newFakeStore(), Options{})
	if got := tr.versionSeen("/images/a/names", 1); !got.IsZero() {
		t.Errorf("first content: since %v, want zero", got)
	}
	changed := tr.versionSeen("/images/a/names", 2)
	if changed.IsZero() || !tr.versionSeen("/images/a/names", 2).Equal(changed) {
		t.Errorf("new content: since %v, then %v; want a time, kept", changed, tr.versionSeen("/images/a/names", 2))
	}
	tr.versionSeen("/images/ab/names", 1)
	tr.forgetVersions([]string{"/images/a"})
	if _, ok := tr.versions.seen["/images/a/names"]; ok {
		t.Error("the removed image's content is still recorded")
	}
	if _, ok := tr.versions.seen["/images/ab/names"]; !ok {
		t.Error("another image's content was forgotten with it")
	}
}

// TestManifestChanges: an image pulled again with another manifest keeps
// its ID but changes manifest and digest; the files follow.
func TestManifestChanges(t *testing.T) {
	w := newWorld()
	h := newHarness(t, w.s, Options{})
	dir := "images/" + w.alpine.ID + "/"
	h.mustRead(dir + "manifest")
	h.mustRead(dir + "digest")
	newManifest := []byte(`{"schemaVersion":2,"another":"manifest, longer than the first"}` + "\n")
	w.s.mu.Lock()
	w.s.manifests[w.alpine.ID] = newManifest
	w.s.mu.Unlock()
	w.s.edit(w.alpine.ID, func(img *storageview.Image) { img.Digest = digest.FromBytes(newManifest) })
	data, errno := h.read(dir + "manifest")
	if errno != 0 || string(data) != string(newManifest) {
		t.Fatalf("manifest after re-pull = %q (%v)", data, errno)
	}
	if got := h.mustRead(dir + "digest"); string(got) != digest.FromBytes(newManifest).String()+"\n" {
		t.Errorf("digest after re-pull = %q", got)
	}
	nid, _, _ := h.mustLookup(dir + "manifest")
	if a, _ := h.getattr(nid); a.Size != uint64(len(newManifest)) {
		t.Errorf("manifest size %d, want %d", a.Size, len(newManifest))
	}
}

func TestStoreErrors(t *testing.T) {
	w := newWorld()
	h := newHarness(t, w.s, Options{})
	w.s.fail["history:"+w.alpine.ID] = errors.New("disk on fire")
	w.s.fail["inspect:"+w.alpine.ID] = fmt.Errorf("image went away: %w", storageview.ErrNotFound)
	w.s.fail["config:"+w.app.ID] = storageview.ErrInUse
	if _, _, _, errno := h.lookup("images/" + w.alpine.ID + "/history"); errno != syscall.EIO {
		t.Errorf("store failure: %v, want EIO", errno)
	}
	if l := h.logs.String(); strings.Count(l, "\n") != 1 || !strings.Contains(l, "disk on fire") || !strings.Contains(l, w.alpine.ID+"/history") {
		t.Errorf("EIO logged %q, want one line with the cause and the path", l)
	}
	if _, _, _, errno := h.lookup("images/" + w.alpine.ID + "/inspect.json"); errno != syscall.ENOENT {
		t.Errorf("wrapped ErrNotFound: %v, want ENOENT", errno)
	}
	if _, _, _, errno := h.lookup("images/" + w.app.ID + "/config"); errno != syscall.EBUSY {
		t.Errorf("ErrInUse: %v, want EBUSY", errno)
	}
	if strings.Count(h.logs.String(), "\n") != 1 {
		t.Errorf("only the EIO should be logged: %s", h.logs.String())
	}
}

func TestHashIno(t *testing.T) {
	if hashIno(kindImage, "ab", "c") == hashIno(kindImage, "a", "bc") {
		t.Error("parts are not separated")
	}
	id := hexID("same")
	if hashIno(kindImage, id) == hashIno(kindLayer, id) {
		t.Error("an image and a layer with the same ID share a number")
	}
	for i := range 10000 {
		n := hashIno(kindName, fmt.Sprint(i))
		if n < firstHashedIno || n >= hashedInoEnd {
			t.Fatalf("hashIno = %#x, outside [%#x, %#x)", n, firstHashedIno, hashedInoEnd)
		}
	}
}

// TestLayerLinkNames: the names of one chain have one width, three digits
// or more past 1000 layers, so that they list in chain order.
func TestLayerLinkNames(t *testing.T) {
	for _, n := range []int{1, 5, 1000, 1001, 1003} {
		names := make([]string, n)
		for i := range names {
			names[i] = layerLinkName(i, n)
			if got, ok := parseLayerLinkName(names[i], n); !ok || got != i {
				t.Errorf("chain of %d: %q parses to %d %v, want %d", n, names[i], got, ok, i)
			}
		}
		if !slices.IsSorted(names) || len(names[0]) != max(3, len(strconv.Itoa(n-1))) {
			t.Errorf("chain of %d: names %q … %q are not one width in chain order", n, names[0], names[n-1])
		}
		for _, bad := range []string{"1", "-01", strconv.Itoa(n), "0" + names[n-1]} {
			if _, ok := parseLayerLinkName(bad, n); ok {
				t.Errorf("chain of %d: %q parses", n, bad)
			}
		}
	}
	if got := layerLinkName(2, 1003); got != "0002" {
		t.Errorf("layer 2 of 1003 is %q, want 0002", got)
	}
}
