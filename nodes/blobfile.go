package nodes

import (
	"context"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/storageview"
)

// blobFile is a read-only regular file whose bytes come from a function:
// an image's manifest, config, names, inspect.json…, a layer's info.json,
// df. Its size is always the length of those bytes, so stat and cat agree.
//
// An immutable file (manifest, config, digest, platforms) is one node for
// as long as it exists; its bytes are read once per version. A file that
// changes (names, inspect.json, history, info.json, df) is one node per
// content: the bytes are read when the node is made and are part of its
// inode number. A change then acts like a rename of a new file over the
// old one: a reader that has the file open reads the bytes it opened to
// the end, and the next lookup finds the new node (the watcher drops the
// kernel's entry, notify.go). The mount has no file handles to hold a
// per-open copy (handleless.go), and the kernel cuts every read at the
// size it was told: new bytes served under an old size come out torn, as
// `cat inspect.json | jq` right after a podman tag showed.
type blobFile struct {
	node
	ino  uint64
	path string // for log lines and versionSeen, "/images/<id>/manifest"
	src  blobSource

	// A changing file's bytes (or the error reading them).
	data []byte
	err  error

	mu      sync.Mutex
	since   time.Time // when these bytes replaced others (zero: the first seen)
	have    bool      // an immutable file's cached holds the bytes last reported, of version
	version string
	cached  []byte
}

// blobSource says where a blobFile's bytes come from.
type blobSource struct {
	// state reports whether the file exists in ix and, if so, its mtime
	// and version. The same version always has the same bytes.
	state func(ix *storageview.Index) (blobState, bool)
	// read returns the bytes.
	read func() ([]byte, error)
	// immutable: the bytes depend only on the version and are read once
	// per version. Otherwise they are read once per node (see blobFile).
	immutable bool
	// versioned: the version of an immutable file can change while it
	// exists (an image's manifest when the image is pulled again with
	// another manifest), so its attributes get short timeouts.
	versioned bool
}

type blobState struct {
	mtime   time.Time
	version string
}

// newBlobFile is the file at path whose identity numbers it ino; a
// changing file's node holds its bytes as they are now.
func newBlobFile(t *tree, ino uint64, path string, src blobSource) *blobFile {
	f := &blobFile{node: node{t: t}, ino: ino, path: path, src: src}
	if !src.immutable {
		f.data, f.err = src.read()
		sum := contentSum(f.data)
		f.ino = hashIno(kindContent, strconv.FormatUint(ino, 16), strconv.FormatUint(sum, 16))
		f.since = t.versionSeen(path, sum)
	}
	return f
}

func contentSum(data []byte) uint64 {
	h := fnv.New64a()
	h.Write(data)
	return h.Sum64()
}

func (f *blobFile) stable() fusefs.StableAttr {
	return stableAttr(syscall.S_IFREG, f.ino)
}

func (f *blobFile) timeouts() (time.Duration, time.Duration) {
	switch {
	case !f.src.immutable: // the entry leads to a new node when the bytes change
		return f.t.entryTimeout, f.t.attrTimeout
	case f.src.versioned: // the entry never changes while its directory exists
		return f.t.immutableTimeout, f.t.attrTimeout
	}
	return f.t.immutableTimeout, f.t.immutableTimeout
}

// attr reports the bytes content returns. Their mtime is the record's, or
// the time they replaced other bytes when that is later: new bytes get a
// new mtime (for the kernel's page cache, which an immutable file's node
// keeps across versions, and for tools comparing size and mtime).
func (f *blobFile) attr(ctx context.Context, ix *storageview.Index, a *fuse.Attr) syscall.Errno {
	data, st, errno := f.content(ctx, ix)
	if errno != 0 {
		return errno
	}
	f.mu.Lock()
	mtime := f.since
	f.mu.Unlock()
	if st.mtime.After(mtime) {
		mtime = st.mtime
	}
	f.t.setAttr(a, f.ino, fileMode, 1, uint64(len(data)), mtime)
	return 0
}

// content returns the file's bytes if it exists in ix: a changing file's
// own; an immutable file's from the cache when its version is the one
// cached, and kept as the ones Read serves.
func (f *blobFile) content(ctx context.Context, ix *storageview.Index) ([]byte, blobState, syscall.Errno) {
	st, ok := f.src.state(ix)
	if !ok {
		return nil, st, syscall.ENOENT
	}
	if !f.src.immutable {
		if f.err != nil {
			return nil, st, f.t.toErrno(ctx, "read", f.path, f.err)
		}
		return f.data, st, 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.have && f.version == st.version {
		return f.cached, st, 0
	}
	data, err := f.src.read()
	if err != nil {
		return nil, st, f.t.toErrno(ctx, "read", f.path, err)
	}
	if f.src.versioned {
		f.since = f.t.versionSeen(f.path, contentSum(data))
	}
	f.have, f.version, f.cached = true, st.version, data
	return data, st, 0
}

var _ = (fusefs.NodeReader)((*blobFile)(nil))

// Read serves the bytes whose size the kernel was last told. For an
// immutable file whose version changed (a manifest pulled again), those
// are the bytes last reported by attr, until the kernel asks for the
// attributes again (after the watcher's invalidation or the timeout).
func (f *blobFile) Read(ctx context.Context, _ fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	data, errno := f.served(ctx)
	if errno != 0 {
		return nil, errno
	}
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= int64(len(data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(data)))
	return fuse.ReadResultData(data[off:end]), 0
}

// served is what Read returns: ENOENT once the file is gone from the
// index, else the bytes described above.
func (f *blobFile) served(ctx context.Context) ([]byte, syscall.Errno) {
	ix := f.t.index()
	if f.src.immutable {
		if _, ok := f.src.state(ix); !ok {
			return nil, syscall.ENOENT
		}
		f.mu.Lock()
		data, have := f.cached, f.have
		f.mu.Unlock()
		if have {
			return data, 0
		}
	}
	data, _, errno := f.content(ctx, ix)
	return data, errno
}

// versions remembers, per file whose content changes, the content last
// seen and since when, so that new bytes come with a new mtime whichever
// node serves them.
type versions struct {
	mu   sync.Mutex
	seen map[string]seenContent // by path
}

type seenContent struct {
	sum   uint64
	since time.Time
}

// versionSeen records sum as the content of path and returns when it
// replaced another: zero for the first content seen.
func (t *tree) versionSeen(path string, sum uint64) time.Time {
	t.versions.mu.Lock()
	defer t.versions.mu.Unlock()
	v, ok := t.versions.seen[path]
	switch {
	case !ok:
		if t.versions.seen == nil {
			t.versions.seen = map[string]seenContent{}
		}
		t.versions.seen[path] = seenContent{sum: sum}
	case v.sum != sum:
		v = seenContent{sum: sum, since: time.Now()}
		t.versions.seen[path] = v
	}
	return v.since
}

// forgetVersions drops what versionSeen recorded for the files below
// these directories (images and layers that are gone).
func (t *tree) forgetVersions(dirs []string) {
	if len(dirs) == 0 {
		return
	}
	t.versions.mu.Lock()
	defer t.versions.mu.Unlock()
	for path := range t.versions.seen {
		for _, d := range dirs {
			if strings.HasPrefix(path, d+"/") {
				delete(t.versions.seen, path)
				break
			}
		}
	}
}
