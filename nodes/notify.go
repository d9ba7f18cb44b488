package nodes

// Telling the kernel what changed in the store. The tree subscribes to the
// store (storageview.View.Subscribe) when names/ is added; after every
// rebuild that changed something — podman in another process, or our own
// write — it invalidates exactly the kernel entries and contents that
// changed, so nothing stale is served until a timeout:
//
//   - NotifyEntry for each name, digest, image or layer ID (and ID prefix
//     the kernel knows) that appeared, disappeared or now leads
//     elsewhere — positive dentries are dropped, negative ones too;
//   - NotifyEntry for names/ directories that appeared or vanished;
//   - NotifyEntry for the files whose content follows the records (an
//     image's names, inspect.json and history, a layer's info.json, df):
//     each content is a node of its own (blobfile.go), and the next
//     lookup finds the new one; NotifyContent for an image's digest and
//     for the instance links of lists whose instance came or went;
//   - NotifyContent for the directories whose listing changed (images/,
//     digests/, layers/, the names/ directories on a changed name's path):
//     the kernel caches every listing (handleless.go), and an entry
//     invalidation only drops the listing when the kernel knew the name.
//
// The notifications are sent from the store's follower goroutine: the
// kernel holds a directory's lock during an operation in it, and a
// notification about that directory sent from inside the operation would
// wait for it forever. The one exception is a write of ours, which sends
// what it changed outside the directories it holds before it returns
// (notifyOwnChange), so that it reads back at once.

import (
	"context"
	"slices"
	"strings"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/imagefs/imagefs/storageview"
)

// OnAdd of names/ (the root's child, added once per mount) starts passing
// the store's changes on to the kernel.
func (d *namesDir) OnAdd(ctx context.Context) {
	if len(d.path) == 0 {
		d.t.startNotify()
	}
}

func (t *tree) startNotify() {
	s, ok := t.store.(Subscriber)
	if !ok {
		return
	}
	ws := t.writes()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.cancel == nil {
		ws.cancel = s.Subscribe(t.onChange)
	}
}

// notifier sends each invalidation once.
type notifier struct {
	entries  map[*fusefs.Inode]map[string]bool
	listings map[*fusefs.Inode]bool
}

func newNotifier() *notifier {
	return &notifier{entries: map[*fusefs.Inode]map[string]bool{}, listings: map[*fusefs.Inode]bool{}}
}

func (n *notifier) entry(dir *fusefs.Inode, name string) {
	if dir == nil || name == "" {
		return
	}
	if n.entries[dir] == nil {
		n.entries[dir] = map[string]bool{}
	}
	if n.entries[dir][name] {
		return
	}
	n.entries[dir][name] = true
	dir.NotifyEntry(name) // ENOENT when the kernel has no such entry: fine
}

// listing drops the kernel's cached listing of dir.
func (n *notifier) listing(dir *fusefs.Inode) {
	if dir == nil || n.listings[dir] {
		return
	}
	n.listings[dir] = true
	content(dir)
}

func content(ino *fusefs.Inode) {
	if ino != nil {
		ino.NotifyContent(0, 0)
	}
}

// onChange invalidates what differs between two indexes.
func (t *tree) onChange(old, new *storageview.Index) {
	root := t.root
	if root == nil {
		return
	}
	t.waitWritesDone()
	// After the wait new may be old news: a write since may have kept a
	// directory its last name left (keepDirs), which new still has.
	t.settlePending(t.index())
	c := storageview.Diff(old, new)
	n := newNotifier()
	t.notifyOutsideNames(n, c, "")

	gone := make([]string, 0, len(c.ImagesRemoved)+len(c.LayersRemoved))
	for _, id := range c.ImagesRemoved {
		gone = append(gone, "/images/"+id)
	}
	for _, id := range c.LayersRemoved {
		gone = append(gone, "/layers/"+id)
	}
	t.forgetVersions(gone)
	if len(c.LayersRemoved) > 0 && t.rootfs != nil {
		t.rootfs.layersGone(c.LayersRemoved)
	}
	if len(c.LayersChanged) > 0 && t.rootfs != nil {
		t.rootfs.layersMoved(n, c.LayersChanged)
	}

	if names := root.GetChild("names"); names != nil {
		cur := t.index() // may be newer than new already
		for _, name := range c.NamesAdded {
			t.notifyName(n, names, old, new, cur, name, false)
		}
		for _, name := range c.NamesRemoved {
			t.notifyName(n, names, old, new, cur, name, false)
		}
		for _, name := range c.NamesMoved {
			t.notifyName(n, names, old, new, cur, name, true)
		}
	}
}

// notifyOutsideNames invalidates what changed outside names/: the entries
// of images/, digests/ and layers/, and the files whose content follows
// the records of images and layers that are still there (an image's
// names, inspect.json, history and digest, a layer's info.json, df).
// held is the top directory ("images", "digests") whose entries are left
// alone because a write operation in it holds its lock ("" for none).
// No file is in such a directory: names/ holds none, and a removed image's
// directory, which `rmdir images/<id>` holds, has no changed files.
func (t *tree) notifyOutsideNames(n *notifier, c *storageview.Changes, held string) {
	root := t.root
	images := root.GetChild("images")
	if images != nil && held != "images" {
		n.idsChanged(images, c.ImagesAdded, c.ImagesRemoved)
	}
	if images != nil && len(c.ImagesChanged) > 0 {
		changed := make(map[string]bool, len(c.ImagesChanged))
		for _, id := range c.ImagesChanged {
			changed[id] = true
		}
		for _, ch := range images.Children() {
			if d, ok := ch.Operations().(*imageDir); ok && changed[d.id] {
				for _, f := range []string{"names", "inspect.json", "history"} {
					n.entry(ch, f)
				}
				// A new manifest (pulled again, podman manifest add):
				// both files keep their nodes, so their bytes go.
				content(ch.GetChild("digest"))
				content(ch.GetChild("manifest"))
				n.instancesChanged(ch.GetChild("instances"))
			}
		}
	}
	changedDigests := digestStrings(slices.Concat(c.DigestsAdded, c.DigestsRemoved, c.DigestsMoved))
	if images != nil && len(changedDigests) > 0 {
		// A list's instance link leads to the image holding the digest,
		// or dangles: the kernel caches its target.
		for _, ch := range images.Children() {
			if inst := ch.GetChild("instances"); inst != nil {
				for name, link := range inst.Children() {
					if slices.Contains(changedDigests, name) {
						content(link)
						n.entry(inst, name) // and its size
					}
				}
			}
		}
	}
	if digests := root.GetChild("digests"); digests != nil && held != "digests" {
		for _, d := range changedDigests {
			n.entry(digests, d)
		}
		if len(c.DigestsAdded)+len(c.DigestsRemoved) > 0 {
			n.listing(digests)
		}
	}
	if layers := root.GetChild("layers"); layers != nil {
		n.idsChanged(layers, c.LayersAdded, c.LayersRemoved)
		for _, id := range c.LayersChanged {
			n.entry(layers.GetChild(id), "info.json")
		}
	}
	n.entry(root, "df")
}

// ownChangeWait bounds how long a write waits for its invalidations. They
// take microseconds; the bound is for a kernel lock held by another
// operation that itself waits for the directory this write holds (a
// rename from an image's directory into names/), which clears once the
// write has returned.
const ownChangeWait = 100 * time.Millisecond

// notifyOwnChange is called by a write of ours in the top directory held
// once the store changed, with the indexes of before and after: what the
// write changed outside names/ (notifyOutsideNames) is right when it
// returns, so that `ln -s … && cat images/<id>/names` reads the new name
// and `rm` of an image's last name is followed by ENOENT under images/.
// names/ directories follow from the store's follower (onChange), as for
// podman's changes.
func (t *tree) notifyOwnChange(old, new *storageview.Index, held string) {
	if t.root == nil || old == new {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.notifyOutsideNames(newNotifier(), storageview.Diff(old, new), held)
	}()
	select {
	case <-done:
	case <-time.After(ownChangeWait):
	}
}

// instancesChanged invalidates what the kernel knows of a list's
// instances/ (nil: nothing), which podman manifest add, remove and
// annotate change: its listing, its links, and platforms.
func (n *notifier) instancesChanged(dir *fusefs.Inode) {
	if dir == nil {
		return
	}
	n.listing(dir)
	for name, ch := range dir.Children() {
		if name == platformsName {
			content(ch)
		} else {
			n.entry(dir, name)
		}
	}
}

// idsChanged invalidates, in dir (images/, layers/), the entries of the
// IDs that came and went, the ID prefixes the kernel looked up whose
// meaning they may change, and the listing.
func (n *notifier) idsChanged(dir *fusefs.Inode, added, removed []string) {
	changed := slices.Concat(added, removed)
	if len(changed) == 0 {
		return
	}
	for _, id := range changed {
		n.entry(dir, id)
	}
	n.listing(dir)
	for name := range dir.Children() {
		if len(name) < 64 && slices.ContainsFunc(changed, func(id string) bool { return strings.HasPrefix(id, name) }) {
			n.entry(dir, name)
		}
	}
}

// notifyName invalidates the entries of one name that appeared, vanished
// or moved: its leaf (and the repository alias of a ":latest" name), and
// each directory on its path that appeared or vanished. Directories mkdir
// made are left alone (names/ lookups do not know them), and so is a
// directory that vanished but is back in the current index cur (an
// invalidation arriving late would only unsettle the entry made since),
// and the entry of a link a write of ours just made for this very name
// (the kernel's entry is already right). The kernel caches link targets
// (CACHE_SYMLINKS): a moved name's link content is invalidated too.
func (t *tree) notifyName(n *notifier, dir *fusefs.Inode, old, new, cur *storageview.Index, name string, moved bool) {
	parts := strings.Split(name, "/")
	for i, comp := range parts[:len(parts)-1] {
		if !moved {
			n.listing(dir)
		}
		sub := parts[:i+1]
		was, is := old.NameDir(sub) != nil, new.NameDir(sub) != nil
		back := !is && cur.NameDir(sub) != nil
		if was != is && !back && !t.isPending(strings.Join(sub, "/")) {
			n.entry(dir, comp)
		}
		if dir = dir.GetChild(comp); dir == nil {
			return // the kernel knows nothing below
		}
	}
	leaf := parts[len(parts)-1]
	if !moved {
		n.listing(dir)
	}
	if ch := dir.GetChild(leaf); ch != nil {
		if moved {
			content(ch)
		} else if nl, ok := ch.Operations().(*nameLink); ok && nl.shows(name) && new.ImageByName(name) != nil {
			return
		}
	}
	n.entry(dir, leaf)
	if repo, ok := strings.CutSuffix(leaf, latestTag); ok {
		n.entry(dir, repo)
	}
}

func digestStrings[D ~string](ds []D) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d)
	}
	return out
}
