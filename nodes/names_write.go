package nodes

// Changes in names/: ln -s tags, rm untags (or removes the image whose
// last name it was), mv retags, mkdir makes the directories a new name
// needs. See docs/LAYOUT.md, "Writes".

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/storageview"
)

// joinName is the name names/<dir…>/<leaf> spells.
func joinName(dir []string, leaf string) string {
	return strings.Join(append(slices.Clone(dir), leaf), "/")
}

// canonicalName returns the name to store for the path names/<full>: the
// path must spell the name exactly as the store keeps it (only a missing
// tag may be left out: ":latest"), so the new link reads back where it
// was made. podman would store a name without a registry as
// "localhost/<name>" and "docker.io/x" as "docker.io/library/x"; here such
// a path is EINVAL, with the path to use in the log line.
func (t *tree) canonicalName(op, p, full string) (string, syscall.Errno) {
	stored, err := storageview.NormalizeName(full)
	if err != nil {
		return "", t.refuseWrite(op, p, syscall.EINVAL, "%v", err)
	}
	if strings.Contains(stored, "@") {
		return "", t.refuseWrite(op, p, syscall.EINVAL, "a digested name (@sha256:…) cannot be given; only tags can")
	}
	if stored != full && stored != full+latestTag {
		return "", t.refuseWrite(op, p, syscall.EINVAL,
			"the path spells %q, which the store keeps as %q: use names/%s", full, stored, stored)
	}
	return stored, 0
}

// leafName is the stored name a names/ entry stands for: the leaf itself,
// or "<leaf>:latest" for a repository named without a tag (as Lookup
// resolves it) unless a directory has that name; "" when there is none.
func (t *tree) leafName(ix *storageview.Index, dir []string, leaf string) string {
	nd := ix.NameDir(dir)
	if nd == nil {
		return ""
	}
	if _, ok := nd.Leaves[leaf]; ok && nd.Dirs[leaf] == nil {
		return joinName(dir, leaf)
	}
	if !strings.ContainsAny(leaf, ":@") && nd.Dirs[leaf] == nil && !t.isPending(joinName(dir, leaf)) {
		if _, ok := nd.Leaves[leaf+latestTag]; ok {
			return joinName(dir, leaf+latestTag)
		}
	}
	return ""
}

// isNamesDir reports whether names/<dir…>/<leaf> is a directory: in the
// index or made by mkdir.
func (t *tree) isNamesDir(ix *storageview.Index, dir []string, leaf string) bool {
	if nd := ix.NameDir(dir); nd != nil && nd.Dirs[leaf] != nil {
		return true
	}
	return t.isPending(joinName(dir, leaf))
}

// Create (touch, cp of a file), Mknod and Tmpfile are refused: names/ holds only
// the links that are names.
func (d *namesDir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, d.refuseFile("create", name)
}

func (d *namesDir) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.refuseFile("mknod", name)
}

func (d *namesDir) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, d.refuseFile("tmpfile", "")
}

func (d *namesDir) refuseFile(op, name string) syscall.Errno {
	return d.t.refuseWrite(op, namesPath(d.path, name), syscall.EROFS, "names/ holds only symbolic links, one per name: ln -s an image there to tag it")
}

// Symlink (ln -s TARGET names/<path>/<repo>:<tag>) tags the image TARGET
// leads to with the name the link's path spells, as podman tag does, but
// never takes a name from another image: EEXIST, also when the kernel did
// not know of it yet (ln -sfn moves a name: renameTemp). TARGET is a path
// into this mount (images/<id or prefix>, names/<name>, digests/<digest>;
// relative to the link or absolute), or an image ID, ID prefix or name as
// podman tag takes it. EINVAL for a bad or non-canonical name, ENOENT for
// a target that leads to no image.
func (d *namesDir) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	defer d.t.writing()() // the follower waits for it
	const op = "symlink"
	t, p := d.t, namesPath(d.path, name)
	w, errno := t.writer(ctx, op, p)
	if errno != 0 {
		return nil, errno
	}
	temp := isTempName(name)
	var stored string
	if temp {
		if err := w.Writable(); err != nil {
			return nil, t.writeErrno(ctx, op, p, err)
		}
	} else if stored, errno = t.canonicalName(op, p, joinName(d.path, name)); errno != 0 {
		return nil, errno
	}
	// Resolving reads the store: wait for podman (interruptibly) first.
	if err := w.WaitUnlocked(ctx); err != nil {
		return nil, t.writeErrno(ctx, op, p, err)
	}
	img, err := resolveTarget(w, d.path, target)
	if err != nil {
		if parts := pathParts(target); isNotFound(err) && slices.Contains(parts[:max(len(parts)-1, 0)], "layers") {
			err = fmt.Errorf("%w: a layer, not an image: link to images/<id> (a layer's info.json lists the images using it)", err)
		}
		return nil, t.writeErrno(ctx, op, p+" -> "+target, err)
	}
	var ln *nameLink
	if temp {
		// ln -sf: the link under a temporary name, renamed over the
		// name right after (Rename tags then). Kept in memory only.
		full := joinName(d.path, name)
		ws := t.writes()
		ws.mu.Lock()
		ws.temp[full] = img.ID
		ws.mu.Unlock()
		ln = newNameLink(t, len(d.path), hashIno(kindName, full), "", img.ID)
	} else {
		if err := t.change(ctx, w, "names", func() error { return w.Tag(img.ID, stored) }); err != nil {
			return nil, t.writeErrno(ctx, op, p, err)
		}
		ln = newNameLink(t, len(d.path), hashIno(kindName, stored), stored, "")
	}
	ix := t.index()
	t.settlePending(ix)
	ch := d.NewInode(ctx, ln, ln.stable())
	tn, ok := ch.Operations().(treeNode)
	if !ok {
		tn = ln
	}
	if errno := tn.attr(ctx, ix, &out.Attr); errno != 0 {
		// Made, but gone again already (another process untagged it).
		return nil, t.refuseWrite(op, p, errno, "the link was made but is gone again")
	}
	e, a := tn.timeouts()
	out.SetEntryTimeout(e)
	out.SetAttrTimeout(a)
	return ch, 0
}

// isTempName reports whether a link name is one of the temporary names
// programs make a link under before renaming it over the destination:
// GNU ln -sf's ("Cu" and six letters or digits), and any name starting
// with a dot (rsync's ".<name>.XXXXXX"), which no image name can.
func isTempName(name string) bool {
	if strings.HasPrefix(name, ".") {
		return true
	}
	if len(name) != 8 || !strings.HasPrefix(name, "Cu") {
		return false
	}
	for _, c := range name[2:] {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// Unlink (rm names/…/<repo>:<tag>, also @sha256: names) is podman rmi
// <name>: only this name goes when the image has others; the image goes
// with its last name — unless a container uses it: then EBUSY and nothing
// changed.
func (d *namesDir) Unlink(ctx context.Context, name string) syscall.Errno {
	defer d.t.writing()() // the follower waits for it
	const op = "unlink"
	t, p := d.t, namesPath(d.path, name)
	w, errno := t.writer(ctx, op, p)
	if errno != 0 {
		return errno
	}
	if errno := t.refuseMoveOut(ctx, op, p); errno != 0 {
		return errno
	}
	if errno := t.refuseReplace(ctx, op, p); errno != 0 {
		return errno
	}
	if t.dropTemp(joinName(d.path, name)) {
		return 0
	}
	ix := t.index()
	full := t.leafName(ix, d.path, name)
	if full == "" {
		if t.isNamesDir(ix, d.path, name) {
			return t.refuseWrite(op, p, syscall.EISDIR, "a directory of names, not a name")
		}
		return t.refuseWrite(op, p, syscall.ENOENT, "no such name")
	}
	if err := t.change(ctx, w, "names", func() error { return w.RemoveName(full) }); err != nil {
		return t.writeErrno(ctx, op, p, err)
	}
	t.keepDirs(full)
	return 0
}

// Mkdir makes a directory of names/ a new name needs (mkdir -p
// names/quay.io/me): it lives in memory until rmdir, or until a name made
// below it turns it into an ordinary names/ directory (kept when its last
// name goes through the mount: keepDirs). The path must be able to start
// a name: the first level is a registry ("quay.io", "localhost",
// "example.com:5000"). A directory that exists already — the kernel,
// asking, did not know it yet — is simply returned.
func (d *namesDir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	defer d.t.writing()() // the follower waits for it
	const op = "mkdir"
	t, p := d.t, namesPath(d.path, name)
	w, errno := t.writer(ctx, op, p)
	if errno != 0 {
		return nil, errno
	}
	if err := w.Writable(); err != nil {
		return nil, t.writeErrno(ctx, op, p, err)
	}
	if errno := t.refuseDirCopy(ctx, op, p); errno != 0 {
		return nil, errno
	}
	ix := t.index()
	full := joinName(d.path, name)
	if ix.NameDir(d.path) == nil && !t.isPending(strings.Join(d.path, "/")) && len(d.path) > 0 {
		return nil, t.refuseWrite(op, p, syscall.ENOENT, "the parent directory is gone")
	}
	if t.leafName(ix, d.path, name) != "" {
		return nil, t.refuseWrite(op, p, syscall.EEXIST, "a name, not a directory")
	}
	// The kernel asks only when it believes the directory absent. If the
	// store has it after all (podman just made a name below it and the
	// kernel's negative entry is not invalidated yet) or mkdir made it
	// before, the directory is there now: success, as if mkdir came first.
	if !t.isNamesDir(ix, d.path, name) {
		// A name below the directory must be able to read back where it is made.
		probe := full + "/x/y"
		if stored, err := storageview.NormalizeName(probe); err != nil || stored != probe+latestTag {
			why := "not a valid part of an image name"
			if err == nil {
				why = "names below it would be stored as " + strings.TrimSuffix(stored, "/x/y"+latestTag) + "/…; the first level must be a registry (quay.io, localhost, example.com:5000)"
			}
			return nil, t.refuseWrite(op, p, syscall.EINVAL, "%s", why)
		}
		ws := t.writes()
		ws.mu.Lock()
		ws.pending[full] = true
		ws.mu.Unlock()
	}
	nd := newPendingNameDir(t, append(slices.Clone(d.path), name))
	ch := d.NewInode(ctx, nd, nd.stable())
	tn, ok := ch.Operations().(treeNode)
	if !ok {
		tn = nd
	}
	if errno := tn.attr(ctx, ix, &out.Attr); errno != 0 {
		return nil, errno
	}
	e, a := tn.timeouts()
	out.SetEntryTimeout(e)
	out.SetAttrTimeout(a)
	return ch, 0
}

// Rmdir removes a directory no name uses (mkdir made it, or its last name
// went through the mount: keepDirs). A directory
// holding names is ENOTEMPTY: names go one by one (rm), never a whole
// repository at once.
func (d *namesDir) Rmdir(ctx context.Context, name string) syscall.Errno {
	defer d.t.writing()() // the follower waits for it
	const op = "rmdir"
	t, p := d.t, namesPath(d.path, name)
	if _, errno := t.writer(ctx, op, p); errno != 0 {
		return errno
	}
	if errno := t.refuseDirCopy(ctx, op, p); errno != 0 {
		return errno
	}
	ix := t.index()
	full := joinName(d.path, name)
	if nd := ix.NameDir(append(slices.Clone(d.path), name)); nd != nil {
		return t.refuseWrite(op, p, syscall.ENOTEMPTY, "holds names; remove them one by one")
	}
	if !t.isPending(full) {
		if t.leafName(ix, d.path, name) != "" {
			return t.refuseWrite(op, p, syscall.ENOTDIR, "a name, not a directory")
		}
		return t.refuseWrite(op, p, syscall.ENOENT, "no such directory")
	}
	if len(t.pendingChildren(full)) > 0 {
		return t.refuseWrite(op, p, syscall.ENOTEMPTY, "holds directories")
	}
	ws := t.writes()
	ws.mu.Lock()
	delete(ws.pending, full)
	ws.mu.Unlock()
	return 0
}

// namesDirNode is a directory of names/ as a rename's destination.
type namesDirNode interface{ dirPath() []string }

func (d *namesDir) dirPath() []string { return d.path }

// Rename (mv names/a:1 names/b:2) retags: the image holding the old name
// gets the new one (added after its names), then loses the old. EEXIST
// when another image holds the new name (mv never takes a name from
// another image; ln -s does); EXDEV out of names/ and for directories
// (their names may belong to many images: one change per image could stop
// half-way).
func (d *namesDir) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	defer d.t.writing()() // the follower waits for it
	const op = "rename"
	t, p := d.t, namesPath(d.path, name)
	w, errno := t.writer(ctx, op, p)
	if errno != 0 {
		return errno
	}
	np, ok := newParent.(namesDirNode)
	if !ok {
		return t.refuseWrite(op, p, syscall.EXDEV, "a name can only move within names/")
	}
	newP := namesPath(np.dirPath(), newName)
	if flags&fusefs.RENAME_EXCHANGE != 0 {
		return t.refuseWrite(op, p+" -> "+newP, syscall.EINVAL, "names cannot be exchanged")
	}
	ix := t.index()
	if id, ok := t.tempTarget(joinName(d.path, name)); ok {
		return d.renameTemp(ctx, w, op, p, id, name, np, newName, newP)
	}
	old := t.leafName(ix, d.path, name)
	if old == "" {
		if t.isNamesDir(ix, d.path, name) {
			return t.refuseWrite(op, p, syscall.EXDEV, "directories of names do not move at once; move the names in it")
		}
		return t.refuseWrite(op, p, syscall.ENOENT, "no such name")
	}
	if t.isNamesDir(ix, np.dirPath(), newName) {
		return t.refuseWrite(op, newP, syscall.EISDIR, "a directory of names")
	}
	stored, errno := t.canonicalName(op, newP, joinName(np.dirPath(), newName))
	if errno != 0 {
		return errno
	}
	if err := t.change(ctx, w, "names", func() error { return w.Retag(old, stored) }); err != nil {
		return t.writeErrno(ctx, op, p+" -> "+newP, err)
	}
	t.keepDirs(old)
	t.settlePending(t.index())
	d.moved(name, stored, len(np.dirPath()))
	return 0
}

// renameTemp ends ln -sf: the temporary link becomes the name, as podman
// tag makes it — a name another image holds moves to the link's image.
func (d *namesDir) renameTemp(ctx context.Context, w Writer, op, p, id, name string, np namesDirNode, newName, newP string) syscall.Errno {
	t := d.t
	if t.isNamesDir(t.index(), np.dirPath(), newName) {
		return t.refuseWrite(op, newP, syscall.EISDIR, "a directory of names")
	}
	stored, errno := t.canonicalName(op, newP, joinName(np.dirPath(), newName))
	if errno != 0 {
		return errno
	}
	if err := t.change(ctx, w, "names", func() error { return w.TakeName(id, stored) }); err != nil {
		return t.writeErrno(ctx, op, p+" -> "+newP, err)
	}
	t.dropTemp(joinName(d.path, name))
	t.settlePending(t.index())
	d.moved(name, stored, len(np.dirPath()))
	return 0
}

// moved makes the node the kernel keeps for a renamed link show its new
// name. The kernel moves its entry to the new name with the same node; a
// link node of ours follows, one of the read-side tree's is replaced
// shortly after by the invalidation of the new name (notify.go).
func (d *namesDir) moved(oldLeaf, stored string, depth int) {
	if ch := d.GetChild(oldLeaf); ch != nil {
		if nl, ok := ch.Operations().(*nameLink); ok {
			nl.moveTo(stored, depth)
		}
	}
}

// tempTarget returns the image a temporary link (ln -sf) leads to.
func (t *tree) tempTarget(full string) (string, bool) {
	ws := t.writes()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	id, ok := ws.temp[full]
	return id, ok
}

// dropTemp forgets a temporary link; false if there was none.
func (t *tree) dropTemp(full string) bool {
	ws := t.writes()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	_, ok := ws.temp[full]
	delete(ws.temp, full)
	return ok
}

// nameLink is a names/ link: a name the store
// holds, or a temporary link of ln -sf leading to an image by ID. It is
// a symlink whose target follows a rename (moveTo).
type nameLink struct {
	symlink

	mu     sync.Mutex
	name   string // the stored name shown; "" for a temporary link
	imgID  string // a temporary link's image
	depth  int    // directory levels below names/, for the relative target
	isTemp bool
}

func newNameLink(t *tree, depth int, ino uint64, name, imgID string) *nameLink {
	l := &nameLink{name: name, imgID: imgID, depth: depth, isTemp: name == ""}
	l.symlink = symlink{node: node{t: t}, ino: ino, path: "/names/" + name, resolve: l.target}
	return l
}

func (l *nameLink) moveTo(name string, depth int) {
	l.mu.Lock()
	l.name, l.imgID, l.depth, l.isTemp = name, "", depth, false
	l.mu.Unlock()
}

// shows reports whether the link shows this stored name.
func (l *nameLink) shows(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.isTemp && l.name == name
}

// timeouts: a temporary link is only found through the entry the kernel
// got from Symlink, which must stay until ln renames it.
func (l *nameLink) timeouts() (time.Duration, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.isTemp {
		return l.t.immutableTimeout, l.t.attrTimeout
	}
	return l.t.entryTimeout, l.t.attrTimeout
}

// target is the link's target in ix: ../…/images/<id>.
func (l *nameLink) target(ix *storageview.Index) (string, time.Time, bool) {
	l.mu.Lock()
	name, id, depth := l.name, l.imgID, l.depth
	l.mu.Unlock()
	var img *storageview.Image
	if name != "" {
		img = ix.ImageByName(name)
	} else {
		img = ix.ImageByID(id)
	}
	if img == nil {
		return "", time.Time{}, false
	}
	return strings.Repeat("../", depth+1) + "images/" + img.ID, l.t.timeOr(ix, img.Created), true
}

// resolveTarget finds the image a symlink target made in names/<dir…>
// leads to (see targetRefs).
func resolveTarget(w Writer, dir []string, target string) (*storageview.Image, error) {
	var last error = storageview.ErrNotFound
	for _, ref := range targetRefs(dir, target) {
		img, err := w.ResolveImage(ref)
		if err == nil {
			return img, nil
		}
		last = err
		if !isNotFound(err) {
			break // ambiguous, or the store failed
		}
	}
	return nil, last
}

func isNotFound(err error) bool { return errors.Is(err, storageview.ErrNotFound) }

// targetRefs lists what a symlink target may name, best first:
//   - a path relative to the link's directory names/<dir…> that stays in
//     the mount: images/<x> → the ID or prefix x, digests/<d> → d,
//     names/<n…> → the name n (":latest" when untagged);
//   - any path (absolute, or leaving the mount) ending in images/<x> or
//     digests/<d>, or holding names/<n…> (the mount point is not known
//     here, so an absolute path is taken by these components);
//   - the target itself: an image ID, ID prefix, sha256: digest or name,
//     as podman tag takes its source.
func targetRefs(dir []string, target string) []string {
	var refs []string
	add := func(r string) {
		if r != "" && !slices.Contains(refs, r) {
			refs = append(refs, r)
		}
	}
	parts := pathParts(target)
	if !strings.HasPrefix(target, "/") {
		abs := append([]string{"names"}, dir...)
		inside := true
		for _, c := range parts {
			if c == ".." {
				if len(abs) == 0 {
					inside = false
					break
				}
				abs = abs[:len(abs)-1]
				continue
			}
			abs = append(abs, c)
		}
		if inside {
			add(mountRef(abs))
		}
	}
	if n := len(parts); n >= 2 && (parts[n-2] == "images" || parts[n-2] == "digests") {
		add(parts[n-1])
	}
	for i := len(parts) - 2; i >= 0; i-- {
		if parts[i] == "names" {
			add(strings.Join(parts[i+1:], "/"))
		}
	}
	if !strings.HasPrefix(target, "/") && !strings.HasPrefix(target, ".") && !slices.Contains(parts, "..") {
		add(strings.TrimSuffix(target, "/"))
	}
	return refs
}

// mountRef is the reference a path from the mount's root names.
func mountRef(abs []string) string {
	if len(abs) < 2 {
		return ""
	}
	switch abs[0] {
	case "images", "digests":
		if len(abs) == 2 {
			return abs[1]
		}
	case "names":
		return strings.Join(abs[1:], "/")
	}
	return ""
}

// pathParts splits a path into its components, without empty and "."
// ones.
func pathParts(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

// newPendingNameDir is the node of a names/ directory mkdir made (or a
// write kept, keepDirs): a namesDir, which finds it in the pending set
// while the index does not have it.
func newPendingNameDir(t *tree, path []string) *namesDir {
	return &namesDir{dirNode: dirNode{node: node{t: t}}, path: path}
}

// lookupPending finds a directory mkdir made below d.
func (d *namesDir) lookupPending(ctx context.Context, ix *storageview.Index, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if !d.t.isPending(joinName(d.path, name)) {
		return nil, syscall.ENOENT
	}
	return lookupChild(ctx, d.EmbeddedInode(), name, ix, newPendingNameDir(d.t, append(slices.Clone(d.path), name)), out)
}

// entries are the sorted listing of names/<d.path> given its index
// directory (nil when the index has none), with the directories mkdir made.
func (d *namesDir) entries(nd *storageview.NameDir) []fuse.DirEntry {
	prefix := d.pathString()
	if prefix != "" {
		prefix += "/"
	}
	var ents []fuse.DirEntry
	seen := map[string]bool{}
	if nd != nil {
		for name := range nd.Dirs {
			seen[name] = true
			ents = append(ents, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: hashIno(kindNameDir, prefix+name)})
		}
		for name := range nd.Leaves {
			if nd.Dirs[name] == nil {
				ents = append(ents, fuse.DirEntry{Name: name, Mode: syscall.S_IFLNK, Ino: hashIno(kindName, prefix+name)})
			}
		}
	}
	for _, name := range d.t.pendingChildren(d.pathString()) {
		if !seen[name] {
			ents = append(ents, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: hashIno(kindNameDir, prefix+name)})
		}
	}
	sortEntries(ents)
	return ents
}
