package storageview

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrInterrupted: the caller gave up (its process got a signal) while
// another process held the store's lock (EINTR).
var ErrInterrupted = errors.New("interrupted while another process held the store's lock")

// lockProbe holds the writable store's record lock files open (heldFile)
// to see whether another process holds them for writing (podman during a
// pull or an import).
type lockProbe struct {
	mu    sync.Mutex
	files []heldFile
}

func newLockProbe(paths []string) *lockProbe {
	p := &lockProbe{files: make([]heldFile, len(paths))}
	for i, path := range paths {
		p.files[i] = heldFile{path: path, fd: -1}
	}
	return p
}

// busy reports whether another process holds one of the files locked for
// writing (F_GETLK never reports this process's own locks).
func (p *lockProbe) busy() bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.files {
		f := &p.files[i]
		lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: 0, Len: 0}
		if f.open() && unix.FcntlFlock(uintptr(f.fd), unix.F_GETLK, &lk) == nil && lk.Type != unix.F_UNLCK {
			return true
		}
	}
	return false
}

func (p *lockProbe) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.files {
		p.files[i].close()
	}
}

// locksUsable checks that containers/storage can open the writable
// store's record lock files (it opens them read-write, reads included):
// when it cannot, it panics holding the lock's mutex, and every later
// use of the store then hangs. A file system mounted read-only over a
// part of the store does that (EROFS). A lock file not there yet is
// created in its directory, which must then be writable.
func (v *View) locksUsable() error {
	for _, f := range v.writableLocks() {
		p := f
		err := unix.Access(p, unix.W_OK)
		for errors.Is(err, unix.ENOENT) && p != filepath.Dir(p) {
			p = filepath.Dir(p)
			err = unix.Access(p, unix.W_OK)
		}
		if err != nil {
			return fmt.Errorf("the store's lock file %s cannot be written (%s: %v), so the store is not read", f, p, err)
		}
	}
	return nil
}

// WaitUnlocked returns once no other process holds the store's records
// locked for writing, or ErrInterrupted when ctx ends first (the kernel's
// INTERRUPT: the caller got a signal). A write calls it first, so that one
// waiting for podman can be interrupted; containers/storage's own wait for
// the lock cannot, and the write that follows still takes the locks.
func (v *View) WaitUnlocked(ctx context.Context) error {
	if v.storeGone.Load() { // as the last check found (a rebuild here could wait for podman)
		// Reading it would make containers/storage create it again.
		return fmt.Errorf("%w: the store's records were removed", ErrNotFound)
	}
	if err := v.locksUsable(); err != nil {
		return fmt.Errorf("%w: %v", ErrReadOnly, err)
	}
	for {
		if ctx.Err() != nil {
			return ErrInterrupted
		}
		if !v.probe.busy() {
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}
