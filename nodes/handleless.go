package nodes

// A mount without file handles. Nothing in the tree needs per-open state:
// every file's bytes depend only on the node, and every listing on the
// directory. So OPEN and OPENDIR are answered ENOSYS, which the kernel
// takes, for the rest of the connection, as "opens need no message"
// (fc->no_open, fc->no_opendir): it stops sending OPEN, RELEASE, FLUSH,
// OPENDIR and RELEASEDIR, keeps file pages across opens (as with
// FOPEN_KEEP_CACHE) and caches every directory listing (FOPEN_CACHE_DIR).
// A warm find, tar or grep -r then costs imagefs no round trip at all.
//
// Reads then arrive without a handle and go to the node (NodeReader).
// READDIR(PLUS) arrive without one too; they are served here through an
// internal handle of go-fuse's bridge: a dirCursor, kept open while the
// kernel reads on sequentially.
//
// What changes for callers (docs/LAYOUT.md "Caching"): opening a file for
// writing without O_TRUNC is not refused at open(2) but at the first
// write(2) (EROFS either way); data and listings that change (names,
// inspect.json, names/…) are kept fresh by the store watcher's
// invalidations (notify.go), and a file whose bytes change is a new inode
// with each content, since there is no open file to hold a copy
// (blobfile.go).

import (
	"slices"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// maxDirCursors bounds the internal directory handles kept between
// READDIR requests (a listing abandoned half way, as by `ls | head`, is
// closed when it falls off the end).
const maxDirCursors = 64

// NewRawFS is the FUSE file system of the tree rooted at root: go-fuse's
// node bridge, served without file handles. Mount it with fuse.NewServer.
func NewRawFS(root fusefs.InodeEmbedder, opts *fusefs.Options) fuse.RawFileSystem {
	h := &handleless{RawFileSystem: fusefs.NewNodeFS(root, opts)}
	if u, ok := root.(interface{ unmounted() }); ok {
		h.unmounted = u.unmounted
	}
	if v, ok := root.(interface{ listingVersion() any }); ok {
		h.version = v.listingVersion
	}
	return h
}

// Mount is fusefs.Mount for the tree: it mounts NewRawFS(root, opts) at
// dir with MountCapabilities turned off, and serves it.
func Mount(dir string, root fusefs.InodeEmbedder, opts *fusefs.Options) (*fuse.Server, error) {
	mo := opts.MountOptions
	mo.DisabledCapabilities |= MountCapabilities
	srv, err := fuse.NewServer(NewRawFS(root, opts), dir, &mo)
	if err != nil {
		return nil, err
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		_ = srv.Unmount()
		return nil, err
	}
	return srv, nil
}

// MountCapabilities are the FUSE capabilities an imagefs mount turns off
// (fuse.MountOptions.DisabledCapabilities): passthrough needs a handle per
// open, which this mount never has.
const MountCapabilities = fuse.CAP_PASSTHROUGH

type handleless struct {
	fuse.RawFileSystem
	unmounted func() // the root's cleanup when the mount ends, if it has one
	// version, if the root has one, changes whenever a listing may have:
	// a cursor made before serves nobody after (takeCursor).
	version func() any

	mu      sync.Mutex
	cursors []*dirCursor // oldest first
}

// dirCursor is an internal open directory of the bridge, positioned at
// the offset the kernel will ask for next.
type dirCursor struct {
	node, fh, next uint64
	version        any // the root's listing version when it was opened
}

// Open and OpenDir: no handles (see the top of this file).
func (h *handleless) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

func (h *handleless) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

// Flush has nothing to do without handles; ENOSYS stops it for good.
func (h *handleless) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return fuse.ENOSYS
}

// Fsync and FsyncDir have nothing to do either: no byte of the tree is
// ever held back (file data is read-only, and a change through the mount
// is in the store when its request is answered). The kernel takes ENOSYS
// as success, for this and every later fsync(2) of the mount; go-fuse's
// own answer, ENOTSUP, would fail `sync FILE` and every program that
// fsyncs what it opened.
func (h *handleless) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fuse.ENOSYS
}

func (h *handleless) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fuse.ENOSYS
}

func (h *handleless) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return h.readDir(cancel, in, out, h.RawFileSystem.ReadDir)
}

func (h *handleless) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return h.readDir(cancel, in, out, h.RawFileSystem.ReadDirPlus)
}

// readDir serves one READDIR(PLUS) through a cursor at the requested
// offset: the one left there by the previous request, or a new one (the
// bridge seeks it).
func (h *handleless) readDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList,
	read func(<-chan struct{}, *fuse.ReadIn, *fuse.DirEntryList) fuse.Status) fuse.Status {
	if in.Fh != 0 { // a handle of the bridge's own: never sent by a kernel that took ENOSYS
		return read(cancel, in, out)
	}
	var version any
	if h.version != nil {
		version = h.version()
	}
	c := h.takeCursor(in.NodeId, in.Offset, version)
	fresh := c == nil
	if fresh {
		var oo fuse.OpenOut
		if st := h.RawFileSystem.OpenDir(cancel, &fuse.OpenIn{InHeader: in.InHeader, Flags: syscall.O_RDONLY}, &oo); !st.Ok() {
			return st
		}
		c = &dirCursor{node: in.NodeId, fh: oo.Fh, version: version}
	}
	req := *in
	req.Fh = c.fh
	st := read(cancel, &req, out)
	if fresh && in.Offset > 0 && st == fuse.EINVAL {
		// A new listing does not know in.Offset: the cookie of a name
		// removed over an hour ago (dirstream.go), or garbage. Ending
		// the listing there is the least harm.
		st = fuse.OK
	}
	if !st.Ok() || out.Offset == in.Offset { // an error, or the end of the listing
		h.release(c)
		return st
	}
	c.next = out.Offset
	h.putCursor(c)
	return st
}

// takeCursor takes the cursor left at off in node's listing, if the
// listing is still the one it was opened on. Any reader asking for off
// gets it, not only the one that left it there (the kernel does not say
// who asks): after a change, the rest of the old listing would go to a
// reader that started after it. Cursors of older versions are closed; a
// new listing, seeked to off, goes on after the same name (dirstream.go).
func (h *handleless) takeCursor(node, off uint64, version any) *dirCursor {
	h.mu.Lock()
	var stale []*dirCursor
	h.cursors, stale = splitOff(h.cursors, func(c *dirCursor) bool { return c.node == node && c.version != version })
	var found *dirCursor
	if i := slices.IndexFunc(h.cursors, func(c *dirCursor) bool { return c.node == node && c.next == off }); i >= 0 {
		found = h.cursors[i]
		h.cursors = slices.Delete(h.cursors, i, i+1)
	}
	h.mu.Unlock()
	for _, c := range stale {
		h.release(c)
	}
	return found
}

func (h *handleless) putCursor(c *dirCursor) {
	h.mu.Lock()
	h.cursors = append(h.cursors, c)
	var old *dirCursor
	if len(h.cursors) > maxDirCursors {
		old = h.cursors[0]
		h.cursors = h.cursors[1:]
	}
	h.mu.Unlock()
	if old != nil {
		h.release(old)
	}
}

// Forget first closes the cursors of the node the kernel forgets: the
// bridge drops a node with its last kernel reference, handles or not
// (the kernel never forgets a directory it has open, but a cursor
// outlives the listing it was made for), and the node's ReleaseDir, when
// the cursor fell off the end later, then panicked in the bridge and
// failed an innocent READDIR with EIO.
func (h *handleless) Forget(nodeid, nlookup uint64) {
	h.mu.Lock()
	var gone []*dirCursor
	h.cursors, gone = splitOff(h.cursors, func(c *dirCursor) bool { return c.node == nodeid })
	h.mu.Unlock()
	for _, c := range gone {
		h.release(c)
	}
	h.RawFileSystem.Forget(nodeid, nlookup)
}

// splitOff removes from s, in place and keeping the order, the elements
// out reports, and returns what is left and what was taken out.
func splitOff[T any](s []T, out func(T) bool) (kept, taken []T) {
	kept = s[:0]
	for _, x := range s {
		if out(x) {
			taken = append(taken, x)
		} else {
			kept = append(kept, x)
		}
	}
	clear(s[len(kept):]) // no references left behind the new end
	return kept, taken
}

// OnUnmount lets the root close what it keeps open (layer files).
func (h *handleless) OnUnmount() {
	h.RawFileSystem.OnUnmount()
	if h.unmounted != nil {
		h.unmounted()
	}
}

func (h *handleless) release(c *dirCursor) {
	h.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: c.node}, Fh: c.fh})
}

// selinuxXattr is not served: the labels of layer files are the host's
// (container_ro_file_t on an SELinux host), not the image's. ENOTSUP
// rather than ENODATA: ls -l asks for it on every entry, and takes
// ENOTSUP as "no labels on this file system" for the rest of the listing.
const selinuxXattr = "security.selinux"

func (h *handleless) GetXAttr(cancel <-chan struct{}, in *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	if attr == selinuxXattr {
		return 0, fuse.Status(syscall.ENOTSUP)
	}
	return h.RawFileSystem.GetXAttr(cancel, in, attr, dest)
}
