package nodes

import (
	"context"
	"errors"
	"os"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// A rootfs file has no open state (handleless.go): the kernel keeps its
// pages across opens, and asks for the ones it lacks with reads that
// come straight to the node.

var _ = (fusefs.NodeReader)((*rootfsFile)(nil))

// Read reads from the backing layer file. Large reads are spliced: the
// reply carries the layer file's page-cache pages to the kernel without
// a copy through our memory (go-fuse's zero-copy path).
func (f *rootfsFile) Read(ctx context.Context, _ fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	st, err := f.tree.stack.Stat(f.ent)
	if err != nil {
		return nil, f.tree.errno("lstat", f.ent.Path, err)
	}
	size := st.Size - off
	if size <= 0 {
		return fuse.ReadResultData(nil), 0
	}
	b, errno := f.backing()
	if errno != 0 {
		return nil, errno
	}
	if size >= spliceMin && len(dest) >= spliceMin {
		return &splicedRead{files: &f.tree.r.files, b: b, off: off, size: int(min(size, int64(len(dest))))}, 0
	}
	defer f.tree.r.files.release(b)
	n, err := unix.Pread(b.fd, dest, off)
	if err != nil {
		return nil, fusefs.ToErrno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// spliceMin is the smallest read that is spliced: below it, one pread
// costs less than the pipe round trip.
const spliceMin = 64 << 10

// splicedRead is a read go-fuse answers by splice(2) from the layer file
// (it implements go-fuse's Seekable result, like fuse.ReadResultFd). It
// holds the file open until go-fuse is done with it: the reply is written
// after Read returns, and a descriptor closed in between could be reused
// by another open and splice another file's bytes.
type splicedRead struct {
	files *backingFiles
	b     *backingFile
	off   int64
	size  int // within the file: no short read for go-fuse to fix up
}

func (r *splicedRead) Seekable() (fd uintptr, off int64, size int) {
	return uintptr(r.b.fd), r.off, r.size
}

func (r *splicedRead) Size() int { return r.size }

// Bytes is go-fuse's fallback when it cannot splice.
func (r *splicedRead) Bytes(buf []byte) ([]byte, fuse.Status) {
	n, err := unix.Pread(r.b.fd, buf[:min(len(buf), r.size)], r.off)
	if err != nil {
		return nil, fuse.ToStatus(err)
	}
	return buf[:n], fuse.OK
}

func (r *splicedRead) Done() { r.files.release(r.b) }

var _ = (fusefs.NodeLseeker)((*rootfsFile)(nil))

// Lseek answers SEEK_DATA and SEEK_HOLE from the backing file.
func (f *rootfsFile) Lseek(ctx context.Context, _ fusefs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	b, errno := f.backing()
	if errno != 0 {
		return 0, errno
	}
	defer f.tree.r.files.release(b)
	n, err := unix.Seek(b.fd, int64(off), int(whence))
	if err != nil {
		return 0, fusefs.ToErrno(err)
	}
	return uint64(n), 0
}

func (f *rootfsFile) backing() (*backingFile, syscall.Errno) {
	b, err := f.tree.r.files.acquire(f.tree.stack.BackingPath(f.ent))
	if err != nil {
		return nil, f.tree.errno("open", f.ent.Path, err)
	}
	return b, 0
}

// maxBackingFiles is how many layer files stay open between reads.
const maxBackingFiles = 16

// backingFiles keeps the layer files of the latest reads open: the kernel
// reads a large file in read-ahead windows, and one descriptor for all of
// them keeps the layer file's own read-ahead going and saves an open(2)
// per window.
type backingFiles struct {
	mu    sync.Mutex
	files []*backingFile // least recently used first
}

type backingFile struct {
	path string
	fd   int
	refs int // reads in progress, plus one while in the list
}

// acquire returns the open layer file at path; release it after use.
func (c *backingFiles) acquire(path string) (*backingFile, error) {
	c.mu.Lock()
	for i, b := range c.files {
		if b.path == path {
			c.files = append(append(c.files[:i:i], c.files[i+1:]...), b)
			b.refs++
			c.mu.Unlock()
			return b, nil
		}
	}
	c.mu.Unlock()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) { // O_NOATIME on a file we do not own
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	}
	if err != nil {
		return nil, err
	}
	b := &backingFile{path: path, fd: fd, refs: 2}
	c.mu.Lock()
	c.files = append(c.files, b)
	var old *backingFile
	if len(c.files) > maxBackingFiles {
		old = c.files[0]
		c.files = c.files[1:]
	}
	c.mu.Unlock()
	if old != nil {
		c.release(old)
	}
	return b, nil
}

func (c *backingFiles) release(b *backingFile) {
	c.mu.Lock()
	b.refs--
	last := b.refs == 0
	c.mu.Unlock()
	if last {
		unix.Close(b.fd)
	}
}

// closeGone closes the files kept open whose layer file is gone (its
// layer was removed): an open descriptor would keep its blocks allocated
// until 16 other files had been read.
func (c *backingFiles) closeGone() {
	c.mu.Lock()
	var gone []*backingFile
	c.files, gone = splitOff(c.files, func(b *backingFile) bool {
		_, err := os.Lstat(b.path)
		return errors.Is(err, os.ErrNotExist)
	})
	c.mu.Unlock()
	for _, b := range gone {
		c.release(b)
	}
}

// closeAll closes the files kept open (the mount ends).
func (c *backingFiles) closeAll() {
	c.mu.Lock()
	files := c.files
	c.files = nil
	c.mu.Unlock()
	for _, b := range files {
		c.release(b)
	}
}
