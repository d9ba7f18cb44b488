package storageview

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"go.podman.io/storage"
)

// View is the store as imagefs sees it: an Index that follows the store's
// changes, the blobs and the documents derived from them. It implements
// nodes.Store. All methods are safe for concurrent use.
type View struct {
	store storage.Store
	opts  Options
	log   *log.Logger

	driver        string   // resolved graph driver name ("overlay", "vfs")
	graphRoot     string   // absolute
	imageStoreDir string   // storage.conf "imagestore", usually ""
	roRoots       []string // additional (read-only) image stores

	watch *watcher   // lock files whose last-writer tokens tell us the store changed
	probe *lockProbe // whether another process holds them for writing (lockwait.go)

	nativeOnce sync.Once // nativeDiff (layers.go)
	native     bool

	lastBuildErr string      // the rebuild error last logged (under refreshMu)
	storeGone    atomic.Bool // the last check found the store's records removed (build)

	// Index refresh: see refresh.go.
	cur        atomic.Pointer[Index]
	lastCheck  atomic.Int64 // monotonic nanoseconds of the last change check
	checkStart atomic.Int64 // when the check under refreshMu began (lockRefresh)
	// Invalidate bumps invalidated; a rebuild records in built the value it
	// started from. The fast path serves the current index only while they
	// match, so no caller gets an index older than its own Invalidate.
	invalidated atomic.Uint64
	built       atomic.Uint64
	refreshMu   sync.Mutex // one check or rebuild at a time
	gen         uint64     // generation of the last rebuild; under refreshMu
	rebuilds    int        // store records read, for tests; under refreshMu

	cache cache // derived data: see cache.go

	// ourMounts counts the MountImage calls not yet undone, per image:
	// Close undoes exactly these and never touches mounts made by podman.
	mountsMu  sync.Mutex
	ourMounts map[string]int

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// errClosed is returned by reads after Close.
var errClosed = errors.New("the image store is closed")

// Open opens the store podman would open (storage.DefaultStoreOptions:
// containers-storage.conf, CONTAINERS_STORAGE_CONF) with the fields of o
// that are set taking precedence, and builds the first Index.
//
// containers/storage hands out one store object per (graph root, run root)
// in a process: open a store once and Close it when done.
func Open(o Options) (*View, error) {
	logger := o.Log
	if logger == nil {
		logger = log.Default()
	}
	so, err := storeOptions(o)
	if err != nil {
		return nil, err
	}
	if err := followRecordedDriver(&so, o.Driver != "", logger); err != nil {
		return nil, err
	}
	skipMountHome(&so)
	st, err := storage.GetStore(so)
	if err != nil {
		return nil, fmt.Errorf("opening the %s store at %s: %w", driverOrDefault(so.GraphDriverName), so.GraphRoot, err)
	}
	v := &View{
		store:         st,
		opts:          o,
		log:           logger,
		driver:        st.GraphDriverName(),
		graphRoot:     st.GraphRoot(),
		imageStoreDir: st.ImageStore(),
	}
	drv, err := st.GraphDriver()
	if err != nil {
		v.shutdown()
		return nil, fmt.Errorf("starting the %s driver at %s: %w", driverOrDefault(so.GraphDriverName), so.GraphRoot, err)
	}
	for _, r := range drv.AdditionalImageStores() {
		if abs, err := filepath.Abs(r); err == nil {
			r = abs
		}
		v.roRoots = append(v.roRoots, r)
	}
	v.cache.init()
	v.watch = newWatcher(v.lockFiles())
	v.watch.changed() // record the tokens the first build sees
	v.probe = newLockProbe(v.writableLocks())
	ix, err := v.build(1)
	if err != nil {
		v.watch.close()
		v.probe.close()
		v.shutdown()
		return nil, fmt.Errorf("reading the store at %s: %w", v.graphRoot, err)
	}
	v.gen = 1
	v.cur.Store(ix)
	v.lastCheck.Store(nanotime())
	return v, nil
}

// storeOptions is the store configuration Open uses: podman's
// (containers-storage.conf), with what o gives replacing it.
func storeOptions(o Options) (storage.StoreOptions, error) {
	so, err := storage.DefaultStoreOptions()
	if err != nil {
		return so, fmt.Errorf("reading the storage configuration: %w", err)
	}
	if o.GraphRoot != "" {
		so.GraphRoot = o.GraphRoot
	}
	so.RunRoot = podmanRunRoot(so.RunRoot, os.Geteuid(), os.TempDir())
	if o.RunRoot != "" {
		so.RunRoot = o.RunRoot
	}
	if o.Driver != "" {
		so.GraphDriverName = o.Driver
	}
	if len(o.DriverOptions) > 0 {
		// As podman's --storage-opt: the options given replace the configured ones.
		so.GraphDriverOptions = append([]string(nil), o.DriverOptions...)
	}
	if so.GraphRoot == "" || so.RunRoot == "" {
		return so, errors.New("no storage root or run root configured (set --root and --runroot)")
	}
	return so, nil
}

// podmanRunRoot is the run root podman 4.3 uses for a user without
// XDG_RUNTIME_DIR (and no /run/user/<uid>): its containers/storage named
// that fallback <tmp>/podman-run-<uid>, ours names it storage-run-<uid>.
// Another run root would keep podman's records of mounted layers and its
// locks on them apart from ours: a layer podman has mounted could go.
func podmanRunRoot(runRoot string, uid int, tmp string) string {
	if uid == 0 || runRoot != filepath.Join(tmp, fmt.Sprintf("storage-run-%d", uid), "containers") {
		return runRoot
	}
	return filepath.Join(tmp, fmt.Sprintf("podman-run-%d", uid), "containers")
}

// skipMountHome keeps the overlay driver from making its home a private
// bind mount when this process is not root: podman does that as root of
// its user namespace, and outside one it fails (EPERM), so a rootless
// overlay store could not be opened at all. imagefs reads layers where
// they lie and mounts none.
func skipMountHome(so *storage.StoreOptions) {
	if os.Geteuid() == 0 || so.GraphDriverName != "overlay" && so.GraphDriverName != "" {
		return
	}
	for _, opt := range so.GraphDriverOptions {
		if strings.HasPrefix(opt, "overlay.skip_mount_home=") || strings.HasPrefix(opt, "skip_mount_home=") {
			return
		}
	}
	so.GraphDriverOptions = append(slices.Clone(so.GraphDriverOptions), "overlay.skip_mount_home=true")
}

// followRecordedDriver makes so use the driver whose records the graph
// root holds when that is not the driver so names: podman remembers the
// driver a store was made with and opens it with that one when none is
// asked for, so a store made with --storage-driver vfs shows its images
// under a configuration that says overlay. Opened with the configured
// driver instead, the store would look empty and get that driver's
// directories. A driver asked for explicitly that the store has no
// records of is refused, as podman refuses it.
func followRecordedDriver(so *storage.StoreOptions, explicit bool, logger *log.Logger) error {
	recorded := recordedDrivers(so.GraphRoot)
	if so.GraphDriverName == "" {
		// containers/storage would pick by priority and never vfs, and
		// give up on several; podman 4.3's picked overlay first.
		switch {
		case len(recorded) == 1:
			so.GraphDriverName = recorded[0]
		case slices.Contains(recorded, "overlay"):
			so.GraphDriverName = "overlay"
		}
		return nil
	}
	if len(recorded) == 0 || slices.Contains(recorded, so.GraphDriverName) {
		return nil
	}
	if explicit || len(recorded) > 1 {
		return fmt.Errorf("the store at %s holds images of the %s driver, none of %s: give --storage-driver %s",
			so.GraphRoot, strings.Join(recorded, " and "), so.GraphDriverName, recorded[0])
	}
	logger.Printf("storageview: the store at %s holds images of the %s driver, none of %s (configured): using %s, as podman does",
		so.GraphRoot, recorded[0], so.GraphDriverName, recorded[0])
	so.GraphDriverName = recorded[0]
	return nil
}

// recordedDrivers lists, sorted, the drivers whose image or layer records
// (<driver>-images/images.json, <driver>-layers/layers.json) are in root.
func recordedDrivers(root string) []string {
	var drivers []string
	for _, kind := range []string{"images", "layers"} {
		found, _ := filepath.Glob(filepath.Join(root, "*-"+kind, kind+".json"))
		for _, f := range found {
			d := strings.TrimSuffix(filepath.Base(filepath.Dir(f)), "-"+kind)
			if !slices.Contains(drivers, d) {
				drivers = append(drivers, d)
			}
		}
	}
	slices.Sort(drivers)
	return drivers
}

// StoreDir is a directory of the store: what it is ("graph root") and
// where.
type StoreDir struct{ What, Path string }

// StoreDirs returns the directories the store that Open(o) opens keeps
// its data in, the graph root first, without opening it.
func StoreDirs(o Options) ([]StoreDir, error) {
	so, err := storeOptions(o)
	if err != nil {
		return nil, err
	}
	dirs := []StoreDir{{"graph root", so.GraphRoot}, {"run root", so.RunRoot}}
	if so.ImageStore != "" {
		dirs = append(dirs, StoreDir{"image store", so.ImageStore})
	}
	for _, opt := range so.GraphDriverOptions {
		// "overlay.imagestore=…" from --storage-opt, "imagestore=…" from
		// storage.conf's additionalimagestores.
		key, val, _ := strings.Cut(opt, "=")
		if i := strings.LastIndexByte(key, '.'); i >= 0 {
			key = key[i+1:]
		}
		if (key == "imagestore" || key == "additionalimagestore") && val != "" {
			for _, p := range strings.Split(val, ",") {
				dirs = append(dirs, StoreDir{"additional image store", p})
			}
		}
	}
	return dirs, nil
}

func driverOrDefault(name string) string {
	if name == "" {
		return "default"
	}
	return name
}

// Store returns the underlying containers/storage store, for the mutations
// in this package.
func (v *View) Store() storage.Store { return v.store }

// Options returns the options the view was opened with.
func (v *View) Options() Options { return v.opts }

// Driver returns the graph driver's name ("overlay", "vfs", …).
func (v *View) Driver() string { return v.driver }

// Close shuts the store down: it undoes the image mounts this view made,
// lets the driver clean up (the overlay driver's private bind mount of its
// home goes when no layer is mounted), releases the store and forgets it,
// so the next Open starts afresh. The view must not be used afterwards.
func (v *View) Close() error {
	v.closeOnce.Do(func() {
		v.stopFollowing() // watch_inotify.go: the live-refresh goroutine, if any
		// After this, Index serves the last snapshot and never touches the
		// store again: a late FUSE call must not bring the driver (and
		// its mounts) back.
		v.refreshMu.Lock()
		v.closed.Store(true)
		if v.watch != nil {
			v.watch.close()
			v.probe.close()
		}
		v.refreshMu.Unlock()
		v.closeErr = v.shutdown()
	})
	return v.closeErr
}

// shutdown never forces: Shutdown(true) would unmount every mounted layer
// of the store, the root filesystems of running containers included. A
// store still holding other users' mounts is left to them, as podman does.
func (v *View) shutdown() error {
	v.unmountOurs()
	_, err := v.store.Shutdown(false)
	v.store.Free()
	if errors.Is(err, storage.ErrLayerUsedByContainer) {
		v.log.Printf("imagefs: store left to its other users: %v", err)
		return nil
	}
	if errors.Is(err, syscall.EPERM) && os.Geteuid() != 0 {
		return nil // the overlay driver's umount of the home it did not mount (skipMountHome), its last step
	}
	if err != nil {
		return fmt.Errorf("shutting the store down: %w", err)
	}
	return nil
}

// lockFiles lists the lock files a writer of any of the store's records
// (images, layers, containers; primary and additional stores) records its
// last-writer token in.
func (v *View) lockFiles() []string {
	roots := append(v.writableRoots(), v.roRoots...)
	var files []string
	for _, kind := range []string{"images", "layers"} {
		for _, r := range roots {
			files = append(files, v.recordLock(r, kind))
		}
	}
	files = append(files, v.containersLock())
	if v.store.TransientStore() { // podman 4.3's containers (transient.go)
		files = append(files, v.recordLock(v.graphRoot, "containers"))
	}
	return files
}

// writableRoots are the roots of the writable store's records and
// layers: the graph root, and storage.conf's imagestore when one is set.
func (v *View) writableRoots() []string {
	if v.imageStoreDir != "" {
		return []string{v.graphRoot, v.imageStoreDir}
	}
	return []string{v.graphRoot}
}

// writableLocks are the lock files of the writable store's records, which
// containers/storage opens read-write.
func (v *View) writableLocks() []string {
	return []string{v.recordLock(v.graphRoot, "images"), v.recordLock(v.graphRoot, "layers"), v.containersLock()}
}

// containersLock is the lock file of the containers' records: in the run
// root for transient stores.
func (v *View) containersLock() string {
	if v.store.TransientStore() {
		return v.recordLock(v.store.RunRoot(), "containers")
	}
	return v.recordLock(v.graphRoot, "containers")
}

// recordLock is the lock file of the records of one kind (images, layers,
// containers) under a store root.
func (v *View) recordLock(root, kind string) string {
	return filepath.Join(root, v.driver+"-"+kind, kind+".lock")
}
