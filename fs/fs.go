// Package fs mounts the imagefs tree with go-fuse and runs the server until
// the mount goes away: by Server.Unmount, by `imagefs umount`, or by a plain
// `umount`/`fusermount3 -u` from outside. When the serve loop ends, the store
// is closed (storageview.View.Close: store shut down, locks released).
//
// Like nodes/, this package never imports containers/storage or
// containers/image; it sees the store only through nodes.Store.
package fs

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/nodes"
)

// FSType is the file system type the kernel shows for an imagefs mount
// ("fuse." + MountOptions.Name), in /proc/self/mountinfo and `df -T`.
const FSType = "fuse.imagefs"

// Default kernel cache timeouts. Nodes set their own per-entry timeouts
// (long for immutable blobs, short for listings that change); these are the
// fallbacks for replies that do not.
const (
	DefaultEntryTimeout    = time.Second
	DefaultAttrTimeout     = time.Second
	DefaultNegativeTimeout = time.Second
)

// MaxRead is the largest READ the kernel sends (go-fuse's MaxWrite sets
// max_read and max_pages too). 256 KiB rather than go-fuse's 128 KiB
// halves the requests of a large-file read: serving 56 MB the kernel
// does not have cached took 15 ms of CPU instead of 20 (docs/PERFORMANCE.md).
// Larger costs memory, since every request buffer is this big: 1 MiB
// added 12 MB of RSS.
const MaxRead = 256 << 10

// Options are the mount options of an imagefs mount.
type Options struct {
	// ReadOnly mounts read-only ("ro"): the kernel itself refuses every
	// change with EROFS, whatever the modes say (for a mounting user who is
	// not root they would say EACCES), without asking imagefs.
	ReadOnly bool
	// AllowOther lets users other than the mounting one see the tree
	// (fuse allow_other; for non-root users it needs user_allow_other in
	// /etc/fuse.conf). Permissions are then checked by the kernel
	// (default_permissions) against the modes the tree shows.
	AllowOther bool
	// Debug logs every FUSE request and reply (go-fuse's debug output) to Log.
	Debug bool
	// Log receives one line per refused operation or internal error, and
	// the FUSE debug output. Nil means log.Default().
	Log *log.Logger
	// MaxReadAhead caps the kernel read-ahead per file; 0 = kernel default.
	MaxReadAhead int
	// EntryTimeout, AttrTimeout, NegativeTimeout override the defaults above
	// when nonzero.
	EntryTimeout, AttrTimeout, NegativeTimeout time.Duration
	// NodeOptions are handed to nodes.NewRoot; its Log is filled from Log
	// when nil.
	NodeOptions nodes.Options
}

// Server is one live imagefs mount.
type Server struct {
	mountpoint string
	fuse       *fuse.Server
	store      nodes.Store
	log        *log.Logger

	done     chan struct{} // closed when the serve loop ended and the store is closed
	closeErr error         // from closing the store; read after done

	unmountMu sync.Mutex
}

// Mount mounts the tree of store at mountpoint and starts serving it. It
// returns once the kernel mount is ready. On error nothing is mounted and
// the store is left open (the caller still owns it); on success the Server
// owns the store and closes it when the mount ends (see Wait).
func Mount(mountpoint string, store nodes.Store, o Options) (*Server, error) {
	if err := CheckMountpoint(mountpoint); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, err
	}
	if err := CheckFUSE(); err != nil {
		return nil, err
	}
	logger := o.Log
	if logger == nil {
		logger = log.Default()
	}
	nopts := o.NodeOptions
	if nopts.Log == nil {
		nopts.Log = logger
	}
	root := nodes.NewRoot(store, nopts)

	fopts := fuseOptions(o, logger)
	srv, err := fuse.NewServer(nodes.NewRawFS(root, fopts), abs, &fopts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mounting FUSE at %s: %s", abs, oneLine(err))
	}
	s := &Server{
		mountpoint: abs,
		fuse:       srv,
		store:      store,
		log:        logger,
		done:       make(chan struct{}),
	}
	serveDone := make(chan struct{})
	go func() {
		srv.Serve() // returns when the kernel connection ends (any unmount)
		close(serveDone)
	}()
	if err := srv.WaitMount(); err != nil {
		// Mounted but not answering: take it down again, leave the store
		// to the caller as promised.
		_ = srv.Unmount()
		<-serveDone
		return nil, fmt.Errorf("mounting FUSE at %s: %s", abs, oneLine(err))
	}
	go func() {
		<-serveDone
		if c, ok := store.(io.Closer); ok {
			s.closeErr = c.Close()
		}
		close(s.done)
	}()
	return s, nil
}

// fuseOptions builds the go-fuse options of an imagefs mount.
func fuseOptions(o Options, logger *log.Logger) *fusefs.Options {
	entry, attr, neg := DefaultEntryTimeout, DefaultAttrTimeout, DefaultNegativeTimeout
	if o.EntryTimeout != 0 {
		entry = o.EntryTimeout
	}
	if o.AttrTimeout != 0 {
		attr = o.AttrTimeout
	}
	if o.NegativeTimeout != 0 {
		neg = o.NegativeTimeout
	}
	mountOpts := []string{"nosuid", "nodev", "default_permissions"}
	if o.ReadOnly {
		mountOpts = append(mountOpts, "ro")
	}
	return &fusefs.Options{
		MountOptions: fuse.MountOptions{
			FsName: "imagefs", // first column of df, source in /proc/mounts
			Name:   "imagefs", // type fuse.imagefs
			// mount(2) ourselves (we usually run as root); go-fuse falls
			// back to fusermount3 when that fails.
			DirectMount: true,
			AllowOther:  o.AllowOther,
			// The kernel checks permissions against the modes we report;
			// nodes enforce read-only-ness themselves (EROFS), so no "ro"
			// unless asked: writes turn some operations into real changes.
			Options:      mountOpts,
			MaxReadAhead: o.MaxReadAhead,
			MaxWrite:     MaxRead,
			Debug:        o.Debug,
			Logger:       logger,
			// Symlinks in images never change while the image exists.
			EnableSymlinkCaching: true,
			// Negotiate FUSE_POSIX_ACL: the kernel then keeps each inode's
			// system.posix_acl_access/default (or their absence) in its ACL
			// cache instead of asking us on every getxattr (ls -l asks for
			// every entry), and checks permissions against stored ACLs as
			// overlayfs does. No node accepts ACL changes (EROFS).
			EnableAcl: true,
			// No file handles, so no passthrough (nodes/handleless.go).
			DisabledCapabilities: nodes.MountCapabilities,
		},
		// Report mode 0 as 0 (e.g. /etc/shadow in many images): without
		// this go-fuse turns a zero mode into 0644.
		NullPermissions: true,
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &neg,
		RootStableAttr:  &fusefs.StableAttr{Ino: nodes.RootIno, Mode: syscall.S_IFDIR},
		Logger:          logger,
	}
}

// Mountpoint is the absolute path the tree is mounted at.
func (s *Server) Mountpoint() string { return s.mountpoint }

// Done is closed once the mount has ended and the store is closed.
func (s *Server) Done() <-chan struct{} { return s.done }

// Wait blocks until the mount ends (by Unmount or from outside) and the
// store is closed; it returns the error of closing the store.
func (s *Server) Wait() error {
	<-s.done
	return s.closeErr
}

// ErrBusy is returned by Unmount when a process still uses the mount (an
// open file, a working directory inside it).
var ErrBusy = errors.New("mount is busy: a process still uses it")

// Unmount unmounts the tree and waits until the server has stopped and the
// store is closed. When the mount is busy it returns an error wrapping
// ErrBusy and leaves everything as it was, unless lazy is set: then the
// mount is detached at once (MNT_DETACH) and the server ends when its last
// user goes away; Unmount does not wait for that.
func (s *Server) Unmount(lazy bool) error {
	s.unmountMu.Lock()
	defer s.unmountMu.Unlock()
	select {
	case <-s.done:
		return s.closeErr // already gone (e.g. unmounted from outside)
	default:
	}
	if lazy {
		if err := Unmount(s.mountpoint, true); err != nil && !errors.Is(err, ErrNotMounted) {
			return err
		}
		return nil
	}
	if err := Unmount(s.mountpoint, false); err != nil && !errors.Is(err, ErrNotMounted) {
		return err
	}
	return s.Wait()
}

// ErrNotMounted is returned by Unmount for a path that is not a mount point.
var ErrNotMounted = errors.New("not mounted")

// Unmount unmounts the FUSE mount at mountpoint: umount2(2) first, then
// `fusermount3 -u` (or `fusermount -u`) when we lack the privilege. A busy
// mount is retried briefly, then reported as ErrBusy; with lazy the mount
// is detached (MNT_DETACH / fusermount3 -uz) instead.
func Unmount(mountpoint string, lazy bool) error {
	flags := 0
	if lazy {
		flags = syscall.MNT_DETACH
	}
	var err error
	delay := 5 * time.Millisecond
	for try := 0; ; try++ {
		err = syscall.Unmount(mountpoint, flags)
		if err != syscall.EBUSY || try == 5 {
			break
		}
		// The kernel may not yet have seen the last close of a file.
		time.Sleep(delay)
		delay *= 2
	}
	switch err {
	case nil:
		return nil
	case syscall.EINVAL:
		return fmt.Errorf("%s: %w", mountpoint, ErrNotMounted)
	case syscall.EBUSY:
		return fmt.Errorf("%s: %w", mountpoint, ErrBusy)
	case syscall.EPERM:
		return fusermountUnmount(mountpoint, lazy)
	default:
		return fmt.Errorf("unmounting %s: %w", mountpoint, err)
	}
}

func fusermountUnmount(mountpoint string, lazy bool) error {
	bin, err := exec.LookPath("fusermount3")
	if err != nil {
		if bin, err = exec.LookPath("fusermount"); err != nil {
			return fmt.Errorf("unmounting %s: not permitted, and no fusermount3 to ask", mountpoint)
		}
	}
	args := []string{"-u"}
	if lazy {
		args = append(args, "-z")
	}
	out, err := exec.Command(bin, append(args, mountpoint)...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "busy") {
			return fmt.Errorf("%s: %w", mountpoint, ErrBusy)
		}
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("unmounting %s: %s", mountpoint, oneLine(errors.New(msg)))
	}
	return nil
}

// CheckMountpoint returns a one-line error unless path is an existing
// directory we can mount on.
func CheckMountpoint(path string) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return deadMountError(path)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("mountpoint %s does not exist", path)
	case err != nil:
		return fmt.Errorf("mountpoint %s: %s", path, oneLine(errors.Unwrap(err)))
	case !st.IsDir():
		return fmt.Errorf("mountpoint %s is not a directory", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	m, err := FindMount(abs)
	if err != nil {
		return err
	}
	if m != nil && m.FSType == FSType {
		// The stat above may have come from the kernel's attribute cache;
		// statfs always asks the server, so it tells a dead one.
		var sfs syscall.Statfs_t
		if err := syscall.Statfs(path, &sfs); errors.Is(err, syscall.ENOTCONN) {
			return deadMountError(path)
		}
		return fmt.Errorf("mountpoint %s: imagefs is already mounted there", path)
	}
	return nil
}

// deadMountError says how to clear the dead FUSE mount at path: with
// imagefs umount when it was ours, else as any other FUSE mount.
func deadMountError(path string) error {
	if abs, err := filepath.Abs(path); err == nil {
		if m, err := FindMount(abs); err == nil && m != nil && m.FSType != FSType {
			return fmt.Errorf("mountpoint %s: a dead FUSE mount (%s) is still there (run `fusermount3 -u %s` first)", path, m.FSType, path)
		}
	}
	return fmt.Errorf("mountpoint %s: a dead FUSE mount is still there (run `imagefs umount %s` first)", path, path)
}

// CheckFUSE returns a one-line error unless this user can open /dev/fuse
// (as fusermount3 must, for a user who is not root).
func CheckFUSE() error {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err == nil {
		f.Close()
		return nil
	}
	if errors.Is(err, os.ErrPermission) {
		// fusermount3 opens it as the calling user too.
		return fmt.Errorf("FUSE is not available to uid %d: %s (the device is usually mode 0666: ask the administrator)", os.Getuid(), oneLine(err))
	}
	return fmt.Errorf("FUSE is not available: %s (load the fuse module, or install fuse3)", oneLine(err))
}

// CheckAllowOther returns a one-line error when a user other than root
// asks for allow_other and /etc/fuse.conf (conf) does not let users:
// fusermount3 would refuse, and its reason would reach no terminal.
func CheckAllowOther(conf string) error {
	if os.Geteuid() == 0 {
		return nil
	}
	b, err := os.ReadFile(conf)
	if err == nil {
		for line := range strings.Lines(string(b)) {
			if strings.TrimSpace(line) == "user_allow_other" {
				return nil
			}
		}
	}
	return fmt.Errorf("--allow-other needs user_allow_other in %s for a user other than root (fusermount3 refuses it otherwise)", conf)
}

// oneLine flattens an error message to one line: library errors sometimes
// end in, or contain, newlines.
func oneLine(err error) string {
	if err == nil {
		return ""
	}
	return strings.Join(strings.Fields(err.Error()), " ")
}

// fuseConnections is where fusectl shows the kernel's FUSE connections.
const fuseConnections = "/sys/fs/fuse/connections"

// AbortConnection ends the FUSE connection of the mount m at once, as
// fusectl's abort does: every request waiting on it fails (ENOTCONN), and
// the server's next read of /dev/fuse ends its loop. It frees processes
// stuck on a server that hangs, or that was killed and cannot exit. It
// mounts fusectl for the time it needs it when nothing has (root only).
func AbortConnection(m *MountInfo) error {
	_, minor, ok := strings.Cut(m.Device, ":")
	if !ok {
		return fmt.Errorf("%s: no device number in its mount entry", m.Mountpoint)
	}
	if ents, _ := os.ReadDir(fuseConnections); len(ents) == 0 {
		if err := syscall.Mount("fusectl", fuseConnections, "fusectl", 0, ""); err != nil {
			return fmt.Errorf("mounting fusectl on %s to reach the connection: %w", fuseConnections, err)
		}
		defer syscall.Unmount(fuseConnections, 0)
	}
	if err := os.WriteFile(filepath.Join(fuseConnections, minor, "abort"), []byte("1"), 0); err != nil {
		return fmt.Errorf("aborting the FUSE connection of %s: %w", m.Mountpoint, err)
	}
	return nil
}
