package nodes

// What the write operations share: the store's write side, who may
// change things, how a refusal is logged, and the names/ directories that
// mkdir made and no name holds yet.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/imagefs/imagefs/storageview"
)

// Writer is the store's write side; *storageview.View implements it. A
// Store without it gives a tree that refuses every change (EROFS).
type Writer interface {
	ResolveImage(ref string) (*storageview.Image, error)
	// Tag gives the image a name no other image holds (ErrNameTaken
	// otherwise); TakeName moves the name from the image holding it, as
	// podman tag does.
	Tag(imageID, name string) error
	TakeName(imageID, name string) error
	RemoveName(name string) error
	RemoveImage(imageID string) error
	Retag(oldName, newName string) error
	// Writable is ErrReadOnly when the store may not be changed at all
	// (mount --read-only).
	Writable() error
	// WaitUnlocked waits until no other process writes the store, or
	// returns storageview.ErrInterrupted when ctx ends first.
	WaitUnlocked(ctx context.Context) error
}

// Subscriber tells of store changes (storageview.View.Subscribe); the tree
// passes them on to the kernel (notify.go).
type Subscriber interface {
	Subscribe(fn func(old, new *storageview.Index)) (cancel func())
}

// writeState is the write side's state of one mount.
type writeState struct {
	mu sync.Mutex
	// pending are names/ directories made by mkdir ("quay.io/me") that no
	// name holds yet: they live in memory until rmdir, or until a name
	// below them makes them ordinary names/ directories.
	pending map[string]bool
	// temp are the temporary links of ln -sf (name → image ID), until
	// renamed over their destination.
	temp   map[string]string
	cancel func() // ends the store subscription
	// inflight counts the write operations being handled; idle (on mu)
	// is signalled when it drops to zero (writing, waitWritesDone).
	inflight int
	idle     *sync.Cond
	done     atomic.Uint64 // write operations handled (listingVersion)
}

// writeStates holds each tree's writeState (tree is defined elsewhere;
// this keeps the write side's state out of its struct).
var writeStates sync.Map // *tree → *writeState

func (t *tree) writes() *writeState {
	if ws, ok := writeStates.Load(t); ok {
		return ws.(*writeState)
	}
	fresh := &writeState{pending: map[string]bool{}, temp: map[string]string{}}
	fresh.idle = sync.NewCond(&fresh.mu)
	ws, _ := writeStates.LoadOrStore(t, fresh)
	return ws.(*writeState)
}

// writing marks a write operation as being handled until the returned
// function runs. The kernel holds the directory of a write operation
// locked until it is answered, and the store's follower must not send an
// invalidation of that directory's entries meanwhile: it would wait in
// the kernel, uninterruptibly, for the lock, and if imagefs is killed
// then, the answer never comes and the process can never exit (nor the
// connection end). So the follower waits for writes in user space
// (waitWritesDone).
func (t *tree) writing() func() {
	ws := t.writes()
	ws.mu.Lock()
	ws.inflight++
	ws.mu.Unlock()
	return func() {
		ws.done.Add(1)
		ws.mu.Lock()
		if ws.inflight--; ws.inflight == 0 {
			ws.idle.Broadcast()
		}
		ws.mu.Unlock()
	}
}

// waitWritesDone waits until no write operation is being handled.
func (t *tree) waitWritesDone() {
	ws := t.writes()
	ws.mu.Lock()
	for ws.inflight > 0 {
		ws.idle.Wait()
	}
	ws.mu.Unlock()
}

// isPending reports whether names/<p> is a directory mkdir made.
func (t *tree) isPending(p string) bool {
	ws := t.writes()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.pending[p]
}

// pendingChildren lists the mkdir-made directories right below names/<p>
// ("" for names/ itself).
func (t *tree) pendingChildren(p string) []string {
	ws := t.writes()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	var out []string
	for q := range ws.pending {
		parent, name := path.Split(q)
		if strings.TrimSuffix(parent, "/") == p {
			out = append(out, name)
		}
	}
	return out
}

// settlePending forgets the mkdir-made directories the index now has
// (a name below them exists): they are ordinary names/ directories now.
// One that still holds a mkdir-made directory stays: when the store's
// names below it go again, that one must still be reachable.
func (t *tree) settlePending(ix *storageview.Index) {
	ws := t.writes()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for p := range ws.pending {
		if ix.NameDir(strings.Split(p, "/")) != nil && !ws.holdsPending(p) {
			delete(ws.pending, p)
		}
	}
}

// holdsPending reports whether a mkdir-made directory lies below p; the
// caller holds ws.mu.
func (ws *writeState) holdsPending(p string) bool {
	for q := range ws.pending {
		if strings.HasPrefix(q, p+"/") {
			return true
		}
	}
	return false
}

// keepDirs keeps the directories of a name that a write removed or moved
// away, as a file system keeps a directory when its last file goes: those
// the store no longer has become directories as mkdir makes them (until
// rmdir). `rm -r` of a repository, which removes the names and then the
// directories, and an `ln -s` into the directory right after then find
// it. (When podman removes the last name, the directory goes with it.)
func (t *tree) keepDirs(name string) {
	ix := t.index()
	parts := strings.Split(name, "/")
	ws := t.writes()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for i := 1; i < len(parts); i++ {
		if ix.NameDir(parts[:i]) == nil {
			ws.pending[strings.Join(parts[:i], "/")] = true
		}
	}
}

// mayChange tells whether the caller of a change may make it: root and
// the user who mounted. Under allow_other everybody else only reads.
func (t *tree) mayChange(ctx context.Context) bool {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return true // not from the kernel (a unit test calling a node)
	}
	return c.Uid == 0 || c.Uid == t.owner.Uid
}

// writer checks that the caller may change the tree and that the store can
// be changed, and returns the store's write side; otherwise it logs the
// refusal and returns the errno.
func (t *tree) writer(ctx context.Context, op, p string) (Writer, syscall.Errno) {
	if !t.mayChange(ctx) {
		uid := uint32(0)
		if c, ok := fuse.FromContext(ctx); ok {
			uid = c.Uid
		}
		return nil, t.refuseWrite(op, p, syscall.EACCES, "only root and the user who mounted may change the store, not uid %d", uid)
	}
	w, ok := t.store.(Writer)
	if !ok {
		return nil, t.refuseWrite(op, p, syscall.EROFS, "this store cannot be changed")
	}
	return w, 0
}

// refuseMoveOut refuses a removal that mv(1) makes: the kernel answers a
// rename out of the mount with EXDEV, and mv then copies the link and
// removes the source, which here is rm — the image would lose the name,
// or go with its last one. mv fails instead, its copy stays behind, and
// the name and the image stay. (Other programs that move by copying and
// deleting, python's shutil.move, cannot be told from rm.)
func (t *tree) refuseMoveOut(ctx context.Context, op, p string) syscall.Errno {
	if !calledByMv(ctx) {
		return 0
	}
	return t.refuseWrite(op, p, syscall.EXDEV, "mv between file systems copies and then removes names here "+
		"(the source, moving out of the mount; the destination, moving onto an existing name), which would untag "+
		"or remove an image: use cp -P, ln -sfn and rm")
}

// refuseDirCopy refuses the mkdir and rmdir that mv(1) makes in names/
// when it copies a directory of names it could not rename (EXDEV): name
// by name, each a tag, after which it could remove none; in the way of
// the copy, it removes an empty directory first.
func (t *tree) refuseDirCopy(ctx context.Context, op, p string) syscall.Errno {
	if !calledByMv(ctx) {
		return 0
	}
	return t.refuseWrite(op, p, syscall.EXDEV, "a directory of names does not move, not even by copying: "+
		"move the names one by one")
}

// refuseReplace refuses a removal that a copying program makes to replace
// a name (cp, tar, cpio and install remove an existing destination, then
// create theirs): restoring a backup of names/ over the names it holds
// would untag or remove images, and their links, pointing at an image
// gone meanwhile, could not be made again. The name stays.
func (t *tree) refuseReplace(ctx context.Context, op, p string) syscall.Errno {
	if !callerIs(ctx, "cp", "tar", "bsdtar", "cpio", "install") {
		return 0
	}
	return t.refuseWrite(op, p, syscall.EEXIST, "copying programs replace a name by removing it first, which would untag "+
		"or remove its image: the name stays (ln -sfn moves a name)")
}

// calledByMv reports whether the caller is mv(1).
func calledByMv(ctx context.Context) bool { return callerIs(ctx, "mv") }

// callerIs reports whether the calling process is one of progs, by its
// process name or the name of the program it runs (run by another name,
// a symlink).
func callerIs(ctx context.Context, progs ...string) bool {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return false
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.Pid))
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", c.Pid))
	return slices.Contains(progs, strings.TrimSpace(string(comm))) || slices.Contains(progs, path.Base(exe))
}

// refuseWrite logs a refused change — operation, path, errno, reason — in
// one line and returns the errno.
func (t *tree) refuseWrite(op, p string, errno syscall.Errno, format string, args ...any) syscall.Errno {
	reason := format
	if len(args) > 0 {
		reason = fmt.Sprintf(format, args...)
	}
	t.log.Printf("%s %s: refused (%s): %s", op, p, unix.ErrnoName(errno), reason)
	return errno
}

// change makes one change of the store (a call of w) for a write
// operation in the top directory held ("names", "images", "digests") and,
// when it succeeded, updates what the kernel caches of it before the
// operation returns (notifyOwnChange). While podman writes the store the
// change waits, and a signal to the caller ends the wait (EINTR).
func (t *tree) change(ctx context.Context, w Writer, held string, do func() error) error {
	if err := w.WaitUnlocked(ctx); err != nil {
		return err
	}
	old := t.index()
	if err := do(); err != nil {
		return err
	}
	t.notifyOwnChange(old, t.index(), held)
	return nil
}

// writeErrno maps an error of the store's write side to errno, logging
// the refusal (or, for an unexpected error, the failure).
func (t *tree) writeErrno(ctx context.Context, op, p string, err error) syscall.Errno {
	var errno syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.Is(err, storageview.ErrNameTaken):
		errno = syscall.EEXIST
	case errors.Is(err, storageview.ErrInterrupted):
		errno = syscall.EINTR
	case errors.Is(err, syscall.EACCES): // a removal this user may not make (storageview/removable.go)
		errno = syscall.EACCES
	case errors.Is(err, storageview.ErrNotFound), errors.Is(err, storageview.ErrAmbiguous),
		errors.Is(err, storageview.ErrInUse), errors.Is(err, storageview.ErrReadOnly),
		errors.Is(err, storageview.ErrInvalidName):
		errno = t.toErrno(ctx, op, p, err)
	default:
		return t.toErrno(ctx, op, p, err) // logs it
	}
	return t.refuseWrite(op, p, errno, "%v", err)
}

// namesPath is "/names/<p…>/<name>" for log lines.
func namesPath(dir []string, name string) string {
	return "/" + path.Join(append(append([]string{"names"}, dir...), name)...)
}
