package storageview

import (
	"bytes"
	"syscall"
)

// lastWriterSize is the size of the last-writer token containers/storage
// writes at offset 0 of a lock file each time it changes the records the
// lock protects (pkg/lockfile RecordWrite).
const lastWriterSize = 64

// watcher tells whether any of a set of lock files got a new last-writer
// token. It keeps the files open, so a check is one pread per file. Not
// safe for concurrent use (the View calls it under refreshMu).
type watcher struct {
	files  []watchedFile
	checks int // calls of changed, for tests
}

type watchedFile struct {
	heldFile
	n     int // token length last seen; -1 absent, -2 never looked
	token [lastWriterSize]byte
	seen  bool // the file was there at some check
}

// heldFile is a lock file kept open, read-only, by its path. Closing a
// descriptor of a lock file drops every POSIX lock this process holds on
// it, containers/storage's own included: held files are closed only when
// deleted or replaced, and when the view closes.
type heldFile struct {
	path string
	fd   int // -1 while the file cannot be opened
}

// open makes fd the descriptor of the file at path, opening it again when
// the one held was deleted, or replaced by a rename (podman system reset,
// a store restored from a backup): that one would never change again.
// It reports whether the file is open.
func (f *heldFile) open() bool {
	var st syscall.Stat_t
	if f.fd >= 0 && (syscall.Fstat(f.fd, &st) != nil || st.Nlink == 0) {
		f.close() // no lock of ours is on the deleted file
	}
	if f.fd < 0 {
		fd, err := syscall.Open(f.path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return false
		}
		f.fd = fd
	}
	return true
}

func (f *heldFile) close() {
	if f.fd >= 0 {
		syscall.Close(f.fd)
		f.fd = -1
	}
}

func newWatcher(paths []string) *watcher {
	w := &watcher{files: make([]watchedFile, len(paths))}
	for i, p := range paths {
		w.files[i] = watchedFile{heldFile: heldFile{path: p, fd: -1}, n: -2}
	}
	return w
}

// changed reads every token and reports whether any differs from the one
// seen last time (the first call always reports a change). A lock file
// that was deleted or replaced is read at its path again (heldFile.open).
func (w *watcher) changed() bool {
	w.checks++
	changed := false
	var buf [lastWriterSize]byte
	for i := range w.files {
		f := &w.files[i]
		if !f.open() {
			if f.n != -1 {
				f.n = -1
				changed = true
			}
			continue
		}
		f.seen = true
		n, err := syscall.Pread(f.fd, buf[:], 0)
		if err != nil {
			f.close()
			f.n = -1
			changed = true
			continue
		}
		if n != f.n || !bytes.Equal(buf[:n], f.token[:n]) {
			f.n = n
			copy(f.token[:], buf[:n])
			changed = true
		}
	}
	return changed
}

// deleted reports whether the last check found no file at path (one of
// the watched ones) where an earlier check had found one. A lock file
// that was never there is not deleted: containers/storage makes some only
// when it first reads the records they lock.
func (w *watcher) deleted(path string) bool {
	for i := range w.files {
		if w.files[i].path == path {
			return w.files[i].seen && w.files[i].n == -1
		}
	}
	return false
}

// forget makes the next changed call report a change.
func (w *watcher) forget() {
	for i := range w.files {
		w.files[i].n = -2
	}
}

func (w *watcher) close() {
	for i := range w.files {
		w.files[i].close()
	}
}
