package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// treeEntry is one entry of a walked tree.
type treeEntry struct {
	path string // relative, "./x/y"
	line string // what must be the same on every view
	mode fs.FileMode
	size int64
}

// walkTree lists every entry under root with its type, mode, owner, size
// (not for directories: overlayfs and FUSE servers differ there), mtime and
// symlink target, sorted by path.
func walkTree(root string) ([]treeEntry, error) {
	var out []treeEntry
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if rel == "." {
			return nil
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		size := st.Size
		link := ""
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			size = 0
		case syscall.S_IFLNK:
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		line := fmt.Sprintf("%s %o %d:%d %d %d.%09d %s", rel, st.Mode, st.Uid, st.Gid, size, st.Mtim.Sec, st.Mtim.Nsec, link)
		out = append(out, treeEntry{path: "./" + rel, line: line, mode: fi.Mode(), size: st.Size})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out, err
}

// compareTrees checks that every view shows the same tree as the kernel's
// overlayfs; it returns the kernel's entries and the verdict notes.
func compareTrees(views []view) ([]treeEntry, []string, bool, error) {
	var ref []treeEntry
	var notes, same []string
	for _, v := range views {
		start := time.Now()
		es, err := walkTree(v.root())
		if err != nil {
			if v.name() == kernelName {
				return nil, nil, false, fmt.Errorf("walking the kernel view: %w", err)
			}
			notes = append(notes, fmt.Sprintf("walking %s: %v", v.name(), err))
			continue
		}
		if v.name() == kernelName {
			ref = es
			logf("  tree: %d entries (walked %s in %s)", len(es), v.name(), fmtDur(time.Since(start)))
			continue
		}
		if diff := diffTrees(ref, es); diff != "" {
			notes = append(notes, fmt.Sprintf("%s differs from the kernel view: %s", v.name(), diff))
			logf("  tree: %s differs from the kernel view: %s", v.name(), diff)
		} else {
			same = append(same, v.name())
			logf("  tree: %s shows the same %d entries as the kernel", v.name(), len(es))
		}
	}
	ok := len(notes) == 0
	if len(same) > 0 {
		notes = append(notes, fmt.Sprintf("%s show exactly the kernel's %d entries (names, types, modes, owners, sizes, mtimes, symlink targets)",
			strings.Join(same, " and "), len(ref)))
	}
	return ref, notes, ok, nil
}

// diffTrees summarizes how b differs from a ("" when the same).
func diffTrees(a, b []treeEntry) string {
	am := make(map[string]string, len(a))
	for _, e := range a {
		am[e.path] = e.line
	}
	bm := make(map[string]string, len(b))
	for _, e := range b {
		bm[e.path] = e.line
	}
	var missing, extra, changed []string
	for _, e := range a {
		l, ok := bm[e.path]
		switch {
		case !ok:
			missing = append(missing, e.path)
		case l != e.line:
			changed = append(changed, fmt.Sprintf("%q vs %q", e.line, l))
		}
	}
	for _, e := range b {
		if _, ok := am[e.path]; !ok {
			extra = append(extra, e.path)
		}
	}
	if len(missing)+len(extra)+len(changed) == 0 {
		return ""
	}
	first := func(s []string) string {
		if len(s) > 3 {
			s = s[:3]
		}
		return strings.Join(s, ", ")
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, fmt.Sprintf("%d missing (%s)", len(missing), first(missing)))
	}
	if len(extra) > 0 {
		parts = append(parts, fmt.Sprintf("%d extra (%s)", len(extra), first(extra)))
	}
	if len(changed) > 0 {
		parts = append(parts, fmt.Sprintf("%d with other attributes (%s)", len(changed), first(changed)))
	}
	return strings.Join(parts, "; ")
}

// fileLists are the inputs of the file workloads, taken from the kernel
// view so that every view gets the same list.
type fileLists struct {
	small   string   // NUL-separated paths of regular files under 64 KiB
	links   string   // NUL-separated paths of symlinks
	largest []string // the biggest regular files
	nSmall  int
	nLinks  int
}

func makeLists(dir string, tree []treeEntry, nLargest int) (*fileLists, error) {
	fl := &fileLists{small: filepath.Join(dir, "small.list"), links: filepath.Join(dir, "links.list")}
	var small, links strings.Builder
	var regular []treeEntry
	for _, e := range tree {
		switch {
		case e.mode.IsRegular():
			regular = append(regular, e)
			if e.size < 64<<10 {
				small.WriteString(e.path + "\x00")
				fl.nSmall++
			}
		case e.mode&fs.ModeSymlink != 0:
			links.WriteString(e.path + "\x00")
			fl.nLinks++
		}
	}
	sort.SliceStable(regular, func(i, j int) bool { return regular[i].size > regular[j].size })
	for i := 0; i < nLargest && i < len(regular); i++ {
		fl.largest = append(fl.largest, regular[i].path)
	}
	if err := os.WriteFile(fl.small, []byte(small.String()), 0o644); err != nil {
		return nil, err
	}
	return fl, os.WriteFile(fl.links, []byte(links.String()), 0o644)
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func shell(script string) func(view) []string {
	return func(view) []string { return []string{"sh", "-c", script} }
}

// rootfsWorkloads are the workloads run on the three views of an image.
func rootfsWorkloads(fl *fileLists, self string, largeMB float64) []workload {
	largest := make([]string, len(fl.largest))
	for i, p := range fl.largest {
		largest[i] = shellQuote(p)
	}
	// Warm, the largest files are read 5 times per run: once is a few
	// milliseconds, too close to the cost of starting the shell.
	cat := "cat " + strings.Join(largest, " ") + " >/dev/null"
	cat5 := "for i in 1 2 3 4 5; do " + cat + "; done"
	randArgs := append([]string{self, "randread", "-n", "4000", "-seed", "1"}, fl.largest...)
	return []workload{
		{id: "find", title: "find (names only)", argv: shell("find . >/dev/null"), budget: budgetFind},
		{id: "find-printf", title: "find -printf '%s %m %u' (stat)", argv: shell(`find . -printf '%s %m %u\n' >/dev/null`), budget: budgetFind},
		{id: "du", title: "du -s (stat)", argv: shell("du -s . | cut -f1"), budget: budgetFind},
		{id: "ls-lR", title: "ls -lR (stat + xattrs)", argv: shell("ls -lR . >/dev/null"), budget: budgetLsR},
		{id: "readlink", title: fmt.Sprintf("readlink of %d symlinks", fl.nLinks), argv: shell("xargs -0 -a " + shellQuote(fl.links) + " readlink >/dev/null"), budget: budgetNone},
		{id: "tar", title: "tar -cf - . | wc -c", argv: shell("tar -cf - . | wc -c"), budget: budgetTarGrep},
		{id: "grep", title: "grep -r 'func main' usr", argv: shell("grep -r 'func main' usr | wc -l"), budget: budgetTarGrep},
		{id: "cat-small", title: fmt.Sprintf("cat %d files < 64 KiB", fl.nSmall), argv: shell("xargs -0 -a " + shellQuote(fl.small) + " cat >/dev/null"), budget: budgetCatSmall},
		{id: "cat-small-p4", title: fmt.Sprintf("cat %d files < 64 KiB, xargs -P4", fl.nSmall), argv: shell("xargs -0 -P4 -n 64 -a " + shellQuote(fl.small) + " cat >/dev/null"), budget: budgetCatSmall},
		{id: "cat-large", title: fmt.Sprintf("cat %d largest files (%.0f MB) ×5", len(fl.largest), largeMB), argv: shell(cat5), budget: budgetLarge},
		{id: "randread-large", title: "4 KiB random reads ×4000, largest files", argv: func(view) []string { return randArgs }, budget: budgetNone},
		{id: "find-cold", title: "find, cold (first after mount)", argv: shell("find . >/dev/null"), cold: true, budget: budgetCold},
		{id: "ls-lR-cold", title: "ls -lR, cold (first after mount)", argv: shell("ls -lR . >/dev/null"), cold: true, budget: budgetCold},
		{id: "cat-large-cold", title: fmt.Sprintf("cat %d largest files, cold", len(fl.largest)), argv: shell(cat), cold: true, floor: true, budget: budgetLarge},
	}
}

// hugeWorkloads run on the three views of the image with the big rootfs.
func hugeWorkloads(entries int) []workload {
	k := fmt.Sprintf("%dk entries", entries/1000)
	if entries < 1000 {
		k = fmt.Sprintf("%d entries", entries)
	}
	return []workload{
		{id: "huge-find", title: "find, " + k, argv: shell("find . >/dev/null"), budget: budgetFind},
		{id: "huge-ls-lR", title: "ls -lR, " + k, argv: shell("ls -lR . >/dev/null"), budget: budgetLsR},
		{id: "huge-find-cold", title: "find, " + k + ", cold", argv: shell("find . >/dev/null"), cold: true, budget: budgetCold},
	}
}

// sizeMB sums the sizes of the given paths in tree.
func sizeMB(tree []treeEntry, paths []string) float64 {
	want := map[string]bool{}
	for _, p := range paths {
		want[p] = true
	}
	var n int64
	for _, e := range tree {
		if want[e.path] {
			n += e.size
		}
	}
	return float64(n) / (1 << 20)
}
