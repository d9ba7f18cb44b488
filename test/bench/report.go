package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Columns of a result besides the three views.
const podmanName = "podman"

// budget is what issue 5 asks of a row; zero fields do not apply.
type budget struct {
	kernel     float64       // imagefs/kernel at most this
	fuse       float64       // imagefs/fuse-overlayfs at most this (below it when fuseStrict)
	fuseStrict bool          //
	maxTime    time.Duration // imagefs time below this
	podmanX    float64       // imagefs at least this many times faster than podman
	maxRSSMB   float64       // the row's RSS figure below this
}

func (b budget) String() string {
	var parts []string
	if b.kernel > 0 {
		parts = append(parts, fmt.Sprintf("≤%.1f× kernel", b.kernel))
	}
	if b.fuse > 0 {
		op := "≤"
		if b.fuseStrict {
			op = "<"
		}
		parts = append(parts, fmt.Sprintf("%s%.1f× fuse-ovl", op, b.fuse))
	}
	if b.maxTime > 0 {
		parts = append(parts, "< "+fmtDur(b.maxTime))
	}
	if b.podmanX > 0 {
		parts = append(parts, fmt.Sprintf("≥%.0f× faster than podman", b.podmanX))
	}
	if b.maxRSSMB > 0 {
		parts = append(parts, fmt.Sprintf("RSS < %.0f MB", b.maxRSSMB))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// Budgets of issue 5 (medians, warm unless said).
var (
	budgetFind     = budget{kernel: 1.5, fuse: 1.0, fuseStrict: true}
	budgetLsR      = budget{kernel: 2.0, fuse: 1.0, fuseStrict: true}
	budgetTarGrep  = budget{kernel: 1.5, fuse: 1.0, fuseStrict: true}
	budgetCatSmall = budget{kernel: 2.0, fuse: 1.0, fuseStrict: true}
	budgetLarge    = budget{kernel: 1.1, fuse: 1.0}
	budgetCold     = budget{kernel: 5.0, fuse: 1.0, fuseStrict: true}
	budgetNone     = budget{}
)

// result is one row of the table.
type result struct {
	id, title string
	budget    budget
	wall      map[string]time.Duration // median wall time per column
	cpu       map[string]time.Duration // median CPU of the serving process per run
	peakMB    map[string]float64       // highest peak RSS of the serving process
	rssMB     float64                  // the figure a maxRSSMB budget is about
	runs      int                      // samples per column
	verdict   string                   // the met? column of rows without a budget ("same tree")
	out       string                   // the imagefs output of single-view rows
	notes     []string
	errs      []string
}

// treeCheck records the verdict of compareTrees as a row.
func (r *runner) treeCheck(id string, entries int, notes []string, same bool) {
	res := r.newResult(id, fmt.Sprintf("tree check: %d entries, same on every view?", entries), budgetNone)
	res.notes = notes
	res.verdict = "same"
	if !same {
		res.verdict = "DIFFERS"
	}
}

func (r *runner) newResult(id, title string, b budget) *result {
	res := &result{id: id, title: title, budget: b,
		wall: map[string]time.Duration{}, cpu: map[string]time.Duration{}, peakMB: map[string]float64{}}
	r.results = append(r.results, res)
	return res
}

// set records the samples of one column.
func (res *result) set(col string, ss []sample) {
	var walls, cpus []time.Duration
	var peak int64
	for _, s := range ss {
		walls = append(walls, s.wall)
		cpus = append(cpus, s.cpu)
		peak = max(peak, s.hwmKB)
	}
	res.wall[col] = median(walls)
	if peak > 0 {
		res.cpu[col] = median(cpus)
		res.peakMB[col] = float64(peak) / 1024
	}
	res.runs = max(res.runs, len(ss))
}

// checkOutputs notes when the views printed different things (a byte
// count, a match count): a fast answer is worth nothing if it is wrong.
func (res *result) checkOutputs(outs map[string]string) {
	var vals []string
	same := true
	var first *string
	for _, col := range []string{kernelName, fuseOvlName, imagefsName} {
		o, ok := outs[col]
		if !ok {
			continue
		}
		if first == nil {
			first = &o
		} else if o != *first {
			same = false
		}
		vals = append(vals, fmt.Sprintf("%s=%q", col, oneLine(o, 40)))
	}
	if !same {
		res.notes = append(res.notes, "outputs differ: "+strings.Join(vals, " "))
	}
}

// noteFloor notes what the go-fuse floor took, when it ran: against the
// kernel and fuse-overlayfs it is the share of the row that no go-fuse
// server could save.
func (res *result) noteFloor() {
	f, ok := res.wall[floorName]
	if !ok || f <= 0 {
		return
	}
	per := func(col string) string {
		if d, ok := res.wall[col]; ok && d > 0 {
			return fmt.Sprintf("%.2f", float64(f)/float64(d))
		}
		return "-"
	}
	imagefs := "-"
	if d, ok := res.wall[imagefsName]; ok {
		imagefs = fmt.Sprintf("%.2f", float64(d)/float64(f))
	}
	res.notes = append(res.notes, fmt.Sprintf("%s (floor.go) %.4f s: floor/kernel %s, floor/fuse-ovl %s; imagefs/floor %s",
		floorName, f.Seconds(), per(kernelName), per(fuseOvlName), imagefs))
}

func (res *result) ratio(col string) (float64, bool) {
	a, okA := res.wall[imagefsName]
	b, okB := res.wall[col]
	if !okA || !okB || b <= 0 {
		return 0, false
	}
	return float64(a) / float64(b), true
}

// met says whether the row meets its budget: "yes", "NO", "-" (no
// budget) or "?" (a figure is missing).
func (res *result) met() string {
	b := res.budget
	if res.verdict != "" {
		return res.verdict
	}
	if b == (budget{}) {
		return "-"
	}
	ok := true
	check := func(have bool, good bool) bool {
		if !have {
			return false
		}
		ok = ok && good
		return true
	}
	complete := true
	if b.kernel > 0 {
		r, have := res.ratio(kernelName)
		complete = check(have, r <= b.kernel) && complete
	}
	if b.fuse > 0 {
		r, have := res.ratio(fuseOvlName)
		good := r <= b.fuse
		if b.fuseStrict {
			good = r < b.fuse
		}
		complete = check(have, good) && complete
	}
	if b.maxTime > 0 {
		t, have := res.wall[imagefsName]
		complete = check(have, t < b.maxTime) && complete
	}
	if b.podmanX > 0 {
		t, have := res.wall[imagefsName]
		p, haveP := res.wall[podmanName]
		complete = check(have && haveP && t > 0, float64(p)/float64(t) >= b.podmanX) && complete
	}
	if b.maxRSSMB > 0 {
		complete = check(res.rssMB > 0, res.rssMB < b.maxRSSMB) && complete
	}
	switch {
	case !ok:
		return "NO"
	case !complete:
		return "?"
	}
	return "yes"
}

// columns of the CSV, in order.
var csvHeader = []string{
	"workload", "id", "kernel_s", "fuse_overlayfs_s", "imagefs_s",
	"imagefs_per_kernel", "imagefs_per_fuse_overlayfs", "podman_s",
	"budget", "met", "imagefs_cpu_s", "fuse_overlayfs_cpu_s",
	"imagefs_peak_rss_mb", "fuse_overlayfs_peak_rss_mb", "rss_mb", "runs", "notes",
}

func (res *result) fields() []string {
	secs := func(col string) string {
		if d, ok := res.wall[col]; ok {
			return fmt.Sprintf("%.4f", d.Seconds())
		}
		if res.failed(col) {
			return "ERR"
		}
		return ""
	}
	ratio := func(col string) string {
		if r, ok := res.ratio(col); ok {
			return fmt.Sprintf("%.2f", r)
		}
		return ""
	}
	cpu := func(col string) string {
		if d, ok := res.cpu[col]; ok {
			return fmt.Sprintf("%.3f", d.Seconds())
		}
		return ""
	}
	peak := func(col string) string {
		if p, ok := res.peakMB[col]; ok {
			return fmt.Sprintf("%.1f", p)
		}
		return ""
	}
	rss := ""
	if res.rssMB > 0 {
		rss = fmt.Sprintf("%.1f", res.rssMB)
	}
	notes := append(append([]string(nil), res.notes...), res.errs...)
	return []string{
		res.title, res.id, secs(kernelName), secs(fuseOvlName), secs(imagefsName),
		ratio(kernelName), ratio(fuseOvlName), secs(podmanName),
		res.budget.String(), res.met(), cpu(imagefsName), cpu(fuseOvlName),
		peak(imagefsName), peak(fuseOvlName), rss, fmt.Sprint(res.runs), strings.Join(notes, "; "),
	}
}

func (res *result) failed(col string) bool {
	for _, e := range res.errs {
		if strings.HasPrefix(e, col+":") {
			return true
		}
	}
	return false
}

// summary is the one-line progress report of a result.
func (res *result) summary() string {
	var parts []string
	for _, col := range []string{kernelName, fuseOvlName, imagefsName, podmanName} {
		if d, ok := res.wall[col]; ok {
			parts = append(parts, fmt.Sprintf("%s %s", col, fmtDur(d)))
		} else if res.failed(col) {
			parts = append(parts, col+" ERR")
		}
	}
	if res.rssMB > 0 {
		parts = append(parts, fmt.Sprintf("RSS %.1f MB", res.rssMB))
	}
	if m := res.met(); m != "-" {
		parts = append(parts, "budget "+m)
	}
	return strings.Join(parts, ", ")
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	default:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
}

// tableRow is the printed form of a result: the table's columns.
func (res *result) tableRow() []string {
	f := res.fields()
	get := func(name string) string {
		for i, h := range csvHeader {
			if h == name {
				return f[i]
			}
		}
		panic("no CSV column " + name)
	}
	show := func(name string) string {
		if s := get(name); s != "" {
			return s
		}
		return "-"
	}
	rss := "imagefs_peak_rss_mb"
	if get("rss_mb") != "" {
		rss = "rss_mb"
	}
	return []string{get("workload"), show("kernel_s"), show("fuse_overlayfs_s"), show("imagefs_s"),
		show("imagefs_per_kernel"), show("imagefs_per_fuse_overlayfs"), show("podman_s"),
		get("budget"), get("met"), show("imagefs_cpu_s"), show(rss)}
}

var tableHeader = []string{"workload", "kernel s", "fuse-ovl s", "imagefs s", "imagefs/kernel", "imagefs/fuse-ovl", "podman s", "budget", "met?", "imagefs CPU s", "imagefs RSS MB"}

// printTable writes the results as an aligned text table, then the notes.
func printTable(w io.Writer, results []*result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(tableHeader, "\t"))
	for _, res := range results {
		fmt.Fprintln(tw, strings.Join(res.tableRow(), "\t"))
	}
	tw.Flush()
	writeNotes(w, results, "")
}

func writeNotes(w io.Writer, results []*result, bullet string) {
	for _, res := range results {
		for _, n := range append(append([]string(nil), res.notes...), res.errs...) {
			fmt.Fprintf(w, "%s%s: %s\n", bullet, res.title, n)
		}
	}
}

// writeCSV writes the results with every column.
func writeCSV(path string, results []*result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	cw := csv.NewWriter(f)
	_ = cw.Write(csvHeader)
	for _, res := range results {
		_ = cw.Write(res.fields())
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// markdownTable renders the results as a Markdown table plus notes.
func markdownTable(results []*result) string {
	var b strings.Builder
	esc := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	b.WriteString("| " + strings.Join(tableHeader, " | ") + " |\n")
	b.WriteString("|" + strings.Repeat("---|", len(tableHeader)) + "\n")
	for _, res := range results {
		row := res.tableRow()
		for i := range row {
			row[i] = esc(row[i])
		}
		if row[8] == "NO" || row[8] == "DIFFERS" {
			row[8] = "**" + row[8] + "**"
		}
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	var notes strings.Builder
	writeNotes(&notes, results, "- ")
	if notes.Len() > 0 {
		b.WriteString("\nNotes from the run:\n\n" + esc(notes.String()))
	}
	return b.String()
}

// Markers around the generated part of docs/PERFORMANCE.md.
const (
	docBegin = "<!-- bench:begin (generated by `make bench BENCH_FLAGS=--update-doc=docs/PERFORMANCE.md`) -->"
	docEnd   = "<!-- bench:end -->"
)

// updateDoc replaces the generated part of the document at path.
func updateDoc(path, generated string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(data)
	i := strings.Index(s, docBegin)
	j := strings.Index(s, docEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q … %q section", path, docBegin, docEnd)
	}
	s = s[:i] + docBegin + "\n" + generated + "\n" + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
