package storageview

// Live refresh: a follower goroutine per View notices changes of the store
// — by podman, buildah or imagefs itself — and tells subscribers (the tree,
// which then tells the kernel) what changed.
//
// It wakes on inotify events in the directories of the store's records and
// lock files (a writer rewrites images.json/layers.json by rename and
// records its last-writer token in the lock file), on each of our own
// changes, and every followTick as a fallback (a cheap token check) for
// what inotify cannot see. On each wake it asks Index() for a fresh
// snapshot and, when the generation moved, calls the subscribers with the
// index before and after.

import (
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// followDebounce lets a writer's burst of file events settle before
	// the index is rebuilt once for all of them.
	followDebounce = 15 * time.Millisecond
	// followTick is the fallback check interval: changes inotify missed
	// still show within it.
	followTick = 400 * time.Millisecond
)

// followers maps each *View to its *follower (View is owned elsewhere;
// this keeps the follower's state out of its struct).
var followers sync.Map

type follower struct {
	v    *View
	wake chan struct{} // buffered(1): a change may be waiting (inotify)
	own  chan struct{} // buffered(1): we changed the store ourselves
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	subs   map[int]func(old, new *Index)
	nextID int

	ino   *os.File // inotify instance, nil when unavailable
	inoFd int      // its descriptor (Fd() would make reads blocking, and Close could not end one)
}

// Subscribe registers fn to be called, from one goroutine and in order,
// after every rebuild that changed the index, with the index before and
// after (see Diff). The first subscriber starts following the store; the
// returned cancel unregisters fn (the last one stops following). fn must
// not block for long: the next changes wait for it.
func (v *View) Subscribe(fn func(old, new *Index)) (cancel func()) {
	f := v.follow()
	f.mu.Lock()
	id := f.nextID
	f.nextID++
	f.subs[id] = fn
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			delete(f.subs, id)
			last := len(f.subs) == 0
			f.mu.Unlock()
			if last {
				v.stopFollowing()
			}
		})
	}
}

// follow returns the view's follower, starting it if needed.
func (v *View) follow() *follower {
	if f, ok := followers.Load(v); ok {
		return f.(*follower)
	}
	f := &follower{
		v:    v,
		wake: make(chan struct{}, 1),
		own:  make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
		subs: map[int]func(old, new *Index){},
	}
	if actual, loaded := followers.LoadOrStore(v, f); loaded {
		return actual.(*follower)
	}
	f.startInotify()
	go f.run(v.Index())
	return f
}

// stopFollowing ends the view's follower, if any, and waits for it. Close
// calls it; so does the last subscriber's cancel.
func (v *View) stopFollowing() {
	fv, ok := followers.LoadAndDelete(v)
	if !ok {
		return
	}
	f := fv.(*follower)
	close(f.stop)
	<-f.done // the loop, which adds watches, has ended
	if f.ino != nil {
		f.ino.Close() // ends the reader goroutine
	}
}

// refreshNow rebuilds the index from the store at once and returns it.
func (v *View) refreshNow() *Index {
	v.Invalidate()
	return v.Index()
}

// wakeFollower tells v's follower, if it has one, that we changed the
// store: it refreshes at once, without waiting for a burst to settle.
func wakeFollower(v *View) {
	if f, ok := followers.Load(v); ok {
		select {
		case f.(*follower).own <- struct{}{}:
		default:
		}
	}
}

func (f *follower) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// watchDirs are the directories whose files tell of a change: those of
// the store's lock files (images, layers, containers; primary and
// additional stores).
func (f *follower) watchDirs() []string {
	seen := map[string]bool{}
	var dirs []string
	for _, lf := range f.v.lockFiles() {
		d := filepath.Dir(lf)
		if !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// startInotify opens the inotify instance and its reader; without one the
// follower still works from its ticks.
func (f *follower) startInotify() {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		f.v.log.Printf("storageview: inotify unavailable (%v): changes by other processes show within %s", err, followTick)
		return
	}
	f.ino, f.inoFd = os.NewFile(uintptr(fd), "inotify"), fd
	f.addWatches()
	go func() {
		buf := make([]byte, 64*1024)
		for {
			if _, err := f.ino.Read(buf); err != nil {
				return // closed by stopFollowing
			}
			// At once, not after the debounce: the next Index (a FUSE
			// request right after podman exits) must look at the store
			// rather than serve the index of before the change. Only a
			// hint: the lock files' last-writer tokens decide whether
			// anything changed (our own reads touch the lock files too).
			f.v.expireCheck()
			f.poke()
		}
	}()
}

// addWatches watches each directory at its path again: some appear only
// after the store's first write of their kind, and a directory that was
// replaced (podman system reset) took its watch with it. Adding a watch
// already there changes nothing.
func (f *follower) addWatches() {
	if f.ino == nil {
		return
	}
	// Not IN_CLOSE_WRITE: containers/storage opens its lock files
	// read-write for every read lock, ours included, and closing them
	// would wake us endlessly. A writer's token update is an IN_MODIFY.
	const mask = unix.IN_MODIFY | unix.IN_MOVED_TO | unix.IN_CREATE | unix.IN_DELETE
	for _, d := range f.watchDirs() {
		unix.InotifyAddWatch(f.inoFd, d, mask) // absent yet: next tick
	}
}

// run is the follower's loop: wait for a wake or a tick, refresh, tell
// the subscribers.
func (f *follower) run(last *Index) {
	defer close(f.done)
	tick := time.NewTicker(followTick)
	defer tick.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-f.wake:
			// Let the burst settle, then take everything it brought; a
			// change of ours (the usual cause of the burst when it comes)
			// has settled already.
			select {
			case <-f.stop:
				return
			case <-f.own:
			case <-time.After(followDebounce):
			}
			select {
			case <-f.wake:
			default:
			}
			f.v.expireCheck()
		case <-f.own:
			// The change rebuilt the index before telling us (changedByUs).
		case <-tick.C:
			f.addWatches()
		}
		ix := f.v.Index()
		if ix == nil || last == nil || ix.Generation == last.Generation {
			if last == nil {
				last = ix
			}
			continue
		}
		f.mu.Lock()
		subs := make([]func(old, new *Index), 0, len(f.subs))
		for _, fn := range f.subs {
			subs = append(subs, fn)
		}
		f.mu.Unlock()
		for _, fn := range subs {
			fn(last, ix)
		}
		last = ix
	}
}
