package nodes

import (
	"context"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/storageview"
)

// symlink is a relative symbolic link whose target is computed from the
// index on every Readlink: names/…, digests/…, an image's layers/NNN and
// instances/…, a layer's parent. A link whose name is gone is ENOENT; a
// link whose target is gone (an instance not stored locally) dangles.
type symlink struct {
	node
	ino  uint64
	path string // for log lines
	// resolve returns the link's target and mtime in ix; ok is false when
	// the link itself is gone.
	resolve func(ix *storageview.Index) (target string, mtime time.Time, ok bool)

	entryTimeout, attrTimeout time.Duration
}

func (l *symlink) stable() fusefs.StableAttr {
	return stableAttr(syscall.S_IFLNK, l.ino)
}

func (l *symlink) timeouts() (time.Duration, time.Duration) { return l.entryTimeout, l.attrTimeout }

func (l *symlink) attr(ctx context.Context, ix *storageview.Index, a *fuse.Attr) syscall.Errno {
	target, mtime, ok := l.resolve(ix)
	if !ok {
		return syscall.ENOENT
	}
	l.t.setAttr(a, l.ino, linkMode, 1, uint64(len(target)), mtime)
	return 0
}

// Readlink returns the target in the current index.
func (l *symlink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	target, _, ok := l.resolve(l.t.index())
	if !ok {
		return nil, syscall.ENOENT
	}
	return []byte(target), 0
}
