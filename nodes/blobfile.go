package nodes

import (
	"context"
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
	changed bool // an immutable file's version changed under this node
}

// blobSource says where a blobFile's bytes come from.
type blobSource struct {
	// state reports whether the file exists in ix and, if so, its mtime
	// and version. The same version always has the same bytes.
	state func(ix *storageview.Index) (blobState, bool)
	// read returns the bytes.
	read func() ([]byte, error)
	// immutable: the bytes depend only on the version. They are read once
	// per version and the kernel keeps them (FOPEN_KEEP_CACHE). Otherwise
	// the bytes are read again for every Getattr and Open and served with
	// FOPEN_DIRECT_IO, so a reader never sees stale page-cache bytes.
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
	setAttr(a, f.ino, fileMode, 1, uint64(len(data)), st.mtime)
	return 0
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
	if f.have {
		f.changed = true
	}
	f.have, f.version, f.cached = true, st.version, data
	return data, st, 0
}

// Open snapshots the bytes into the handle, so one open file reads one
// consistent version. Opening for writing is refused (EROFS).
func (f *blobFile) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if writeFlags(flags) {
		return nil, 0, f.refuse("open for writing", "")
	}
	data, _, errno := f.content(ctx, f.t.index())
	if errno != 0 {
		return nil, 0, errno
	}
	f.mu.Lock()
	keep := f.src.immutable && !f.changed
	f.mu.Unlock()
	if keep {
		return &blobHandle{data: data}, fuse.FOPEN_KEEP_CACHE, 0
	}
	// Direct I/O: reads come to us whatever size the kernel cached.
	return &blobHandle{data: data}, fuse.FOPEN_DIRECT_IO, 0
}

// blobHandle is an open blobFile: the bytes as they were at open.
type blobHandle struct {
	noFlush
	data []byte
}

// Read copies from the bytes of the open; past the end is EOF.
func (h *blobHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.data)))
	return fuse.ReadResultData(h.data[off:end]), 0
}
