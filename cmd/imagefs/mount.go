package main

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/storageview"
)

// mountFlags are the flags of `imagefs mount`.
type mountFlags struct {
	root, runroot, driver string
	storageOpts           []string
	readOnly              bool
	allowOther            bool
	debug                 bool
	foreground            bool
	logFile               string
	cpuProfile            string
}

func newMountCmd() *cobra.Command {
	mf := &mountFlags{}
	c := &cobra.Command{
		Use:   "mount [flags] MOUNTPOINT",
		Short: "Mount the image store at MOUNTPOINT",
		Long: `Mount the image store at MOUNTPOINT and return once the mount is ready;
the serving process stays in the background until "imagefs umount MOUNTPOINT"
(or umount, fusermount3 -u). With -f it stays in the foreground instead, and
SIGINT or SIGTERM unmount.

Without storage flags imagefs opens the same store podman would
(containers-storage.conf, CONTAINERS_STORAGE_CONF), so the tree shows what
"podman images -a" shows.`,
		Example: `  imagefs mount /mnt/images
  imagefs mount --root /var/lib/containers/storage --storage-driver overlay /mnt/images
  imagefs mount -f --debug /mnt/images`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("mount takes exactly one MOUNTPOINT, got %d arguments (see imagefs mount --help)", len(args))
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if fd := os.Getenv(readyFDVar); fd != "" {
				return runDaemon(mf, args[0], fd)
			}
			if mf.foreground {
				return runForeground(mf, args[0])
			}
			return startDaemon(mf, args[0])
		},
	}
	f := c.Flags()
	f.StringVar(&mf.root, "root", "", "storage root directory (graphroot); default: as podman")
	f.StringVar(&mf.runroot, "runroot", "", "storage state directory (runroot); default: as podman")
	f.StringVar(&mf.driver, "storage-driver", "", "storage driver (overlay, vfs); default: as podman")
	f.StringArrayVar(&mf.storageOpts, "storage-opt", nil, "storage driver option, e.g. overlay.imagestore=DIR (repeatable; as for podman, overlay.mount_program is recorded in the store)")
	f.BoolVar(&mf.readOnly, "read-only", false, "refuse every change to the store (rm, ln -s, mv in the tree fail with EROFS)")
	f.BoolVar(&mf.allowOther, "allow-other", false, "let other users see the mount (fuse allow_other; modes are enforced)")
	f.BoolVar(&mf.debug, "debug", false, "log every FUSE request and the store's debug messages")
	f.BoolVarP(&mf.foreground, "foreground", "f", false, "stay in the foreground; SIGINT/SIGTERM unmount")
	f.StringVar(&mf.logFile, "log-file", "", "append the server's log to this file (default: stderr with -f, nowhere in the background)")
	f.StringVar(&mf.cpuProfile, "cpuprofile", "", "write a CPU profile of the serving process to this file when it ends")
	_ = f.MarkHidden("cpuprofile")
	return c
}

// storeOptions turns the storage flags into storageview options; empty
// fields mean "as podman".
func (mf *mountFlags) storeOptions() storageview.Options {
	return storageview.Options{
		GraphRoot:     mf.root,
		RunRoot:       mf.runroot,
		Driver:        mf.driver,
		DriverOptions: mf.storageOpts,
		ReadOnly:      mf.readOnly,
	}
}

// runForeground mounts and serves until unmounted or signalled. It logs
// to stderr, or to --log-file when given; errors that stop the mount go to
// stderr either way (main prints them).
func runForeground(mf *mountFlags, mountpoint string) error {
	logger := log.New(os.Stderr, "imagefs: ", 0)
	if mf.logFile != "" {
		f, err := openLogFile(mf.logFile)
		if err != nil {
			return err
		}
		defer f.Close()
		logger = log.New(f, fmt.Sprintf("imagefs[%d]: ", os.Getpid()), log.LstdFlags)
	}
	return serve(mf, mountpoint, logger, false, func(error) {})
}

// serve mounts the store at mountpoint and serves it until the mount ends.
// ready is called once: with nil when the mount is up, or with the error
// that stopped it. In daemon mode SIGHUP is ignored; in the foreground it
// unmounts like SIGINT and SIGTERM.
func serve(mf *mountFlags, mountpoint string, logger *log.Logger, daemon bool, ready func(error)) (err error) {
	readyCalled := false
	defer func() {
		if !readyCalled {
			ready(err)
		}
	}()

	sigs := make(chan os.Signal, 4)
	if daemon {
		signal.Ignore(syscall.SIGHUP)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	} else {
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	}
	defer signal.Stop(sigs)
	// The server's own lines (start, end, the store's warnings) are all
	// written; the tree's refusals and request errors, which other users
	// of an --allow-other mount can make as many of as they like, are
	// bounded (logguard.go).
	requests := newLogGuard(logger.Writer(), !mf.debug)
	requestLog := log.New(requests, logger.Prefix(), logger.Flags())
	logger.SetOutput(newLogGuard(logger.Writer(), false))
	storageLogs := routeStorageLogs(logger, mf.debug)
	limitMemory()

	if err := fs.CheckMountpoint(mountpoint); err != nil {
		return err
	}
	abs, err := resolveMountpoint(mountpoint)
	if err != nil {
		return err
	}
	if err := fs.CheckFUSE(); err != nil {
		return err
	}
	if mf.allowOther {
		if err := fs.CheckAllowOther("/etc/fuse.conf"); err != nil {
			return err
		}
	}
	if err := mf.checkNotOverStore(abs); err != nil {
		return err
	}
	lock, err := fs.LockMountpoint(abs)
	if err != nil {
		return err
	}
	defer lock.Release() // last: after the store is closed

	if err := mf.checkStorePaths(); err != nil {
		return err
	}
	undo := mf.noteNewStoreDirs()
	vopts := mf.storeOptions()
	vopts.Log = logger
	view, err := storageview.Open(vopts)
	if err != nil {
		undo()
		return fmt.Errorf("cannot open the image store: %s", mf.openStoreError(err))
	}
	srv, err := fs.Mount(abs, view, fs.Options{
		ReadOnly:   mf.readOnly,
		AllowOther: mf.allowOther,
		Debug:      mf.debug,
		Log:        requestLog,
	})
	if err != nil {
		if cerr := view.Close(); cerr != nil {
			logger.Printf("closing the store: %v", cerr)
		}
		return err
	}
	if mf.cpuProfile != "" {
		if stop, perr := startCPUProfile(mf.cpuProfile); perr != nil {
			logger.Printf("cpu profile: %v", perr)
		} else {
			defer stop()
		}
	}
	logger.Printf("serving %s at %s (pid %d)", describeStore(mf, view), abs, os.Getpid())
	storageLogs.flush()
	readyCalled = true
	ready(nil)
	defer returnIdleMemory(idleCheckInterval)()

	for done := false; !done; {
		select {
		case <-srv.Done():
			done = true
		case s := <-sigs:
			logger.Printf("%s: unmounting %s", s, abs)
			uerr := srv.Unmount(false)
			if errors.Is(uerr, fs.ErrBusy) {
				logger.Printf("%s is busy; detaching it, serving until its last user leaves", abs)
				uerr = srv.Unmount(true)
			}
			if uerr != nil {
				logger.Printf("unmount: %v", uerr)
			}
		}
	}
	werr := srv.Wait()
	if n := requests.takeDropped(); n > 0 {
		logger.Printf("%d lines of refusals and request errors were not logged (more than %d a second)", n, logLinesPerSecond)
	}
	if werr != nil {
		logger.Printf("closing the store: %v", werr)
		return fmt.Errorf("closing the store: %w", werr)
	}
	logger.Printf("unmounted %s, store closed", abs)
	return nil
}

// openStoreError words a failure to open the store on one line, with
// advice for a graph root on a read-only file system (a snapshot, a
// backup): containers/storage writes its lock files even to read, but
// takes a read-only store as an additional image store of a writable one.
func (mf *mountFlags) openStoreError(err error) string {
	msg := err.Error()
	var pe *iofs.PathError
	if !errors.As(err, &pe) {
		return oneLine(msg)
	}
	twice := pe.Op + " " + pe.Path + ": " // containers/storage says "open X: open X: …"
	msg = strings.Replace(msg, twice+twice, twice, 1)
	if !errors.Is(err, syscall.EROFS) {
		return oneLine(msg)
	}
	if dirs, derr := storageview.StoreDirs(mf.storeOptions()); derr == nil {
		if root, aerr := filepath.Abs(dirs[0].Path); aerr == nil && within(pe.Path, root) {
			msg += fmt.Sprintf(" (to browse a read-only store, give it as an additional image store: "+
				"--root DIR --runroot DIR/run --storage-opt additionalimagestore=%s, DIR empty and writable)", root)
		}
	}
	return oneLine(msg)
}

// checkStorePaths refuses --root/--runroot paths that cannot be
// directories (a regular file on the way) before the store library creates
// anything.
func (mf *mountFlags) checkStorePaths() error {
	for _, p := range []struct{ flag, path string }{{"--root", mf.root}, {"--runroot", mf.runroot}} {
		if p.path == "" {
			continue
		}
		for dir := filepath.Clean(p.path); ; dir = filepath.Dir(dir) {
			st, err := os.Stat(dir)
			if err == nil {
				if !st.IsDir() {
					return fmt.Errorf("cannot open the image store: %s %s: %s is not a directory", p.flag, p.path, dir)
				}
				break
			}
			if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
				return fmt.Errorf("cannot open the image store: %s %s: %s", p.flag, p.path, oneLine(err.Error()))
			}
			if parent := filepath.Dir(dir); parent == dir {
				break
			}
		}
	}
	return nil
}

// checkNotOverStore refuses a mount point at, above or inside a directory
// of the store: the mount would hide the store, or a part of it, from
// imagefs itself and from podman, whose reads and writes there would then
// fail (containers/storage panics when it cannot open a lock file).
func (mf *mountFlags) checkNotOverStore(mountpoint string) error {
	dirs, err := storageview.StoreDirs(mf.storeOptions())
	if err != nil {
		return fmt.Errorf("cannot open the image store: %s", oneLine(err.Error()))
	}
	for _, d := range dirs {
		p, err := filepath.Abs(d.Path)
		if err != nil {
			continue
		}
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		if within(p, mountpoint) {
			return fmt.Errorf("mountpoint %s would cover the store's %s %s: mount it somewhere else", mountpoint, d.What, p)
		}
		if within(mountpoint, p) {
			return fmt.Errorf("mountpoint %s is inside the store's %s %s: mount it somewhere else", mountpoint, d.What, p)
		}
	}
	return nil
}

// within reports whether path p is dir or below it (both absolute).
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// noteNewStoreDirs notes which of the --root/--runroot directories do not
// exist yet; the returned undo removes them again when opening the store
// fails (the store library creates them before it checks, e.g., the
// driver), so that a refused mount leaves nothing behind. It only removes
// a tree all of whose entries are younger than the note.
func (mf *mountFlags) noteNewStoreDirs() (undo func()) {
	start := time.Now().Add(-time.Second) // file times are coarse
	var fresh []string
	for _, p := range []string{mf.root, mf.runroot} {
		if p == "" {
			continue
		}
		top := ""
		for dir := filepath.Clean(p); ; dir = filepath.Dir(dir) {
			if _, err := os.Lstat(dir); err == nil {
				break
			}
			top = dir
			if filepath.Dir(dir) == dir {
				break
			}
		}
		if top != "" {
			fresh = append(fresh, top)
		}
	}
	return func() {
		for _, top := range fresh {
			young := true
			_ = filepath.WalkDir(top, func(_ string, d iofs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if info, ierr := d.Info(); ierr != nil || info.ModTime().Before(start) {
					young = false
					return iofs.SkipAll
				}
				return nil
			})
			if young {
				_ = os.RemoveAll(top)
			}
		}
	}
}

// resolveMountpoint makes path absolute and resolves symlinks, as the
// kernel will record the mount point.
func resolveMountpoint(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	return abs, nil
}

func describeStore(mf *mountFlags, v *storageview.View) string {
	parts := []string{"root " + v.Store().GraphRoot(), "driver " + v.Driver()}
	if mf.readOnly {
		parts = append(parts, "read-only")
	}
	if mf.root == "" {
		parts = append([]string{"podman's default"}, parts...)
	}
	return "image store (" + strings.Join(parts, ", ") + ")"
}

func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// routeStorageLogs sends containers/storage's logrus messages through our
// logger, one line each: warnings and errors normally, everything with
// --debug. Until the mount is up (flush) they are held back, so that a
// refused mount prints its one error line and nothing else; with --debug
// they go out at once.
func routeStorageLogs(logger *log.Logger, debug bool) *logrusHook {
	logrus.SetOutput(discard{})
	if debug {
		logrus.SetLevel(logrus.DebugLevel)
	} else {
		logrus.SetLevel(logrus.WarnLevel)
	}
	h := &logrusHook{logger: logger, live: debug}
	logrus.StandardLogger().ReplaceHooks(logrus.LevelHooks{})
	logrus.AddHook(h)
	return h
}

type logrusHook struct {
	logger *log.Logger
	mu     sync.Mutex
	live   bool
	held   []string
}

func (*logrusHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *logrusHook) Fire(e *logrus.Entry) error {
	line := fmt.Sprintf("storage %s: %s", e.Level, oneLine(e.Message))
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.live {
		h.logger.Print(line)
	} else {
		h.held = append(h.held, line)
	}
	return nil
}

// flush logs what was held back and lets later messages through.
func (h *logrusHook) flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.held {
		h.logger.Print(l)
	}
	h.held, h.live = nil, true
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
