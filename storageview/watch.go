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
	path  string
	fd    int // -1 while the file cannot be opened
	n     int // token length last seen; -1 absent, -2 never looked
	token [lastWriterSize]byte
}

func newWatcher(paths []string) *watcher {
	w := &watcher{files: make([]watchedFile, len(paths))}
	for i, p := range paths {
		w.files[i] = watchedFile{path: p, fd: -1, n: -2}
	}
	return w
}

// changed reads every token and reports whether any differs from the one
// seen last time (the first call always reports a change). A lock file
// that was deleted or replaced (podman system reset, a store restored from
// a backup) is reopened at its path: the open one would never change again.
func (w *watcher) changed() bool {
	w.checks++
	changed := false
	var buf [lastWriterSize]byte
	for i := range w.files {
		f := &w.files[i]
		if f.fd >= 0 && f.replaced() {
			syscall.Close(f.fd)
			f.fd = -1
		}
		if f.fd < 0 {
			fd, err := syscall.Open(f.path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
			if err != nil {
				if f.n != -1 {
					f.n = -1
					changed = true
				}
				continue
			}
			f.fd = fd
		}
		n, err := syscall.Pread(f.fd, buf[:], 0)
		if err != nil {
			syscall.Close(f.fd)
			f.fd, f.n = -1, -1
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

// replaced reports whether the file f has open was deleted, or replaced by
// a rename: no name links to it any more.
func (f *watchedFile) replaced() bool {
	var st syscall.Stat_t
	return syscall.Fstat(f.fd, &st) != nil || st.Nlink == 0
}

// absent reports whether the last check found no file at path (one of
// the watched ones).
func (w *watcher) absent(path string) bool {
	for i := range w.files {
		if w.files[i].path == path {
			return w.files[i].n == -1
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
		if w.files[i].fd >= 0 {
			syscall.Close(w.files[i].fd)
			w.files[i].fd = -1
		}
	}
}
