package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// storeVersion is part of every cache key: change it when the content or
// shape of the benchmark stores changes, and old caches are rebuilt.
const storeVersion = "v1"

// benchImage is one image of a benchmark store.
type benchImage struct {
	ID     string   `json:"id"`
	Names  []string `json:"names,omitempty"`
	Layers []string `json:"layers,omitempty"` // store layer IDs, base first (only where a view needs them)
}

// storeInfo describes a built store; it is written last, so a directory
// without it is an interrupted build and is rebuilt.
type storeInfo struct {
	Key    string       `json:"key"`
	Graph  string       `json:"graph"`
	Run    string       `json:"run"`
	Images []benchImage `json:"images"`
	// Real store: Images[0] is the Debian + GOROOT image.
	// Scale store: Huge is the image with the big rootfs (also in Images).
	Huge    *benchImage `json:"huge,omitempty"`
	Layers  int         `json:"layers"`
	Names   int         `json:"names"`
	BuiltIn string      `json:"builtIn"` // how long the build took
}

// diffDirs returns the overlay diff directories of img, top layer first, as
// lowerdir= wants them.
func (si *storeInfo) diffDirs(img benchImage) []string {
	var dirs []string
	for i := len(img.Layers) - 1; i >= 0; i-- {
		dirs = append(dirs, filepath.Join(si.Graph, "overlay", img.Layers[i], "diff"))
	}
	return dirs
}

const infoFile = "info.json"

// runRootFor returns the run root (the store's volatile state) of the
// store at graph: short, because podman 4 refuses run roots longer than 50
// characters, and on /run, where volatile state belongs.
func runRootFor(graph string) string {
	sum := sha256.Sum256([]byte(graph))
	return filepath.Join("/run/imagefs-bench", hex.EncodeToString(sum[:6]))
}

// cachedStore returns the store in dir if it was built under key, else
// removes whatever is there and builds it with build.
func cachedStore(ctx context.Context, dir, key string, rebuild bool, build func(ctx context.Context, si *storeInfo, sh *storeHandle) error) (*storeInfo, error) {
	if !rebuild {
		if data, err := os.ReadFile(filepath.Join(dir, infoFile)); err == nil {
			var si storeInfo
			if json.Unmarshal(data, &si) == nil && si.Key == key {
				logf("using the cached store %s (%s)", dir, key)
				return &si, nil
			}
		}
	}
	if err := removeTree(dir); err != nil {
		return nil, err
	}
	logf("building the store %s (%s)", dir, key)
	start := time.Now()
	graph := filepath.Join(dir, "graph")
	si := &storeInfo{Key: key, Graph: graph, Run: runRootFor(graph)}
	if err := removeTree(si.Run); err != nil {
		return nil, err
	}
	sh, err := openStore(si.Graph, si.Run)
	if err != nil {
		return nil, err
	}
	berr := build(ctx, si, sh)
	if cerr := sh.close(); berr == nil && cerr != nil {
		berr = fmt.Errorf("closing the store: %w", cerr)
	}
	if berr != nil {
		return nil, berr
	}
	si.BuiltIn = time.Since(start).Round(time.Second).String()
	data, err := json.MarshalIndent(si, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, infoFile), data, 0o644); err != nil {
		return nil, err
	}
	logf("built %s in %s", dir, si.BuiltIn)
	return si, nil
}

// removeTree unmounts whatever is mounted below dir (a store left by a
// killed run keeps the driver's private mount) and removes it.
func removeTree(dir string) error {
	mounts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	for _, m := range mounts { // deepest first
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("unmounting %s: %w", m, err)
		}
	}
	return os.RemoveAll(dir)
}

// ---- the real store: Debian minbase + GOROOT + deletions ----

// realImageName is the name of the image of the real store.
const realImageName = "localhost/bench/debian-go:latest"

// goVersion reads the first line of GOROOT/VERSION.
func goVersion(goroot string) string {
	data, err := os.ReadFile(filepath.Join(goroot, "VERSION"))
	if err != nil {
		return "unknown"
	}
	v, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSpace(v)
}

// hostSuite is the Debian suite the machine runs (VERSION_CODENAME), which
// its apt sources serve.
func hostSuite() string {
	data, err := os.ReadFile("/etc/os-release")
	if err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "VERSION_CODENAME="); ok && v != "" {
				return strings.Trim(v, `"`)
			}
		}
	}
	return "bookworm"
}

// debianTar returns a Debian minbase root file system as a tarball, made
// once with mmdebstrap and kept in the cache.
func debianTar(ctx context.Context, cfg *config) (string, error) {
	if cfg.debianTar != "" {
		return cfg.debianTar, nil
	}
	path := filepath.Join(cfg.cacheDir, fmt.Sprintf("debian-%s-minbase-%s.tar", cfg.suite, storeVersion))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return "", errors.New("mmdebstrap is not installed (apt-get install mmdebstrap), or give --debian-tar")
	}
	logf("making a Debian %s minbase root file system with mmdebstrap (once; about 2 minutes)", cfg.suite)
	tmp := path + ".tmp.tar"
	cmd := exec.CommandContext(ctx, "mmdebstrap", "--variant=minbase", "--quiet",
		"--skip=output/dev", cfg.suite, tmp)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("mmdebstrap %s: %w", cfg.suite, err)
	}
	return path, os.Rename(tmp, path)
}

// quickGoroot is the part of GOROOT the quick mode puts in its Go layer
// (the full mode takes it all): the directories the deletion layer
// removes, some sources, and one big binary for the large-file reads.
var quickGoroot = []string{"VERSION", "CONTRIBUTING.md", "api", "misc", "doc", "src/fmt", "src/strings", "test/ken", "pkg/tool/linux_amd64/vet"}

func buildRealStore(ctx context.Context, cfg *config) (*storeInfo, error) {
	gover := goVersion(cfg.goroot)
	base := cfg.suite
	if cfg.quick {
		base = "synthetic"
	}
	key := strings.Join([]string{"real", storeVersion, base, gover, fmt.Sprint(cfg.quick)}, "-")
	dir := filepath.Join(cfg.cacheDir, "real-"+base)
	return cachedStore(ctx, dir, key, cfg.rebuild, func(ctx context.Context, si *storeInfo, sh *storeHandle) error {
		l, err := newLayout(filepath.Join(dir, "layout"))
		if err != nil {
			return err
		}
		defer os.RemoveAll(l.dir)

		var layers [3]blob
		history := []string{"mmdebstrap --variant=minbase " + cfg.suite, "COPY GOROOT /usr/local/go", "RUN rm -rf (whiteouts and opaque directories)"}
		if cfg.quick {
			history[0] = "synthetic base"
			layers[0], err = l.writeBlob(func(w io.Writer) error { return writeEntries(w, syntheticBase()) })
		} else {
			var path string
			if path, err = debianTar(ctx, cfg); err == nil {
				layers[0], err = l.linkBlob(path)
			}
		}
		if err != nil {
			return fmt.Errorf("base layer: %w", err)
		}
		logf("writing the GOROOT layer from %s", cfg.goroot)
		layers[1], err = l.writeBlob(func(w io.Writer) error { return gorootLayer(w, cfg) })
		if err != nil {
			return fmt.Errorf("GOROOT layer: %w", err)
		}
		layers[2], err = l.writeBlob(func(w io.Writer) error { return writeEntries(w, deletionLayer()) })
		if err != nil {
			return fmt.Errorf("deletion layer: %w", err)
		}
		id, err := l.addImage(imageSpec{ref: "real", layers: layers[:], history: history, cmd: []string{"/bin/bash"}})
		if err != nil {
			return err
		}
		if err := l.finish(); err != nil {
			return err
		}
		logf("importing the image into the store")
		if err := sh.importImage(ctx, l.dir, "real", id, []string{realImageName}); err != nil {
			return err
		}
		chain, err := sh.layerChain(id)
		if err != nil {
			return err
		}
		si.Images = []benchImage{{ID: id, Names: []string{realImageName}, Layers: chain}}
		si.Layers, si.Names = len(chain), 1
		return nil
	})
}

// gorootLayer writes GOROOT as usr/local/go (in quick mode only the
// quickGoroot parts).
func gorootLayer(w io.Writer, cfg *config) error {
	tw := tar.NewWriter(w)
	for _, d := range []string{"usr", "usr/local"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	var keep func(rel string, d fs.DirEntry) bool
	if cfg.quick {
		keep = func(rel string, d fs.DirEntry) bool {
			if rel == "" {
				return true
			}
			for _, k := range quickGoroot {
				// rel is inside k, or a parent directory of k.
				if rel == k || strings.HasPrefix(rel, k+"/") || strings.HasPrefix(k, rel+"/") {
					return true
				}
			}
			return false
		}
	}
	if err := tarTree(tw, cfg.goroot, "usr/local/go", keep); err != nil {
		return err
	}
	return tw.Close()
}

// deletionLayer removes a few big directories of the layers below with
// whiteouts, makes two directories opaque, deletes a file and replaces a
// symlink by a file.
func deletionLayer() []tarEntry {
	dir := func(name string) tarEntry { return tarEntry{name: name, typ: tar.TypeDir, mode: 0o755} }
	file := func(name, content string) tarEntry {
		return tarEntry{name: name, typ: tar.TypeReg, mode: 0o644, content: []byte(content)}
	}
	return []tarEntry{
		dir("etc"),
		file("etc/os-release", "PRETTY_NAME=\"imagefs benchmark image\"\nID=debian\n"),
		dir("usr"),
		dir("usr/local"),
		dir("usr/local/go"),
		file("usr/local/go/.wh.test", ""),            // 3.7k entries
		file("usr/local/go/.wh.api", ""),             // 9 MB
		file("usr/local/go/.wh.CONTRIBUTING.md", ""), // a file
		dir("usr/local/go/misc"),
		file("usr/local/go/misc/.wh..wh..opq", ""),
		file("usr/local/go/misc/README.bench", "misc/ is opaque in this layer\n"),
		dir("usr/share"),
		file("usr/share/.wh.locale", ""),
		file("usr/share/.wh.man", ""),
		dir("usr/share/doc"),
		file("usr/share/doc/.wh..wh..opq", ""),
		file("usr/share/doc/README.bench", "doc/ is opaque in this layer\n"),
	}
}

// syntheticBase stands in for the Debian layer in quick mode: a few hundred
// entries shaped like a distribution (usrmerge symlinks, docs, locales, man
// pages, a couple of bigger files).
func syntheticBase() []tarEntry {
	var es []tarEntry
	dir := func(name string, mode int64) { es = append(es, tarEntry{name: name, typ: tar.TypeDir, mode: mode}) }
	file := func(name string, size int) {
		es = append(es, tarEntry{name: name, typ: tar.TypeReg, mode: 0o644, content: filler(name, size)})
	}
	link := func(name, target string) {
		es = append(es, tarEntry{name: name, typ: tar.TypeSymlink, mode: 0o777, linkname: target})
	}
	link("bin", "usr/bin")
	link("lib", "usr/lib")
	dir("etc", 0o755)
	for i := range 30 {
		file(fmt.Sprintf("etc/conf%02d", i), 100+i*37)
	}
	link("etc/os-release", "../usr/lib/os-release")
	dir("tmp", 0o1777)
	dir("usr", 0o755)
	dir("usr/bin", 0o755)
	for i := range 40 {
		file(fmt.Sprintf("usr/bin/tool%02d", i), 1000+i*1500)
	}
	dir("usr/lib", 0o755)
	es = append(es, tarEntry{name: "usr/lib/os-release", typ: tar.TypeReg, mode: 0o644, content: []byte("ID=synthetic\n")})
	file("usr/lib/libbig.so", 3<<20)
	dir("usr/share", 0o755)
	for _, sub := range []string{"doc", "locale", "man"} {
		dir("usr/share/"+sub, 0o755)
	}
	for i := range 20 {
		d := fmt.Sprintf("usr/share/doc/pkg%02d", i)
		dir(d, 0o755)
		file(d+"/copyright", 500)
		file(d+"/changelog", 3000)
	}
	for _, lang := range []string{"de", "fr", "ja", "pt_BR"} {
		d := "usr/share/locale/" + lang + "/LC_MESSAGES"
		dir("usr/share/locale/"+lang, 0o755)
		dir(d, 0o755)
		for i := range 5 {
			file(fmt.Sprintf("%s/pkg%d.mo", d, i), 2000)
		}
	}
	dir("usr/share/man/man1", 0o755)
	for i := range 20 {
		file(fmt.Sprintf("usr/share/man/man1/tool%02d.1.gz", i), 800)
	}
	dir("var", 0o755)
	dir("var/lib", 0o755)
	return es
}

// filler is deterministic content of size bytes, text with an occasional
// "func main" for grep to find.
func filler(name string, size int) []byte {
	line := []byte("// " + name + ": imagefs benchmark filler; func main() {}\n")
	b := make([]byte, 0, size)
	for len(b) < size {
		b = append(b, line...)
	}
	return b[:size]
}

// ---- the scale store: many images, layers and names; one huge rootfs ----

const (
	scaleBases     = 10 // shared base layers
	scaleOwnLayers = 3  // layers of each image above its base
)

// scaleNames returns the names of scale image i: one to three names over
// several registries; every 97th image has none (dangling).
func scaleNames(i int) []string {
	if i%97 == 96 {
		return nil
	}
	names := []string{fmt.Sprintf("localhost/scale/app%d:v%d", i%100, i)}
	if i%3 == 0 {
		names = append(names, fmt.Sprintf("docker.io/bench/svc-%d:latest", i))
	}
	if i%5 == 0 {
		names = append(names, fmt.Sprintf("quay.io/bench/tools/tool%d:%d.0", i%50, i))
	}
	if i%7 == 0 {
		names = append(names, fmt.Sprintf("registry.example.com:5000/team%d/app:%d", i%10, i))
	}
	return names
}

const hugeImageName = "localhost/bench/huge:latest"

func buildScaleStore(ctx context.Context, cfg *config) (*storeInfo, error) {
	key := strings.Join([]string{"scale", storeVersion, fmt.Sprint(cfg.scaleImages), fmt.Sprint(cfg.hugeEntries)}, "-")
	dir := filepath.Join(cfg.cacheDir, fmt.Sprintf("scale-%d", cfg.scaleImages))
	return cachedStore(ctx, dir, key, cfg.rebuild, func(ctx context.Context, si *storeInfo, sh *storeHandle) error {
		l, err := newLayout(filepath.Join(dir, "layout"))
		if err != nil {
			return err
		}
		defer os.RemoveAll(l.dir)

		n := cfg.scaleImages
		// Layer tarballs, generated in parallel: bases, then each image's
		// own layers, then the two halves of the huge rootfs.
		type job struct {
			idx     int
			entries func() []tarEntry
		}
		var jobs []job
		for b := range scaleBases {
			jobs = append(jobs, job{len(jobs), func() []tarEntry { return scaleBase(b) }})
		}
		for i := range n {
			for k := range scaleOwnLayers {
				jobs = append(jobs, job{len(jobs), func() []tarEntry { return scaleLayer(i, k) }})
			}
		}
		half := cfg.hugeEntries / 2
		jobs = append(jobs, job{len(jobs), func() []tarEntry { return hugeLayer(0, half) }})
		jobs = append(jobs, job{len(jobs), func() []tarEntry { return hugeLayer(1, cfg.hugeEntries-half) }})

		logf("writing %d layer tarballs", len(jobs))
		blobs := make([]blob, len(jobs))
		errs := make([]error, len(jobs))
		ch := make(chan job)
		var wg sync.WaitGroup
		for range runtime.NumCPU() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range ch {
					es := j.entries()
					blobs[j.idx], errs[j.idx] = l.writeBlob(func(w io.Writer) error { return writeEntries(w, es) })
				}
			}()
		}
		for _, j := range jobs {
			ch <- j
		}
		close(ch)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}

		type pending struct {
			ref, id string
			names   []string
		}
		var images []pending
		for i := range n {
			layers := []blob{blobs[i%scaleBases]}
			for k := range scaleOwnLayers {
				layers = append(layers, blobs[scaleBases+i*scaleOwnLayers+k])
			}
			ref := fmt.Sprintf("img%d", i)
			id, err := l.addImage(imageSpec{ref: ref, layers: layers, labels: map[string]string{"bench.index": fmt.Sprint(i)}, cmd: []string{"/app/run"}})
			if err != nil {
				return err
			}
			images = append(images, pending{ref, id, scaleNames(i)})
		}
		hugeID, err := l.addImage(imageSpec{ref: "huge", layers: []blob{blobs[0], blobs[len(blobs)-2], blobs[len(blobs)-1]}, cmd: []string{"/bin/sh"}})
		if err != nil {
			return err
		}
		images = append(images, pending{"huge", hugeID, []string{hugeImageName}})
		if err := l.finish(); err != nil {
			return err
		}

		// Import: the first image of each base alone (so two copies never
		// race to create the same base layer), then the rest in parallel:
		// most of the time goes to the store's untar child processes, which
		// run outside the store lock.
		logf("importing %d images into the store", len(images))
		start := time.Now()
		var done int
		var mu sync.Mutex
		importOne := func(p pending) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := sh.importImage(ctx, l.dir, p.ref, p.id, p.names); err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			if done++; done%200 == 0 {
				logf("  %d/%d images (%s)", done, len(images), time.Since(start).Round(time.Second))
			}
			return nil
		}
		first := min(scaleBases, len(images))
		for _, p := range images[:first] {
			if err := importOne(p); err != nil {
				return err
			}
		}
		ich := make(chan pending)
		ierrs := make([]error, runtime.NumCPU())
		for w := range ierrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for p := range ich {
					if ierrs[w] == nil {
						ierrs[w] = importOne(p)
					}
				}
			}()
		}
		for _, p := range images[first:] {
			ich <- p
		}
		close(ich)
		wg.Wait()
		if err := errors.Join(ierrs...); err != nil {
			return err
		}
		for _, p := range images {
			si.Images = append(si.Images, benchImage{ID: p.id, Names: p.names})
			si.Names += len(p.names)
		}
		chain, err := sh.layerChain(hugeID)
		if err != nil {
			return err
		}
		si.Huge = &benchImage{ID: hugeID, Names: []string{hugeImageName}, Layers: chain}
		layers, err := sh.store.Layers()
		if err != nil {
			return err
		}
		si.Layers = len(layers)
		return nil
	})
}

// scaleBase is shared base layer b: a small distribution-like tree.
func scaleBase(b int) []tarEntry {
	var es []tarEntry
	dir := func(name string) { es = append(es, tarEntry{name: name, typ: tar.TypeDir, mode: 0o755}) }
	file := func(name string) {
		es = append(es, tarEntry{name: name, typ: tar.TypeReg, mode: 0o644, content: []byte(fmt.Sprintf("base %d %s\n", b, name))})
	}
	for _, d := range []string{"etc", "usr", "usr/bin", "usr/lib", "usr/share", "usr/share/doc", "var", "var/lib"} {
		dir(d)
	}
	es = append(es, tarEntry{name: "bin", typ: tar.TypeSymlink, mode: 0o777, linkname: "usr/bin"})
	for i := range 20 {
		file(fmt.Sprintf("etc/base%d-%02d.conf", b, i))
	}
	for i := range 80 {
		file(fmt.Sprintf("usr/bin/cmd%02d", i))
	}
	for i := range 50 {
		file(fmt.Sprintf("usr/lib/lib%02d.so", i))
	}
	for i := range 10 {
		d := fmt.Sprintf("usr/share/doc/pkg%d", i)
		dir(d)
		file(d + "/copyright")
		file(d + "/changelog")
	}
	return es
}

// scaleLayer is layer k of scale image i: a handful of tiny files, a
// symlink, and in the top layer a whiteout of a base file.
func scaleLayer(i, k int) []tarEntry {
	app := fmt.Sprintf("app/%d", i)
	es := []tarEntry{
		{name: "app", typ: tar.TypeDir, mode: 0o755},
		{name: app, typ: tar.TypeDir, mode: 0o755},
	}
	for j := range 4 {
		name := fmt.Sprintf("%s/layer%d-file%d", app, k, j)
		es = append(es, tarEntry{name: name, typ: tar.TypeReg, mode: 0o644, content: []byte(name + "\n")})
	}
	es = append(es, tarEntry{name: fmt.Sprintf("%s/current%d", app, k), typ: tar.TypeSymlink, mode: 0o777, linkname: fmt.Sprintf("layer%d-file0", k)})
	if k == scaleOwnLayers-1 {
		es = append(es,
			tarEntry{name: "etc", typ: tar.TypeDir, mode: 0o755},
			tarEntry{name: fmt.Sprintf("etc/app%d.conf", i), typ: tar.TypeReg, mode: 0o644, content: []byte(fmt.Sprintf("image %d\n", i))},
			tarEntry{name: "usr", typ: tar.TypeDir, mode: 0o755},
			tarEntry{name: "usr/bin", typ: tar.TypeDir, mode: 0o755},
			tarEntry{name: fmt.Sprintf("usr/bin/.wh.cmd%02d", i%80), typ: tar.TypeReg, mode: 0o644},
		)
	}
	return es
}

// hugeLayer is half h of the huge rootfs: n entries in directories of 500
// (h=1 shares half of its directories with h=0, so they merge), mostly
// empty files.
func hugeLayer(h, n int) []tarEntry {
	const perDir = 500
	es := []tarEntry{{name: "data", typ: tar.TypeDir, mode: 0o755}}
	dirs := (n + perDir) / (perDir + 1)
	first := h * dirs / 2
	count := 1
	for d := 0; d < dirs && count < n; d++ {
		dn := fmt.Sprintf("data/d%04d", first+d)
		es = append(es, tarEntry{name: dn, typ: tar.TypeDir, mode: 0o755})
		count++
		for f := 0; f < perDir && count < n; f++ {
			e := tarEntry{name: fmt.Sprintf("%s/h%d-%04d", dn, h, f), typ: tar.TypeReg, mode: 0o644}
			if f%10 == 0 {
				e.content = []byte(e.name + "\n")
			}
			es = append(es, e)
			count++
		}
	}
	return es
}
