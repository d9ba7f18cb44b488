package nodes

import (
	"context"
	"hash/fnv"
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
type blobFile struct {
	node
	ino  uint64
	path string // for log lines, "images/<id>/manifest"
	src  blobSource

	mu      sync.Mutex
	have    bool   // cached holds the bytes of version
	version string // see blobSource.state
	cached  []byte

	sum       uint64    // hash of the bytes last reported
	changedAt time.Time // when they last differed from the ones before
}

// blobSource says where a blobFile's bytes come from.
type blobSource struct {
	// state reports whether the file exists in ix and, if so, its mtime
	// and version. The same version always has the same bytes.
	state func(ix *storageview.Index) (blobState, bool)
	// read returns the bytes.
	read func() ([]byte, error)
	// immutable: the bytes depend only on the version and are read once
	// per version. Otherwise they are read again for every Getattr and
	// Read.
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

func newBlobFile(t *tree, ino uint64, path string, src blobSource) *blobFile {
	return &blobFile{node: node{t: t}, ino: ino, path: path, src: src}
}

func (f *blobFile) stable() fusefs.StableAttr {
	return fusefs.StableAttr{Mode: syscall.S_IFREG, Ino: f.ino}
}

func (f *blobFile) timeouts() (time.Duration, time.Duration) {
	if f.src.immutable && !f.src.versioned {
		return f.t.immutableTimeout, f.t.immutableTimeout
	}
	// The entry itself never changes while its directory exists.
	return f.t.immutableTimeout, f.t.attrTimeout
}

func (f *blobFile) attr(ctx context.Context, ix *storageview.Index, a *fuse.Attr) syscall.Errno {
	data, st, errno := f.content(ctx, ix)
	if errno != 0 {
		return errno
	}
	setAttr(a, f.ino, fileMode, 1, uint64(len(data)), f.mtime(data, st.mtime))
	return 0
}

// mtime is the mtime to report for data: the record's, or the time the
// bytes were last seen to change when that is later. The kernel keeps a
// file's pages across opens and drops them when it learns of a new size
// or mtime, so new bytes of the same length must come with a new mtime.
func (f *blobFile) mtime(data []byte, recorded time.Time) time.Time {
	h := fnv.New64a()
	h.Write(data)
	sum := h.Sum64()
	f.mu.Lock()
	defer f.mu.Unlock()
	if sum != f.sum {
		if f.sum != 0 {
			f.changedAt = time.Now()
		}
		f.sum = sum
	}
	if f.changedAt.After(recorded) {
		return f.changedAt
	}
	return recorded
}

// content returns the bytes the file has in ix, from the cache when the
// file is immutable and its version is the one cached.
func (f *blobFile) content(ctx context.Context, ix *storageview.Index) ([]byte, blobState, syscall.Errno) {
	st, ok := f.src.state(ix)
	if !ok {
		return nil, st, syscall.ENOENT
	}
	if !f.src.immutable {
		data, err := f.src.read()
		if err != nil {
			return nil, st, f.t.toErrno(ctx, "read", f.path, err)
		}
		return data, st, 0
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
	f.have, f.version, f.cached = true, st.version, data
	return data, st, 0
}

var _ = (fusefs.NodeReader)((*blobFile)(nil))

// Read serves the current bytes. There is no open snapshot (handleless.go):
// the kernel keeps the pages until the watcher invalidates them (notify.go)
// or the size or mtime it is told changes.
func (f *blobFile) Read(ctx context.Context, _ fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	data, _, errno := f.content(ctx, f.t.index())
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
