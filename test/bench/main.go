// Command imagefs-bench measures imagefs against the kernel's overlayfs,
// fuse-overlayfs and the podman CLI, as issue 5 asks, and prints one table
// (also written as CSV and Markdown). See docs/PERFORMANCE.md.
//
//	go run ./test/bench [flags]        (make bench; BENCH_FLAGS=... for flags)
//
// It builds two containers/storage overlay stores once and keeps them in a
// cache directory: "real" (a Debian minbase root file system made with
// mmdebstrap, a layer with GOROOT, a layer deleting directories) and
// "scale" (1000 images over 3000 layers with many names, plus an image with
// 200k entries). Each workload runs on three views of the same image,
// interleaved, several times; the table shows medians.
//
// It needs root, /dev/fuse, fuse-overlayfs, podman and mmdebstrap.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"

	"go.podman.io/storage/pkg/reexec"
)

type config struct {
	cacheDir    string
	workDir     string
	imagefsBin  string
	quick       bool
	reps        int
	coldReps    int
	dropCaches  bool
	scaleImages int
	hugeEntries int
	goroot      string
	suite       string
	debianTar   string
	csvPath     string
	mdPath      string
	docPath     string
	only        *regexp.Regexp
	profileDir  string
	rebuild     bool
	timeout     time.Duration
}

func defaultCacheDir() string {
	if d := os.Getenv("IMAGEFS_BENCH_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "imagefs-bench")
	}
	return filepath.Join(os.TempDir(), "imagefs-bench")
}

func defaultGoroot() string {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if g := strings.TrimSpace(string(out)); g != "" {
			return g
		}
	}
	return "/usr/local/go"
}

func parseFlags(args []string) (*config, error) {
	cfg := &config{}
	fs := flag.NewFlagSet("imagefs-bench", flag.ContinueOnError)
	fs.StringVar(&cfg.cacheDir, "cache", defaultCacheDir(), "where the benchmark stores are kept between runs ($IMAGEFS_BENCH_CACHE)")
	fs.StringVar(&cfg.workDir, "work", "", "mount points and scratch files (default: CACHE/work)")
	fs.StringVar(&cfg.imagefsBin, "imagefs", os.Getenv("IMAGEFS_BIN"), "the imagefs binary ($IMAGEFS_BIN; default bin/imagefs)")
	fs.BoolVar(&cfg.quick, "quick", false, "small stores (no mmdebstrap, part of GOROOT, 12 images), 1 repetition, no cache dropping: checks the harness, measures nothing")
	reps := fs.Int("reps", 0, "warm repetitions per view (default 5, quick 1)")
	coldReps := fs.Int("cold-reps", 0, "cold repetitions per view (default 3, quick 1)")
	drop := fs.String("drop-caches", "", "drop the kernel caches before cold runs: true/false (default true, quick false)")
	fs.IntVar(&cfg.scaleImages, "scale-images", 0, "images in the scale store (default 1000, quick 12)")
	fs.IntVar(&cfg.hugeEntries, "huge-entries", 0, "entries of the big image's rootfs (default 200000, quick 1000)")
	fs.StringVar(&cfg.goroot, "goroot", defaultGoroot(), "the Go tree copied into the second layer")
	fs.StringVar(&cfg.suite, "suite", hostSuite(), "Debian suite for mmdebstrap (default: the machine's)")
	fs.StringVar(&cfg.debianTar, "debian-tar", "", "use this root file system tarball instead of running mmdebstrap")
	fs.StringVar(&cfg.csvPath, "csv", "bench-results.csv", "write the results as CSV here")
	fs.StringVar(&cfg.mdPath, "markdown", "bench-results.md", "write the results as a Markdown table here")
	fs.StringVar(&cfg.docPath, "update-doc", "", "replace the generated section of this file (docs/PERFORMANCE.md) with the results")
	only := fs.String("only", "", "run only the workloads whose id matches this regexp (ids are in the CSV)")
	fs.StringVar(&cfg.profileDir, "cpuprofile", "", "directory for imagefs CPU profiles, one per mount (imagefs mount --cpuprofile)")
	fs.BoolVar(&cfg.rebuild, "rebuild", false, "rebuild the benchmark stores even when cached")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Minute, "limit for one command")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	pick := func(v, full, quick int) int {
		switch {
		case v > 0:
			return v
		case cfg.quick:
			return quick
		}
		return full
	}
	cfg.reps = pick(*reps, 5, 1)
	cfg.coldReps = pick(*coldReps, 3, 1)
	cfg.scaleImages = pick(cfg.scaleImages, 1000, 12)
	cfg.hugeEntries = pick(cfg.hugeEntries, 200000, 1000)
	switch *drop {
	case "":
		cfg.dropCaches = !cfg.quick
	case "true", "1", "yes":
		cfg.dropCaches = true
	case "false", "0", "no":
	default:
		return nil, fmt.Errorf("-drop-caches: want true or false, got %q", *drop)
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			return nil, fmt.Errorf("-only: %w", err)
		}
		cfg.only = re
	}
	if cfg.workDir == "" {
		cfg.workDir = filepath.Join(cfg.cacheDir, "work")
	}
	if cfg.imagefsBin == "" {
		cfg.imagefsBin = "bin/imagefs"
	}
	var err error
	for _, p := range []*string{&cfg.cacheDir, &cfg.workDir, &cfg.imagefsBin} {
		if *p, err = filepath.Abs(*p); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

var logOut io.Writer = os.Stderr

func logf(format string, args ...any) {
	fmt.Fprintf(logOut, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func main() {
	if reexec.Init() {
		return
	}
	runHelper()
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "imagefs-bench: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "imagefs-bench: %v\n", err)
		os.Exit(1)
	}
}

// checkMachine refuses to start without what the benchmark needs.
func checkMachine(cfg *config) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (kernel overlay mounts, dropping caches, the store's layers)")
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("FUSE is not usable: %w", err)
	}
	f.Close()
	for _, c := range []string{"fuse-overlayfs", "fusermount3", "podman", "find", "du", "ls", "tar", "grep", "xargs", "cat", "wc", "cut", "sh"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("%s is not installed", c)
		}
	}
	if st, err := os.Stat(cfg.imagefsBin); err != nil || st.IsDir() {
		return fmt.Errorf("no imagefs binary at %s: run make build, or give --imagefs / IMAGEFS_BIN", cfg.imagefsBin)
	}
	if st, err := os.Stat(filepath.Join(cfg.goroot, "VERSION")); err != nil || st.IsDir() {
		return fmt.Errorf("%s does not look like a Go tree (no VERSION file); give --goroot", cfg.goroot)
	}
	return nil
}

func (c *config) want(id string) bool { return c.only == nil || c.only.MatchString(id) }

// run builds (or reuses) the stores, runs every workload and writes the
// results; it returns them for the smoke test.
func run(ctx context.Context, cfg *config, out io.Writer) ([]*result, error) {
	if err := checkMachine(cfg); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.cacheDir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockCache(ctx, cfg.cacheDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := removeTree(cfg.workDir); err != nil { // a killed run's leftovers
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.workDir, "mnt"), 0o755); err != nil {
		return nil, err
	}
	if cfg.profileDir != "" {
		if err := os.MkdirAll(cfg.profileDir, 0o755); err != nil {
			return nil, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	real, err := buildRealStore(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("real store: %w", err)
	}
	scale, err := buildScaleStore(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("scale store: %w", err)
	}
	r := &runner{ctx: ctx, cfg: cfg}
	mnt := func(name string) string { return filepath.Join(cfg.workDir, "mnt", name) }
	logPath := func(name string) string { return filepath.Join(cfg.workDir, name+".log") }
	runDir := filepath.Join(cfg.workDir, "run")

	var mounted []view
	defer func() { unmountAll(mounted) }()

	// The real image on three views.
	img := real.Images[0]
	realViews := []view{
		&kernelView{mnt: mnt("real-kernel"), lowers: real.diffDirs(img)},
		fuseOverlayView(mnt("real-fuse-overlayfs"), real.diffDirs(img), logPath("real-fuse-overlayfs")),
		&imagefsView{bin: cfg.imagefsBin, mnt: mnt("real-imagefs"), graph: real.Graph, run: real.Run,
			sub: filepath.Join("images", img.ID, "rootfs"), log: logPath("real-imagefs"), runDir: runDir, profileDir: cfg.profileDir},
	}
	logf("image %s (%s): mounting the three views", img.ID[:12], realImageName)
	if err := mountAll(realViews); err != nil {
		return nil, err
	}
	mounted = realViews
	tree, notes, same, err := compareTrees(realViews)
	if err != nil {
		return nil, err
	}
	fl, err := makeLists(cfg.workDir, tree, 4)
	if err != nil {
		return nil, err
	}
	r.treeCheck("tree-check", len(tree), notes, same)
	floor := floorView(self, mnt("real-floor"), real.diffDirs(img), logPath("real-floor"))
	mounted = append(mounted, floor)
	for _, w := range rootfsWorkloads(fl, self, sizeMB(tree, fl.largest)) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !cfg.want(w.id) {
			continue
		}
		if w.floor {
			r.compare(w, append(realViews, floor))
			_ = floor.unmount()
		} else {
			r.compare(w, realViews)
		}
	}
	unmountAll(mounted)
	mounted = nil
	r.results = dropEmpty(r.results)

	// The huge image and the scale store.
	huge := *scale.Huge
	scaleView := &imagefsView{bin: cfg.imagefsBin, mnt: mnt("scale-imagefs"), graph: scale.Graph, run: scale.Run,
		sub: filepath.Join("images", huge.ID, "rootfs"), log: logPath("scale-imagefs"), runDir: runDir, profileDir: cfg.profileDir}
	hugeViews := []view{
		&kernelView{mnt: mnt("huge-kernel"), lowers: scale.diffDirs(huge)},
		fuseOverlayView(mnt("huge-fuse-overlayfs"), scale.diffDirs(huge), logPath("huge-fuse-overlayfs")),
		scaleView,
	}
	logf("image %s (%s, %d entries): mounting the three views", huge.ID[:12], hugeImageName, cfg.hugeEntries)
	if err := mountAll(hugeViews); err != nil {
		return nil, err
	}
	mounted = hugeViews
	if cfg.want("huge-tree-check") {
		tree, notes, same, err := compareTrees(hugeViews)
		if err != nil {
			return nil, err
		}
		r.treeCheck("huge-tree-check", len(tree), notes, same)
	}
	for _, w := range hugeWorkloads(cfg.hugeEntries) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if cfg.want(w.id) {
			r.compare(w, hugeViews)
		}
	}
	unmountAll(hugeViews[:2])
	mounted = []view{scaleView}

	pm, err := newPodman(scale, filepath.Join(cfg.workDir, "podman"))
	if err != nil {
		return nil, err
	}
	logf("scale store: %d images, %d layers, %d names", len(scale.Images), scale.Layers, scale.Names)
	r.scaleBench(scaleView, scale, pm)
	unmountAll(mounted)
	mounted = nil
	if cfg.want("mount-first-stat") {
		r.mountFirstStat(scaleView, scale)
	}
	r.results = dropEmpty(r.results)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	// Report.
	fmt.Fprintln(out)
	printTable(out, r.results)
	info := machineInfo(cfg, real, scale, time.Since(start))
	fmt.Fprintln(out)
	fmt.Fprint(out, info)
	if cfg.csvPath != "" {
		if err := writeCSV(cfg.csvPath, r.results); err != nil {
			return r.results, err
		}
		logf("wrote %s", cfg.csvPath)
	}
	md := markdownTable(r.results) + "\n" + info
	if cfg.mdPath != "" {
		if err := os.WriteFile(cfg.mdPath, []byte(md), 0o644); err != nil {
			return r.results, err
		}
		logf("wrote %s", cfg.mdPath)
	}
	if cfg.docPath != "" {
		if err := updateDoc(cfg.docPath, md); err != nil {
			return r.results, err
		}
		logf("updated %s", cfg.docPath)
	}
	return r.results, nil
}

// lockCache takes the cache directory for this run: two runs on one
// cache would rebuild each other's stores and unmount each other's views
// (and their timings would disturb each other anyway). A second run waits.
func lockCache(ctx context.Context, dir string) (func(), error) {
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		other, _ := os.ReadFile(path)
		logf("another imagefs-bench run (pid %s) is using %s; waiting for it to finish (or use --cache)", strings.TrimSpace(string(other)), dir)
		locked := make(chan error, 1)
		go func() { locked <- syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }()
		select {
		case err := <-locked:
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("locking %s: %w", path, err)
			}
		case <-ctx.Done():
			f.Close() // the blocked flock ends with the process
			return nil, ctx.Err()
		}
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(fmt.Sprintf("%d\n", os.Getpid())), 0)
	}
	return func() { f.Close() }, nil
}

// dropEmpty removes the rows --only filtered out of the single-view
// benchmarks (they are created before the filter is known).
func dropEmpty(rs []*result) []*result {
	var out []*result
	for _, r := range rs {
		if len(r.wall) > 0 || len(r.errs) > 0 || len(r.notes) > 0 || r.rssMB > 0 || r.verdict != "" {
			out = append(out, r)
		}
	}
	return out
}

// machineInfo describes the machine and the run, for the report.
func machineInfo(cfg *config, real, scale *storeInfo, took time.Duration) string {
	var b strings.Builder
	// first returns the first line of argv's output that contains want.
	first := func(want string, argv ...string) string {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return argv[0] + " (version unknown)"
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, want) {
				return strings.TrimSpace(line)
			}
		}
		return argv[0] + " (version unknown)"
	}
	cpu := "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := "unknown"
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(data), "\n")
		mem = strings.Join(strings.Fields(strings.TrimPrefix(line, "MemTotal:")), " ")
	}
	var uts syscall.Utsname
	kernel := "unknown"
	if syscall.Uname(&uts) == nil {
		var s []byte
		for _, c := range uts.Release {
			if c == 0 {
				break
			}
			s = append(s, byte(c))
		}
		kernel = string(s)
	}
	fsType := "unknown"
	if ms, err := readMounts(); err == nil {
		best := ""
		for _, m := range ms {
			if (strings.HasPrefix(cfg.cacheDir, m.point+"/") || cfg.cacheDir == m.point || m.point == "/") && len(m.point) >= len(best) {
				best, fsType = m.point, m.fstype
			}
		}
	}
	mode := "full"
	if cfg.quick {
		mode = "quick (harness check only, figures meaningless)"
	}
	fmt.Fprintf(&b, "Run %s, %s mode, %d warm / %d cold repetitions per view (%d× for runs under %v), medians; caches dropped before cold runs: %v; took %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), mode, cfg.reps, cfg.coldReps, fastRunFactor, fastRun, cfg.dropCaches, took.Round(time.Second))
	fmt.Fprintf(&b, "- machine: %s, %d CPUs, %s RAM, kernel %s, stores on %s\n", cpu, runtime.NumCPU(), mem, kernel, fsType)
	fmt.Fprintf(&b, "- %s; %s; %s; %s\n", first("imagefs", cfg.imagefsBin, "--version"), first("fuse-overlayfs: version", "fuse-overlayfs", "--version"), first("version", "podman", "--version"), runtime.Version())
	fmt.Fprintf(&b, "- real store: %s, %d layers (%s)\n", realImageName, real.Layers, real.Key)
	fmt.Fprintf(&b, "- scale store: %d images, %d layers, %d names; %s has %d entries (%s)\n",
		len(scale.Images), scale.Layers, scale.Names, hugeImageName, cfg.hugeEntries, scale.Key)
	return b.String()
}

// runHelper runs the helper this binary was run again as (workloads and
// views exec it), and exits; otherwise it returns.
func runHelper() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case "randread":
		os.Exit(randreadMain(os.Args[2:]))
	case "serve-floor":
		os.Exit(floorMain(os.Args[2:]))
	}
}

// randreadMain is the "randread" helper: 4 KiB reads at random 4 KiB
// aligned offsets of the given files (weighted by size), with a fixed seed
// so every view reads the same blocks. It prints the bytes read.
func randreadMain(args []string) int {
	fs := flag.NewFlagSet("randread", flag.ContinueOnError)
	n := fs.Int("n", 4000, "reads")
	seed := fs.Uint64("seed", 1, "random seed")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	type file struct {
		f    *os.File
		size int64
	}
	var files []file
	var total int64
	for _, p := range fs.Args() {
		f, err := os.Open(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		st, err := f.Stat()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		files = append(files, file{f, st.Size()})
		total += st.Size()
	}
	if total < 4096 {
		fmt.Fprintln(os.Stderr, "randread: files too small")
		return 1
	}
	rng := rand.New(rand.NewPCG(*seed, *seed))
	buf := make([]byte, 4096)
	var read int64
	for range *n {
		off := rng.Int64N(total)
		for _, f := range files {
			if off < f.size {
				off = min(off&^4095, max(f.size-4096, 0))
				m, err := f.f.ReadAt(buf, off)
				if err != nil && err != io.EOF {
					fmt.Fprintln(os.Stderr, err)
					return 1
				}
				read += int64(m)
				break
			}
			off -= f.size
		}
	}
	fmt.Println(read)
	return 0
}
