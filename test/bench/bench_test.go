package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.podman.io/storage/pkg/reexec"

	"github.com/imagefs/imagefs/internal/testenv"
)

func TestMain(m *testing.M) {
	// The store's untar runs in a re-executed child of this binary, and
	// the randread workload and the go-fuse floor run this binary too.
	if reexec.Init() {
		return
	}
	runHelper()
	os.Exit(m.Run())
}

// requireCommand skips (or fails, under IMAGEFS_REQUIRE_ALL=1) without cmd.
func requireCommand(t *testing.T, cmd string) {
	t.Helper()
	if _, err := exec.LookPath(cmd); err != nil {
		if os.Getenv(testenv.RequireAllVar) == "1" {
			t.Fatalf("%s is not installed and %s=1: this test must run", cmd, testenv.RequireAllVar)
		}
		t.Skipf("%s is not installed", cmd)
	}
}

// imagefsBinary is $IMAGEFS_BIN (make test sets it), else a fresh build.
func imagefsBinary(t *testing.T, dir string) string {
	t.Helper()
	if bin := os.Getenv("IMAGEFS_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(dir, "imagefs")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/imagefs")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building imagefs: %v\n%s", err, out)
	}
	return bin
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestHarnessQuick runs the whole harness in quick mode (small stores, one
// repetition) against the real binary, kernel overlayfs, fuse-overlayfs and
// podman, and checks that it produces the table and the CSV with every row
// and column filled. It asserts nothing about speed.
func TestHarnessQuick(t *testing.T) {
	testenv.RequireFUSE(t)
	testenv.RequirePodman(t)
	requireCommand(t, "fuse-overlayfs")
	requireCommand(t, "fusermount3")
	dir := t.TempDir()
	testenv.NoMountsLeft(t, dir)
	bin := imagefsBinary(t, dir)
	t.Cleanup(func() { // the stores' run roots live in /run
		graphs, _ := filepath.Glob(filepath.Join(dir, "cache", "*", "graph"))
		for _, g := range graphs {
			if err := os.RemoveAll(runRootFor(g)); err != nil {
				t.Errorf("removing the run root of %s: %v", g, err)
			}
		}
	})

	csvPath := filepath.Join(dir, "results.csv")
	mdPath := filepath.Join(dir, "results.md")
	docPath := filepath.Join(dir, "PERFORMANCE.md")
	if err := os.WriteFile(docPath, []byte("# Performance\n\n"+docBegin+"\nold table\n"+docEnd+"\n\nafter\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseFlags([]string{"--quick", "--cache", filepath.Join(dir, "cache"), "--imagefs", bin,
		"--csv", csvPath, "--markdown", mdPath, "--update-doc", docPath})
	if err != nil {
		t.Fatal(err)
	}
	logOut = logWriter{t}
	defer func() { logOut = os.Stderr }()
	var table bytes.Buffer
	results, err := run(context.Background(), cfg, &table)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	t.Logf("table:\n%s", table.String())

	// Every workload ran on every view it is defined for, without error.
	threeViews := []string{"find", "find-printf", "du", "ls-lR", "readlink", "tar", "grep", "cat-small", "cat-small-p4",
		"cat-large", "randread-large", "find-cold", "ls-lR-cold", "cat-large-cold", "huge-find", "huge-ls-lR", "huge-find-cold"}
	imagefsOnly := []string{"meta-inspect", "names", "tag-visible", "walk-all", "mount-first-stat"}
	withPodman := map[string]bool{"meta-inspect": true, "tag-visible": true}
	byID := map[string]*result{}
	for _, res := range results {
		byID[res.id] = res
		for _, e := range res.errs {
			t.Errorf("%s: %s", res.id, e)
		}
	}
	for _, id := range []string{"tree-check", "huge-tree-check", "idle-rss"} {
		if byID[id] == nil {
			t.Errorf("no %s row", id)
		}
	}
	// The views must agree, or their timings compare nothing.
	for _, id := range []string{"tree-check", "huge-tree-check"} {
		if res := byID[id]; res != nil && res.met() != "same" {
			t.Errorf("%s: %s: %v", id, res.met(), res.notes)
		}
	}
	if res := byID["cat-large-cold"]; res != nil && (res.wall[floorName] <= 0 || !strings.Contains(strings.Join(res.notes, ";"), floorName)) {
		t.Errorf("cat-large-cold: no %s figure (%v) or note: %q", floorName, res.wall[floorName], res.notes)
	}
	if res := byID["idle-rss"]; res != nil && res.rssMB <= 0 {
		t.Errorf("idle-rss: no RSS figure")
	}
	if res := byID["walk-all"]; res != nil && res.rssMB <= 0 {
		t.Errorf("walk-all: no RSS figure")
	}

	// The CSV has the header and, per row, every column; the timing columns
	// hold numbers where a row has them.
	f, err := os.Open(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	records, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("reading %s: %v", csvPath, err)
	}
	if len(records) == 0 || strings.Join(records[0], ",") != strings.Join(csvHeader, ",") {
		t.Fatalf("CSV header = %v, want %v", records[0], csvHeader)
	}
	col := map[string]int{}
	for i, h := range csvHeader {
		col[h] = i
	}
	rows := map[string][]string{}
	for _, rec := range records[1:] {
		rows[rec[col["id"]]] = rec
	}
	if len(rows) != len(results) {
		t.Errorf("CSV has %d rows, the run %d results", len(rows), len(results))
	}
	number := func(id, name string) {
		t.Helper()
		rec := rows[id]
		if rec == nil {
			return
		}
		if v, err := strconv.ParseFloat(rec[col[name]], 64); err != nil || v < 0 {
			t.Errorf("CSV %s: %s = %q, want a number", id, name, rec[col[name]])
		}
	}
	for _, id := range threeViews {
		if rows[id] == nil {
			t.Errorf("CSV: no %s row", id)
			continue
		}
		for _, c := range []string{"kernel_s", "fuse_overlayfs_s", "imagefs_s", "imagefs_per_kernel", "imagefs_per_fuse_overlayfs", "imagefs_cpu_s", "imagefs_peak_rss_mb"} {
			number(id, c)
		}
		if m := rows[id][col["met"]]; m != "yes" && m != "NO" && m != "-" {
			t.Errorf("CSV %s: met = %q", id, m)
		}
	}
	for _, id := range imagefsOnly {
		if rows[id] == nil {
			t.Errorf("CSV: no %s row", id)
			continue
		}
		number(id, "imagefs_s")
		if withPodman[id] {
			number(id, "podman_s")
		}
	}
	number("idle-rss", "rss_mb")
	number("walk-all", "rss_mb")

	// The printed table and the Markdown carry every row.
	for _, res := range results {
		if !strings.Contains(table.String(), res.title) {
			t.Errorf("printed table lacks %q", res.title)
		}
	}
	md, err := os.ReadFile(mdPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(md), "| "+strings.Join(tableHeader, " | ")+" |") {
		t.Errorf("Markdown does not start with the table header:\n%.300s", md)
	}
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(doc), "old table") || !strings.Contains(string(doc), string(md)) || !strings.HasSuffix(string(doc), docEnd+"\n\nafter\n") {
		t.Errorf("--update-doc did not replace the generated section:\n%s", doc)
	}
}
