package nodes

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/internal/union"
	"github.com/imagefs/imagefs/storageview"
)

// RootfsTimeout is the kernel entry, attribute and listing cache time of
// everything under rootfs/ and diff/: layers never change, and a removed
// image takes its whole directory away.
const RootfsTimeout = 24 * time.Hour

// Rootfs serves images/<id>/rootfs/, layers/<id>/diff/ and
// layers/<id>/changes for one mount: it builds the union of an image's
// layers straight from their directories on disk (internal/union) and
// shares one bounded listing cache between all images.
type Rootfs struct {
	store Store
	cache *union.Cache
	log   *log.Logger
	owner fuse.Owner

	files backingFiles // layer files kept open between reads

	// lastFileLookup is when the kernel last looked up a file (not a
	// directory) of a rootfs: listings carry file attributes for
	// attrsWindow after that (rootfsListHandle.Lookup).
	lastFileLookup atomic.Int64 // UnixNano

	mu      sync.Mutex
	changes map[string]*changeSet    // what each layer changes, computed once per layer
	mounts  map[string]string        // image ID → fallback mount directory
	trees   map[*rootfsTree]struct{} // trees the kernel knows, for eviction (rootfs_evict.go)
	roots   atomic.Uint64            // trees made roots so far (rootfsTree.gen)

	maxInodes int64        // RootfsOptions.MaxInodes
	live      atomic.Int64 // rootfs/ and diff/ inodes the kernel knows
	evicting  atomic.Bool
}

// layersGone drops what the Rootfs keeps of layers that were removed:
// their changes, the layer files it holds open, and the merged listings
// of the trees on them.
func (r *Rootfs) layersGone(ids []string) {
	r.mu.Lock()
	for _, id := range ids {
		delete(r.changes, id)
	}
	r.mu.Unlock()
	r.files.closeGone()
	r.cache.Forget(ids)
}

// layersMoved moves the trees built on a copy of a changed layer that is
// gone from disk (the graph root's copy of a layer an additional store
// also has, which podman deleted with the writable store's image) to the
// copy that is left, so that processes inside them and files they opened
// go on. A tree that cannot move is dropped from the kernel, and the next
// lookup builds it anew.
func (r *Rootfs) layersMoved(n *notifier, changed []string) {
	ids := make(map[string]bool, len(changed))
	for _, id := range changed {
		ids[id] = true
	}
	var stale []*rootfsTree
	r.mu.Lock()
	for t := range r.trees {
		for i, l := range t.stack.Layers() {
			if ids[l.ID] && !exists(t.stack.LayerPath(i)) {
				stale = append(stale, t)
				break
			}
		}
	}
	r.mu.Unlock()
	for _, t := range stale {
		if err := r.relocate(t); err != nil {
			r.log.Printf("%s of %s: the layer copy it was read from is gone, and %v: built again on the next lookup", t.name, t.key[1:], err)
			t.moved.Store(true)
			n.entry(t.parent, t.name)
		}
	}
}

// relocate points t's stack at where its layers are now.
func (r *Rootfs) relocate(t *rootfsTree) error {
	layers := t.stack.Layers()
	chain, err := r.layerChain(layers[len(layers)-1].ID)
	if err != nil {
		return err
	}
	now := make(map[string]string, len(chain))
	for _, l := range chain {
		now[l.ID] = l.Path
	}
	paths := make([]string, len(layers))
	for i, l := range layers {
		if paths[i] = now[l.ID]; paths[i] == "" {
			return fmt.Errorf("layer %.12s has no copy left", l.ID)
		}
	}
	return t.stack.Relocate(paths)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// RootfsOptions configure a Rootfs.
type RootfsOptions struct {
	// CacheEntries bounds the merged directory listings kept in memory,
	// counted in entries (union.DefaultCacheEntries when 0).
	CacheEntries int
	// MaxInodes bounds the rootfs/ and diff/ entries the kernel is left
	// knowing, each with its server-side state (DefaultMaxInodes when 0;
	// rootfs_evict.go).
	MaxInodes int
	// Log receives refusals, fallbacks and errors; nil is log.Default().
	Log *log.Logger
	// Owner owns the layers' changes files (the user who mounted).
	Owner fuse.Owner
}

// NewRootfs returns the rootfs/diff server of a mount over store.
func NewRootfs(store Store, o RootfsOptions) *Rootfs {
	l := o.Log
	if l == nil {
		l = log.Default()
	}
	if o.MaxInodes <= 0 {
		o.MaxInodes = DefaultMaxInodes
	}
	return &Rootfs{
		store:   store,
		cache:   union.NewCache(o.CacheEntries),
		log:     l,
		owner:   o.Owner,
		changes: make(map[string]*changeSet),
		mounts:  make(map[string]string),
		trees:   make(map[*rootfsTree]struct{}),

		maxInodes: int64(o.MaxInodes),
	}
}

// ImageRootfs returns the rootfs/ directory of image imageID as a child of
// parent (the images/<id>/ node), filling out. Manifest lists have none
// (ENOENT).
func (r *Rootfs) ImageRootfs(ctx context.Context, parent *fusefs.Inode, imageID string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	img := r.store.Index().ImageByID(imageID)
	if img == nil || img.IsList {
		return nil, syscall.ENOENT
	}
	if in, ok, errno := r.knownRoot(parent, "rootfs", out); ok {
		return in, errno
	}
	t, err := r.imageTree(img)
	if errors.Is(err, storageview.ErrNotFound) {
		return nil, syscall.ENOENT
	}
	if err != nil {
		r.log.Printf("rootfs: image %s: %v", rootfsShort(imageID), err)
		return nil, syscall.EIO
	}
	return r.newRoot(ctx, parent, "rootfs", t, out)
}

// knownRoot answers the lookup of tree root name (rootfs, diff) under
// parent when the kernel knows it already.
func (r *Rootfs) knownRoot(parent *fusefs.Inode, name string, out *fuse.EntryOut) (*fusefs.Inode, bool, syscall.Errno) {
	ch := parent.GetChild(name)
	if ch == nil {
		return nil, false, 0
	}
	n, ok := ch.Operations().(*rootfsDir)
	if !ok || n.tree.moved.Load() { // a moved tree is built again (layersMoved)
		return nil, false, 0
	}
	r.track(n.tree) // again, if it was evicted while a process stayed inside
	in, errno := n.entryOut(ch, out)
	return in, true, errno
}

// newRoot makes the root of t the child name of parent.
func (r *Rootfs) newRoot(ctx context.Context, parent *fusefs.Inode, name string, t *rootfsTree, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	t.parent, t.name = parent, name
	t.gen = generation | r.roots.Add(1)<<32
	r.track(t)
	return t.newInode(ctx, parent, t.stack.Root(), out)
}

// imageTree builds the union of img's layers, or serves a read-only mount
// of the image when the union cannot read its layers.
func (r *Rootfs) imageTree(img *storageview.Image) (*rootfsTree, error) {
	dirs, err := r.store.LayerDirs(img.ID)
	if errors.Is(err, storageview.ErrNotFound) {
		return nil, err // the image went away: no fallback
	}
	if err == nil {
		layers := toUnionLayers(dirs)
		var st *union.Stack
		if st, err = union.NewStack(layers, r.cache); err == nil {
			return &rootfsTree{r: r, stack: st, all: layers, key: "i" + img.ID}, nil
		}
	}
	return r.fallbackTree(img.ID, err)
}

func toUnionLayers(dirs []storageview.LayerDir) []union.Layer {
	out := make([]union.Layer, len(dirs))
	for i, d := range dirs {
		out[i] = union.Layer{ID: d.ID, Path: d.Path, Full: d.Full, AUFS: d.AUFSWhiteouts, UserXattr: d.UserXattr, NativeDiff: d.NativeDiff}
	}
	return out
}

// rootfsTree is one browsable tree: an image's rootfs or a layer's diff.
type rootfsTree struct {
	r     *Rootfs
	stack *union.Stack
	all   []union.Layer // the image's layers, base first (the stack may use only the top one)
	key   string        // inode namespace: "i"+image ID, "l"+layer ID
	// noLayerXattrs: user.imagefs.layer* are not answered (diff/, and
	// fallback mounts, where the supplying layer is unknown).
	noLayerXattrs bool
	// gen is the generation of the tree's nodes: the server's (the lower
	// half, all the kernel keeps) and the tree's number. go-fuse finds a
	// known inode by number and generation, so a tree built again while
	// the kernel still holds the old one (moved) gets inodes of its own,
	// not the old tree's back.
	gen   uint64
	moved atomic.Bool // its layer's copy is gone: the next lookup builds it again
	treeState
}

// gone reports whether the tree's image or layer has left the store. The
// merged listings stay cached after that, and a process whose working
// directory is in the tree would otherwise still look names up in them.
func (t *rootfsTree) gone() bool {
	if t.r.store == nil || len(t.key) < 2 {
		return false
	}
	ix, id := t.r.store.Index(), t.key[1:]
	if ix == nil {
		return false
	}
	if t.key[0] == 'l' {
		return ix.Layer(id) == nil
	}
	return ix.ImageByID(id) == nil
}

// rootfsNode is what every node under rootfs/ and diff/ shares: the entry
// it shows and read-only answers for attributes and xattrs.
type rootfsNode struct {
	fusefs.Inode
	tree *rootfsTree
	ent  *union.Entry
}

// rootfsDir is a directory of a rootfs/ or diff/ tree.
type rootfsDir struct{ rootfsNode }

// rootfsFile is a regular file; its content comes from the backing file.
type rootfsFile struct{ rootfsNode }

// rootfsLink is a symlink; its target is returned as stored, never followed.
type rootfsLink struct {
	rootfsNode
	once   sync.Once
	target []byte
	err    error
}

// rootfsSpecial is a device node, fifo or socket: only attributes and
// xattrs; the kernel handles opening them (and the mount is nodev).
type rootfsSpecial struct{ rootfsNode }

// newInode returns the inode of entry e under parent, reusing the child
// already known by that name.
func (t *rootfsTree) newInode(ctx context.Context, parent *fusefs.Inode, e *union.Entry, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	var ops fusefs.InodeEmbedder
	var base *rootfsNode
	switch e.Type {
	case syscall.S_IFDIR:
		n := &rootfsDir{}
		ops, base = n, &n.rootfsNode
	case syscall.S_IFREG:
		n := &rootfsFile{}
		ops, base = n, &n.rootfsNode
	case syscall.S_IFLNK:
		n := &rootfsLink{}
		ops, base = n, &n.rootfsNode
	default:
		n := &rootfsSpecial{}
		ops, base = n, &n.rootfsNode
	}
	base.tree, base.ent = t, e
	if errno := base.fillAttr(&out.Attr); errno != 0 {
		return nil, errno
	}
	setRootfsTimeouts(out)
	in := parent.NewInode(ctx, ops, fusefs.StableAttr{Mode: e.Type, Ino: t.ino(e), Gen: t.gen})
	if in.Operations() == ops { // not a hardlink's inode known already
		t.grew()
	}
	return in, 0
}

// entryOut answers a lookup of node n, known to the kernel as ino.
func (n *rootfsNode) entryOut(ino *fusefs.Inode, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if errno := n.fillAttr(&out.Attr); errno != 0 {
		return nil, errno
	}
	setRootfsTimeouts(out)
	return ino, 0
}

// attrsWindow is how long after a client asked for a file's attributes
// directory listings keep carrying them: long enough to span the walk of
// a directory, short enough that a names-only walk that follows is not
// charged an lstat per file for long.
const attrsWindow = time.Second

// attrsWanted records that a client asked for a file's attributes.
func (r *Rootfs) attrsWanted() { r.lastFileLookup.Store(time.Now().UnixNano()) }

// wantsAttrs reports whether listings should carry file attributes.
func (r *Rootfs) wantsAttrs() bool {
	return time.Now().UnixNano()-r.lastFileLookup.Load() < int64(attrsWindow)
}

func setRootfsTimeouts(out *fuse.EntryOut) {
	out.SetEntryTimeout(RootfsTimeout)
	out.SetAttrTimeout(RootfsTimeout)
}

var _ = (fusefs.NodeLookuper)((*rootfsDir)(nil))

// Lookup answers from the merged listing of the directory (built on first
// visit); names of the listing already known keep their inode. The kernel
// asking for a file's attributes here is what makes listings carry them
// (see rootfsListHandle.Lookup).
func (d *rootfsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if d.tree.gone() {
		return nil, syscall.ENOENT
	}
	e, errno := d.entry(name)
	if errno != 0 {
		return nil, errno
	}
	if !e.IsDir() {
		d.tree.r.attrsWanted()
	}
	return d.child(ctx, e, out)
}

// entry is the merged listing's entry called name.
func (d *rootfsDir) entry(name string) (*union.Entry, syscall.Errno) {
	e, err := d.tree.stack.Lookup(d.ent, name)
	if err != nil {
		return nil, d.tree.errno("lookup", d.ent.Path+"/"+name, err)
	}
	if e == nil {
		return nil, syscall.ENOENT
	}
	return e, 0
}

// child is the inode of entry e of the directory.
func (d *rootfsDir) child(ctx context.Context, e *union.Entry, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if ch := d.GetChild(e.Name); ch != nil {
		if n, ok := ch.Operations().(interface{ node() *rootfsNode }); ok && n.node().ent.Ino == e.Ino {
			return n.node().entryOut(ch, out)
		}
	}
	return d.tree.newInode(ctx, d.EmbeddedInode(), e, out)
}

func (n *rootfsNode) node() *rootfsNode { return n }

var _ = (fusefs.NodeOpendirHandler)((*rootfsDir)(nil))

// OpendirHandle returns the merged listing, sorted by name, and lets the
// kernel cache it (FOPEN_CACHE_DIR): a layer's directories never change.
func (d *rootfsDir) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if d.tree.gone() {
		return nil, 0, syscall.ENOENT
	}
	l, err := d.tree.stack.List(d.ent)
	if err != nil {
		return nil, 0, d.tree.errno("readdir", d.ent.Path, err)
	}
	self := d.StableAttr().Ino
	parent := self
	if _, p := d.Parent(); p != nil {
		parent = p.StableAttr().Ino
	}
	ents := make([]fuse.DirEntry, 0, len(l.Entries)+2)
	ents = append(ents,
		fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: self},
		fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: parent})
	for _, e := range l.Entries {
		ents = append(ents, fuse.DirEntry{Name: e.Name, Mode: e.Type, Ino: d.tree.ino(e)})
	}
	return &rootfsListHandle{dir: d, ents: ents}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// rootfsListHandle streams a fixed directory listing; offsets are positions.
type rootfsListHandle struct {
	dir  *rootfsDir
	mu   sync.Mutex
	ents []fuse.DirEntry
	pos  int
}

var _ = (fusefs.FileLookuper)((*rootfsListHandle)(nil))

// Lookup gives the attributes of each READDIRPLUS entry. Directories
// always get them: walking into them needs them. Other entries get them
// only while clients are asking for file attributes (ls -l, du, tar,
// grep -r: attrsWanted); otherwise the entry goes without (node ID 0,
// which the kernel takes as "look it up when needed"), so a walk of names
// alone (find, ls -R) costs no lstat and no inode per file, as on the
// kernel's overlayfs. The kernel decides the same way for its own
// READDIRPLUS_AUTO, per directory; we cannot see its choice, so the mount
// follows what its clients did last.
func (h *rootfsListHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	e, errno := h.dir.entry(name)
	if errno != 0 {
		return nil, errno
	}
	if !e.IsDir() && !h.dir.tree.r.wantsAttrs() {
		return nil, syscall.EAGAIN // no attributes: the kernel keeps the name only
	}
	return h.dir.child(ctx, e, out)
}

var _ = (fusefs.FileReaddirenter)((*rootfsListHandle)(nil))

func (h *rootfsListHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pos >= len(h.ents) {
		return nil, 0
	}
	e := h.ents[h.pos]
	h.pos++
	e.Off = uint64(h.pos)
	return &e, 0
}

var _ = (fusefs.FileSeekdirer)((*rootfsListHandle)(nil))

func (h *rootfsListHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if off > uint64(len(h.ents)) {
		return syscall.EINVAL
	}
	h.pos = int(off)
	return 0
}

var _ = (fusefs.NodeReadlinker)((*rootfsLink)(nil))

// Readlink returns the target exactly as stored (absolute and dangling
// targets included); it is read once.
func (l *rootfsLink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	l.once.Do(func() {
		var t string
		t, l.err = l.tree.stack.Readlink(l.ent)
		l.target = []byte(t)
	})
	if l.err != nil {
		return nil, l.tree.errno("readlink", l.ent.Path, l.err)
	}
	return l.target, 0
}

// errno maps a union error to an errno, logging what is not a plain
// "gone" (an image removed while browsing).
func (t *rootfsTree) errno(op, path string, err error) syscall.Errno {
	var en syscall.Errno
	if errors.As(err, &en) {
		switch en {
		case syscall.ENOENT, syscall.ENOTDIR:
			return syscall.ENOENT
		case syscall.ENODATA, syscall.EINTR, syscall.ERANGE:
			return en
		}
	}
	t.r.log.Printf("rootfs: %s %q: %v", op, "/"+path, err)
	if en != 0 {
		return en
	}
	return syscall.EIO
}

func rootfsShort(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// rootfsLayerName is a layer's name in images/<id>/layers/.
func rootfsLayerName(i int) string { return fmt.Sprintf("%03d", i) }
