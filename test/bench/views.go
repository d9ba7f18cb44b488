package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A view is one way of looking at an image's root file system: the
// workloads run in root() and are timed on each view in turn.
type view interface {
	name() string
	mount() error
	unmount() error
	root() string
	pid() int // the serving process, 0 for the kernel
}

// Column names of the three views.
const (
	kernelName  = "kernel"
	fuseOvlName = "fuse-overlayfs"
	imagefsName = "imagefs"
)

// kernelView is the kernel's overlayfs over the image's layer diff
// directories: what `podman image mount` gives (read-only, lowers only).
type kernelView struct {
	mnt    string
	lowers []string // top first
}

func (v *kernelView) name() string { return kernelName }
func (v *kernelView) root() string { return v.mnt }
func (v *kernelView) pid() int     { return 0 }

func (v *kernelView) mount() error {
	if err := os.MkdirAll(v.mnt, 0o755); err != nil {
		return err
	}
	opts := "lowerdir=" + strings.Join(v.lowers, ":")
	if err := syscall.Mount("overlay", v.mnt, "overlay", syscall.MS_RDONLY, opts); err != nil {
		return fmt.Errorf("mount -t overlay -o ro,%s %s: %w", opts, v.mnt, err)
	}
	return nil
}

func (v *kernelView) unmount() error { return unmountRetry(v.mnt) }

// serverView is a FUSE server over the image's layer directories, run as
// our child: fuse-overlayfs, or the go-fuse floor (floor.go).
type serverView struct {
	title   string
	command func(lowers, mnt string) *exec.Cmd
	fstype  string // in /proc/self/mountinfo once mounted
	mnt     string
	lowers  []string // top first
	log     string
	srv     *server
}

// fuseOverlayView is fuse-overlayfs (as rootless podman uses it) over the
// same diff directories; without upperdir it is read-only.
func fuseOverlayView(mnt string, lowers []string, log string) *serverView {
	return &serverView{title: fuseOvlName, fstype: "fuse.fuse-overlayfs", mnt: mnt, lowers: lowers, log: log,
		command: func(lowers, mnt string) *exec.Cmd {
			return exec.Command("fuse-overlayfs", "-f", "-o", "lowerdir="+lowers, mnt)
		}}
}

func (v *serverView) name() string { return v.title }
func (v *serverView) root() string { return v.mnt }

func (v *serverView) pid() int {
	if v.srv == nil {
		return 0
	}
	return v.srv.pid()
}

func (v *serverView) mount() error {
	if err := os.MkdirAll(v.mnt, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(v.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := v.command(strings.Join(v.lowers, ":"), v.mnt)
	cmd.Stdout, cmd.Stderr = logf, logf
	srv, err := startAndWaitMount(cmd, v.mnt, v.fstype)
	if err != nil {
		return fmt.Errorf("%s (log %s): %w", v.title, v.log, err)
	}
	v.srv = srv
	return nil
}

func (v *serverView) unmount() error {
	if v.srv == nil {
		return nil
	}
	err := unmountRetry(v.mnt)
	v.srv.wait(10 * time.Second)
	v.srv = nil
	return err
}

// imagefsView is an imagefs mount of a store, served by `imagefs mount -f`
// run as our child (so we know its pid), and a directory inside it.
type imagefsView struct {
	bin        string
	mnt        string
	graph, run string
	sub        string // the directory the workloads run in, relative to mnt
	log        string
	runDir     string // IMAGEFS_RUN_DIR
	profileDir string // where each mount writes a CPU profile (--cpuprofile); "" for none
	profiles   int
	srv        *server
}

func (v *imagefsView) name() string { return imagefsName }
func (v *imagefsView) root() string { return filepath.Join(v.mnt, v.sub) }

func (v *imagefsView) pid() int {
	if v.srv == nil {
		return 0
	}
	return v.srv.pid()
}

// args are the arguments of imagefs mount, without the mount point; with
// profile, a new CPU profile file when profiling.
func (v *imagefsView) args(profile bool) []string {
	args := []string{"mount", "--root", v.graph, "--runroot", v.run, "--storage-driver", "overlay"}
	if profile && v.profileDir != "" {
		v.profiles++
		args = append(args, "--cpuprofile", filepath.Join(v.profileDir, fmt.Sprintf("%s-%03d.pprof", filepath.Base(v.mnt), v.profiles)))
	}
	return args
}

func (v *imagefsView) env() []string {
	return append(os.Environ(), "IMAGEFS_RUN_DIR="+v.runDir)
}

func (v *imagefsView) mount() error {
	if err := os.MkdirAll(v.mnt, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(v.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(v.bin, append(v.args(true), "-f", v.mnt)...)
	cmd.Env = v.env()
	cmd.Stdout, cmd.Stderr = logf, logf
	srv, err := startAndWaitMount(cmd, v.mnt, "fuse.imagefs")
	if err != nil {
		return fmt.Errorf("imagefs mount (log %s): %w", v.log, err)
	}
	v.srv = srv
	return nil
}

func (v *imagefsView) unmount() error {
	if v.srv == nil {
		return nil
	}
	out, err := runCmd(10*time.Second, v.env(), v.bin, "umount", v.mnt)
	if err != nil {
		err = fmt.Errorf("imagefs umount %s: %v: %s", v.mnt, err, out)
		_ = unmountRetry(v.mnt)
	}
	v.srv.wait(30 * time.Second)
	v.srv = nil
	return err
}

// server is a FUSE server process we started.
type server struct {
	cmd    *exec.Cmd
	exited chan error // receives Wait's result once
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// startAndWaitMount starts a FUSE server and waits until its mount shows
// in /proc/self/mountinfo with fstype, or the server exits.
func startAndWaitMount(cmd *exec.Cmd, mnt, fstype string) (*server, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, exited: make(chan error, 1)}
	go func() { s.exited <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if ok, _ := isMountedAs(mnt, fstype); ok {
			return s, nil
		}
		select {
		case err := <-s.exited:
			return nil, fmt.Errorf("exited before mounting: %v", err)
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-s.exited
			return nil, errors.New("not mounted after 60s")
		}
	}
}

// wait waits for the server to exit (after its unmount) and kills it after
// timeout.
func (s *server) wait(timeout time.Duration) {
	select {
	case <-s.exited:
	case <-time.After(timeout):
		logf("process %d did not exit after its unmount; killing it", s.pid())
		_ = syscall.Kill(s.pid(), syscall.SIGKILL)
		<-s.exited
	}
}

// unmountRetry unmounts mnt, retrying while it is busy, lazily at last.
func unmountRetry(mnt string) error {
	var err error
	for range 50 {
		if ok, _ := isMounted(mnt); !ok {
			return nil
		}
		if err = syscall.Unmount(mnt, 0); err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ok, _ := isMounted(mnt); !ok {
		return nil
	}
	if lerr := syscall.Unmount(mnt, syscall.MNT_DETACH); lerr != nil {
		return fmt.Errorf("unmounting %s: %v (lazy: %v)", mnt, err, lerr)
	}
	return fmt.Errorf("unmounting %s: %v; detached it", mnt, err)
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct{ point, fstype string }

func readMounts() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		if len(fields) < 7 {
			continue
		}
		e := mountEntry{point: unescapeOctal(fields[4])}
		for i := 6; i < len(fields)-1; i++ {
			if fields[i] == "-" {
				e.fstype = fields[i+1]
				break
			}
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

func isMounted(mnt string) (bool, error) { return isMountedAs(mnt, "") }

func isMountedAs(mnt, fstype string) (bool, error) {
	ms, err := readMounts()
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m.point == mnt && (fstype == "" || m.fstype == fstype) {
			return true, nil
		}
	}
	return false, nil
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	ms, err := readMounts()
	if err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	var out []string
	for _, m := range ms {
		if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
			out = append(out, m.point)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	return out, nil
}

func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ---- the serving process's resources ----

// procStats are a process's CPU time and memory.
type procStats struct {
	cpu   time.Duration // utime + stime
	rssKB int64         // VmRSS
	hwmKB int64         // VmHWM: peak RSS since start or the last resetPeak
}

var clockTicks = 100 // sysconf(_SC_CLK_TCK); 100 on every Linux we run on

func readProcStats(pid int) (procStats, error) {
	var ps procStats
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ps, err
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return ps, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	// After "(comm)": state(3) ... utime is field 14, stime 15.
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return ps, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	ps.cpu = time.Duration(ut+st) * time.Second / time.Duration(clockTicks)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ps, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			ps.rssKB = n
		case "VmHWM":
			ps.hwmKB = n
		}
	}
	return ps, nil
}

// resetPeak resets the process's VmHWM to its current RSS.
func resetPeak(pid int) {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// dropCaches writes back dirty data and drops the page, dentry and inode
// caches, for cold runs.
func dropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}
