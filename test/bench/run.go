package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"time"
)

// sample is one timed run of a workload on one view.
type sample struct {
	wall  time.Duration
	cpu   time.Duration // the serving process's CPU time during the run
	hwmKB int64         // the serving process's peak RSS during the run
	out   string        // stdout, trimmed
}

// runner runs commands and records results.
type runner struct {
	ctx     context.Context
	cfg     *config
	results []*result
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		if len(p) > room {
			b.Buffer.Write(p[:room])
		} else {
			b.Buffer.Write(p)
		}
	}
	return len(p), nil
}

// exec runs argv in dir and returns its stdout; a nonzero exit is an
// error carrying stderr.
func (r *runner) exec(dir string, env []string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	stdout, stderr := &limitedBuffer{max: 64 << 10}, &limitedBuffer{max: 4 << 10}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// Kill the whole pipeline (sh -c 'a | b') on timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil && r.ctx.Err() == nil {
			err = fmt.Errorf("timed out after %s", r.cfg.timeout)
		}
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			err = fmt.Errorf("%w: %s", err, oneLine(msg, 300))
		}
	}
	return strings.TrimSpace(stdout.String()), err
}

// runCmd runs a command with a timeout and returns its combined output.
func runCmd(timeout time.Duration, env []string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// measure times argv on view v (in its root) and records what its serving
// process spent.
func (r *runner) measure(v view, argv []string) (sample, error) {
	pid := v.pid()
	var before procStats
	if pid > 0 {
		resetPeak(pid)
		before, _ = readProcStats(pid)
	}
	start := time.Now()
	out, err := r.exec(v.root(), nil, argv...)
	s := sample{wall: time.Since(start), out: out}
	if pid > 0 {
		if after, perr := readProcStats(pid); perr == nil {
			s.cpu = after.cpu - before.cpu
			s.hwmKB = after.hwmKB
		}
	}
	return s, err
}

// Workloads faster than fastRun (on every view, in the first round) get
// fastRunFactor times the repetitions, warm and cold.
const (
	fastRun       = 200 * time.Millisecond
	fastRunFactor = 3
)

// fast reports whether a workload whose first round took d gets
// fastRunFactor times the repetitions (not in quick mode, which measures
// nothing).
func (r *runner) fast(d time.Duration) bool { return d < fastRun && !r.cfg.quick }

// slowest is the longest first sample of any view.
func slowest(samples map[string][]sample) time.Duration {
	var d time.Duration
	for _, ss := range samples {
		if len(ss) > 0 {
			d = max(d, ss[0].wall)
		}
	}
	return d
}

// A workload is a command run in a view's root on every view.
type workload struct {
	id     string // short name, for --only and the CSV
	title  string // the table's workload column
	argv   func(v view) []string
	cold   bool // each run after a remount (and dropped caches)
	floor  bool // also run on the go-fuse floor (floor.go)
	budget budget
}

// compare runs w on every view, interleaved, and records the medians.
func (r *runner) compare(w workload, views []view) *result {
	res := r.newResult(w.id, w.title, w.budget)
	samples := map[string][]sample{}
	failed := map[string]bool{}
	run := func(v view) {
		if failed[v.name()] || r.ctx.Err() != nil {
			return
		}
		s, err := r.measure(v, w.argv(v))
		if err != nil {
			failed[v.name()] = true
			res.errs = append(res.errs, fmt.Sprintf("%s: %v", v.name(), err))
			logf("  %s on %s: %v", w.id, v.name(), err)
			return
		}
		samples[v.name()] = append(samples[v.name()], s)
	}
	if w.cold {
		reps := r.cfg.coldReps
		for rep := 0; rep < reps; rep++ {
			for _, v := range rotate(views, rep) {
				if err := r.remount(v); err != nil {
					res.errs = append(res.errs, err.Error())
					failed[v.name()] = true
					continue
				}
				run(v)
			}
			if rep == 0 && r.fast(slowest(samples)) {
				reps *= fastRunFactor
			}
		}
	} else {
		for _, v := range views { // warm-up, not counted
			run(v)
		}
		// Slow workloads get fewer repetitions, to keep the whole run
		// within minutes; fast ones more, since a run of a few tens of
		// milliseconds moves most with the machine's noise.
		reps := r.cfg.reps
		first := slowest(samples)
		clear(samples)
		switch {
		case first >= 10*time.Second:
			reps = min(reps, 1)
		case first >= 2*time.Second:
			reps = min(reps, 3)
		case r.fast(first):
			reps *= fastRunFactor
		}
		for rep := range reps {
			for _, v := range rotate(views, rep) {
				run(v)
			}
		}
	}
	outs := map[string]string{}
	for _, v := range views {
		ss := samples[v.name()]
		if len(ss) == 0 {
			continue
		}
		res.set(v.name(), ss)
		outs[v.name()] = ss[0].out
	}
	res.checkOutputs(outs)
	res.noteFloor()
	logf("  %-36s %s", w.title, res.summary())
	return res
}

// remount unmounts v, drops the caches (unless disabled) and mounts it again.
func (r *runner) remount(v view) error {
	if err := v.unmount(); err != nil {
		return fmt.Errorf("%s: %w", v.name(), err)
	}
	if r.cfg.dropCaches {
		if err := dropCaches(); err != nil {
			return fmt.Errorf("dropping caches: %w", err)
		}
	}
	if err := v.mount(); err != nil {
		return fmt.Errorf("%s: %w", v.name(), err)
	}
	return nil
}

// rotate returns views starting at index rep, so no view is always first.
func rotate(views []view, rep int) []view {
	n := len(views)
	out := make([]view, 0, n)
	for i := range n {
		out = append(out, views[(i+rep)%n])
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// mountAll mounts every view; on failure it unmounts those it mounted.
func mountAll(views []view) error {
	for i, v := range views {
		if err := v.mount(); err != nil {
			unmountAll(views[:i])
			return err
		}
	}
	return nil
}

func unmountAll(views []view) {
	for _, v := range views {
		if err := v.unmount(); err != nil {
			logf("unmount %s: %v", v.name(), err)
		}
	}
}
