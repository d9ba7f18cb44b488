package nodes

import (
	"context"
	"log"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/storageview"
)

// Modes of the read-side tree.
const (
	dirMode = syscall.S_IFDIR | 0o555 // dr-xr-xr-x
	// The directories whose entries writes add and remove (names/…,
	// images/, digests/), when the store may be changed: the kernel
	// checks the owner's w bit before it passes a change on.
	changeableDirMode = syscall.S_IFDIR | 0o755 // drwxr-xr-x
	fileMode          = syscall.S_IFREG | 0o444 // -r--r--r--
	linkMode          = syscall.S_IFLNK | 0o777 // lrwxrwxrwx
)

// Default kernel cache times (Options).
const (
	DefaultEntryTimeout     = time.Second
	DefaultAttrTimeout      = time.Second
	DefaultImmutableTimeout = time.Hour
)

// Options configure the tree of one mount.
type Options struct {
	// Log gets one line per refused operation and per internal error
	// (with the cause of the EIO). Nil is log.Default().
	Log *log.Logger
	// Owner is the user who mounted: the tree is theirs, and only they
	// and root may change it. Nil is this process's user.
	Owner *fuse.Owner
	// EntryTimeout is how long the kernel may cache names in directories
	// that change (images/, names/, digests/, layers/, an image's own
	// entry); DefaultEntryTimeout when 0.
	EntryTimeout time.Duration
	// AttrTimeout is how long the kernel may cache attributes that can
	// change (names, inspect.json, df…); DefaultAttrTimeout when 0.
	AttrTimeout time.Duration
	// ImmutableTimeout is the kernel cache time of entries and attributes
	// that never change while their image or layer exists (config, an
	// image's layers/); DefaultImmutableTimeout when 0.
	ImmutableTimeout time.Duration
	// RootfsCacheEntries bounds the merged rootfs/ directory listings kept
	// in memory, counted in entries (union.DefaultCacheEntries when 0).
	RootfsCacheEntries int
}

// tree is the state shared by every node of one mount.
type tree struct {
	store Store
	log   *log.Logger
	owner fuse.Owner // of every entry outside rootfs/ and diff/

	// changeable: the store may be changed through the tree.
	changeable bool

	entryTimeout, attrTimeout, immutableTimeout time.Duration

	mounted time.Time // mtime of fixed directories while the store is empty

	// The fixed directories, persistent for the life of the mount, for
	// the NotifyEntry/NotifyDelete calls of write operations.
	root, images, names, digests, layers *fusefs.Inode

	rootfs *Rootfs // images/<id>/rootfs/, layers/<id>/diff/ and changes

	newestMu sync.Mutex
	newestIx *storageview.Index
	newest   time.Time

	versions versions // of the files whose content changes (blobfile.go)
}

func newTree(store Store, o Options) *tree {
	t := &tree{
		store:            store,
		log:              o.Log,
		entryTimeout:     o.EntryTimeout,
		attrTimeout:      o.AttrTimeout,
		immutableTimeout: o.ImmutableTimeout,
		mounted:          time.Now(),
		owner:            fuse.Owner{Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid())},
	}
	if o.Owner != nil {
		t.owner = *o.Owner
	}
	if w, ok := store.(Writer); ok {
		t.changeable = w.Writable() == nil
	}
	if t.log == nil {
		t.log = log.Default()
	}
	if t.entryTimeout == 0 {
		t.entryTimeout = DefaultEntryTimeout
	}
	if t.attrTimeout == 0 {
		t.attrTimeout = DefaultAttrTimeout
	}
	if t.immutableTimeout == 0 {
		t.immutableTimeout = DefaultImmutableTimeout
	}
	t.rootfs = NewRootfs(store, RootfsOptions{Log: t.log, CacheEntries: o.RootfsCacheEntries, Owner: t.owner})
	return t
}

// index is the store's current snapshot (rebuilt by the store when it
// changed).
func (t *tree) index() *storageview.Index { return t.store.Index() }

// fixedTime is the mtime of the fixed directories and of df: the creation
// time of the newest image, or the mount time for an empty store.
func (t *tree) fixedTime(ix *storageview.Index) time.Time {
	t.newestMu.Lock()
	defer t.newestMu.Unlock()
	if t.newestIx == ix {
		return t.newest
	}
	newest := time.Time{}
	for _, img := range ix.Images {
		if img.Created.After(newest) {
			newest = img.Created
		}
	}
	if newest.IsZero() {
		newest = t.mounted
	}
	t.newestIx, t.newest = ix, newest
	return newest
}

// timeOr is tm, or the fixed directories' time when the store does not
// know it.
func (t *tree) timeOr(ix *storageview.Index, tm time.Time) time.Time {
	if tm.IsZero() || tm.Unix() < 0 {
		return t.fixedTime(ix)
	}
	return tm
}

// changeableDir is the mode of a directory whose entries writes change.
func (t *tree) changeableDir() uint32 {
	if t.changeable {
		return changeableDirMode
	}
	return dirMode
}

// setAttr fills the attributes every node kind shares.
func (t *tree) setAttr(a *fuse.Attr, ino uint64, mode uint32, nlink uint32, size uint64, mtime time.Time) {
	a.Owner = t.owner
	a.Ino = ino
	a.Mode = mode
	a.Nlink = nlink
	a.Size = size
	a.Blksize = 4096
	a.Blocks = (size + 511) / 512
	a.SetTimes(&mtime, &mtime, &mtime)
}

// treeNode is what every node of the read-side tree can say about itself.
type treeNode interface {
	fusefs.InodeEmbedder
	// stable is the node's identity: file type and inode number.
	stable() fusefs.StableAttr
	// attr fills a from ix, or returns ENOENT when the node's image, name
	// or layer is gone from it.
	attr(ctx context.Context, ix *storageview.Index, a *fuse.Attr) syscall.Errno
	// timeouts are the kernel's entry and attribute cache times for it.
	timeouts() (entry, attr time.Duration)
}

// node is embedded by every node type of the read-side tree: the inode,
// the mount's shared state, and Getattr from the node's own attr.
type node struct {
	fusefs.Inode
	t *tree
}

// Getattr answers from the current index: ENOENT once the node's image,
// name or layer is gone, never attributes of something removed.
func (n *node) Getattr(ctx context.Context, f fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	tn := n.Operations().(treeNode)
	if errno := tn.attr(ctx, n.t.index(), &out.Attr); errno != 0 {
		return errno
	}
	_, at := tn.timeouts()
	out.SetTimeout(at)
	return 0
}

// lookupChild is the one way the tree answers a Lookup once the index
// says what the child is (n, a fresh node holding its identity): the child
// already known under that name when it has the same identity, else the
// node known under that identity elsewhere (NewInode returns it), else n.
// out gets the attributes and cache times of the node actually used.
func lookupChild(ctx context.Context, parent *fusefs.Inode, name string, ix *storageview.Index, n treeNode, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	sa := n.stable()
	ch := parent.GetChild(name)
	if ch == nil || ch.StableAttr() != sa {
		ch = parent.NewInode(ctx, n, sa)
	}
	tn, ok := ch.Operations().(treeNode)
	if !ok { // a node of another kind under the same number: never expected
		tn = n
	}
	if errno := tn.attr(ctx, ix, &out.Attr); errno != 0 {
		return nil, errno
	}
	e, a := tn.timeouts()
	out.SetEntryTimeout(e)
	out.SetAttrTimeout(a)
	return ch, 0
}

// sortEntries sorts a listing by name.
func sortEntries(ents []fuse.DirEntry) {
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
}
