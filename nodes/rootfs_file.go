package nodes

import (
	"context"
	"errors"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

var _ = (fusefs.NodeOpener)((*rootfsFile)(nil))

// Open opens the backing file read-only. Opening for writing (or with
// O_TRUNC) is EROFS. The handle offers its descriptor for FUSE passthrough
// (the kernel then reads the layer file directly); when the kernel or
// server cannot, reads come through imagefs. The kernel may keep cached
// pages across opens (FOPEN_KEEP_CACHE): layer files never change.
func (f *rootfsFile) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	p := f.tree.stack.BackingPath(f.ent)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		fd, err = unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	}
	if err != nil {
		return nil, 0, f.tree.errno("open", f.ent.Path, err)
	}
	return &rootfsHandle{fd: fd, r: f.tree.r}, fuse.FOPEN_KEEP_CACHE, 0
}

// rootfsHandle is an open layer file.
type rootfsHandle struct {
	noFlush
	fd int
	r  *Rootfs
}

var _ = (fusefs.FilePassthroughFder)((*rootfsHandle)(nil))

// PassthroughFd offers the backing descriptor to the kernel.
func (h *rootfsHandle) PassthroughFd() (int, bool) { return h.fd, true }

var _ = (fusefs.FileReader)((*rootfsHandle)(nil))

// Read serves content when passthrough is not in use.
func (h *rootfsHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if h.r.debug && h.r.readLogged.CompareAndSwap(false, true) {
		h.r.log.Printf("rootfs: file content read through imagefs (FUSE passthrough not in use)")
	}
	n, err := unix.Pread(h.fd, dest, off)
	if err != nil {
		return nil, fusefs.ToErrno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

var _ = (fusefs.FileLseeker)((*rootfsHandle)(nil))

// Lseek answers SEEK_DATA and SEEK_HOLE from the backing file.
func (h *rootfsHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	n, err := unix.Seek(h.fd, int64(off), int(whence))
	if err != nil {
		return 0, fusefs.ToErrno(err)
	}
	return uint64(n), 0
}

var _ = (fusefs.FileReleaser)((*rootfsHandle)(nil))

func (h *rootfsHandle) Release(ctx context.Context) syscall.Errno {
	if h.fd >= 0 {
		unix.Close(h.fd)
		h.fd = -1
	}
	return 0
}

// PassthroughInUse reports whether the kernel accepted FUSE passthrough
// for this mount (CAP_PASSTHROUGH negotiated); imagefs mount --debug says so.
func PassthroughInUse(s *fuse.Server) bool {
	return s.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH != 0
}
