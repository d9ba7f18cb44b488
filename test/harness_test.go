package test

// Harness for end-to-end tests of the real imagefs binary: build it once,
// run it, find the process serving a mount, unmount with retries, and check
// mounts and processes from the outside (/proc), not through imagefs's own
// packages.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/fixture"
	"github.com/imagefs/imagefs/internal/testenv"
)

// binEnvVar names the imagefs binary to test; `make test` sets it to the
// bin/imagefs it just built. Without it the harness builds one.
const binEnvVar = "IMAGEFS_BIN"

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// imagefsBin returns the path of the imagefs binary under test, building
// it (once per test process) when IMAGEFS_BIN is not set. The build goes to
// a fixed path under the temp dir, replaced atomically, so repeated runs do
// not pile up binaries.
func imagefsBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(binEnvVar); p != "" {
		// Absolute and without symlinks: it is compared with /proc/<pid>/exe.
		abs, err := filepath.Abs(p)
		if err == nil {
			abs, err = filepath.EvalSymlinks(abs)
		}
		if err != nil {
			t.Fatalf("%s=%s: %v", binEnvVar, p, err)
		}
		return abs
	}
	buildOnce.Do(func() { builtBin, buildErr = buildImagefs() })
	if buildErr != nil {
		t.Fatalf("building imagefs: %v", buildErr)
	}
	return builtBin
}

func buildImagefs() (string, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = "/usr/local/go/bin/go"
		if _, err := os.Stat(gobin); err != nil {
			return "", errors.New("no go command to build imagefs with (set IMAGEFS_BIN)")
		}
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("imagefs-e2e-bin-%d", os.Geteuid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "imagefs-*.tmp")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command(gobin, "build", "-o", tmp.Name(), "./cmd/imagefs")
	cmd.Dir = ".." // the module root; tests run in test/
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false -tags=exclude_graphdriver_btrfs,containers_image_openpgp")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v\n%s", err, out)
	}
	final := filepath.Join(dir, "imagefs")
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(final) // compared with /proc/<pid>/exe
}

// cliEnv is one test's world: a fixture store, a run dir for the servers'
// lock files, and the environment every imagefs invocation gets.
type cliEnv struct {
	t     *testing.T
	bin   string
	store *fixture.Store
	dir   string // scratch dir (mountpoints, log files)
	env   []string

	shortRun string // see podman
}

// newCLIEnv makes a store holding one image (two names) and closes it, so
// the binary is its only user.
func newCLIEnv(t *testing.T) (*cliEnv, fixture.Added) {
	t.Helper()
	testenv.RequireFUSE(t)
	s := fixture.NewStore(t, "overlay")
	added := s.Add(t, fixture.Image{
		Names: []string{"localhost/cli/hello:1", "localhost/cli/hello:latest"},
		Layers: []fixture.Layer{{Entries: []fixture.Entry{
			fixture.File("etc/hello", "hello\n"),
		}}},
	})
	s.Close()
	return cliEnvFor(t, s), added
}

// cliEnvFor runs the binary against the closed store s.
func cliEnvFor(t *testing.T, s *fixture.Store) *cliEnv {
	t.Helper()
	testenv.RequireFUSE(t)
	bin := imagefsBin(t)
	dir := t.TempDir()
	testenv.NoMountsLeft(t, dir) // registered before the unmount cleanups, so it runs after them
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	return &cliEnv{
		t:     t,
		bin:   bin,
		store: s,
		dir:   dir,
		// The store's own storage.conf (CONTAINERS_STORAGE_CONF) keeps the
		// machine's configuration out, for podman and imagefs alike.
		env: append(s.PodmanEnv(), "IMAGEFS_RUN_DIR="+run),
	}
}

// useStorageConf makes imagefs and podman find the fixture store by a
// storage.conf naming driver, with more settings ("key = value\n" lines)
// in its [storage] table, instead of the fixture's own.
func (e *cliEnv) useStorageConf(driver, more string) {
	e.t.Helper()
	conf := filepath.Join(e.dir, "storage.conf")
	text := fmt.Sprintf("[storage]\ndriver = %q\nrunroot = %q\ngraphroot = %q\n%s", driver, e.store.RunRoot, e.store.GraphRoot, more)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.env = slices.DeleteFunc(e.env, func(kv string) bool { return strings.HasPrefix(kv, "CONTAINERS_STORAGE_CONF=") })
	e.env = append(e.env, "CONTAINERS_STORAGE_CONF="+conf)
}

// storeFlags are the flags that point imagefs at the fixture store.
func (e *cliEnv) storeFlags() []string {
	return []string{"--root", e.store.GraphRoot, "--runroot", e.store.RunRoot, "--storage-driver", e.store.Driver}
}

// mkdir makes a fresh directory under the scratch dir.
func (e *cliEnv) mkdir(name string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		e.t.Fatal(err)
	}
	return p
}

type runResult struct {
	code           int
	stdout, stderr string
}

// run runs imagefs with args and waits for it (at most timeout).
func (e *cliEnv) run(timeout time.Duration, args ...string) runResult {
	e.t.Helper()
	return e.runAs(nil, timeout, args...)
}

// runAs is run as another user (nil: as the test).
func (e *cliEnv) runAs(cred *syscall.Credential, timeout time.Duration, args ...string) runResult {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = e.env
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := runResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		e.t.Fatalf("imagefs %s: did not finish within %s\nstderr: %s", strings.Join(args, " "), timeout, r.stderr)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		e.t.Fatalf("imagefs %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mountBackground runs `imagefs mount` (background mode) on mp and
// requires it to succeed and leave a live mount; a cleanup unmounts with
// retries if the test did not. It returns the serving process's pid.
func (e *cliEnv) mountBackground(mp string, extra ...string) int {
	e.t.Helper()
	args := append(append([]string{"mount"}, e.storeFlags()...), extra...)
	r := e.run(60*time.Second, append(args, mp)...)
	if r.code != 0 {
		e.t.Fatalf("imagefs mount: exit %d\nstderr: %s", r.code, r.stderr)
	}
	e.t.Cleanup(func() { unmountRetry(e.t, mp) })
	// The command returns only once the mount is ready: no waiting here.
	if !isImagefsMount(e.t, mp) {
		e.t.Fatalf("imagefs mount returned 0 but %s is not a fuse.imagefs mount", mp)
	}
	pid := serverPid(e.t, e.bin, mp)
	if pid == 0 {
		e.t.Fatalf("no imagefs process serves %s", mp)
	}
	return pid
}

// umount runs `imagefs umount mp` and requires it to succeed and the
// server pid to have exited after it (so it has closed the store).
func (e *cliEnv) umount(mp string, pid int) {
	e.t.Helper()
	if r := e.run(60*time.Second, "umount", mp); r.code != 0 {
		e.t.Fatalf("imagefs umount: exit %d: %s", r.code, r.stderr)
	}
	waitGone(e.t, pid, 10*time.Second)
}

// isImagefsMount reports whether mp is (topmost) a fuse.imagefs mount,
// read from /proc/self/mountinfo.
func isImagefsMount(t testing.TB, mp string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	found := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || strings.ReplaceAll(fields[4], `\040`, " ") != mp {
			continue
		}
		found = false
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) {
				found = fields[i+1] == "fuse.imagefs"
			}
		}
	}
	return found
}

// serverPid finds the live (non-zombie) imagefs process whose command line
// is a mount of mp, by scanning /proc; 0 if there is none.
func serverPid(t testing.TB, bin, mp string) int {
	t.Helper()
	pids := imagefsProcesses(t, bin, mp)
	if len(pids) > 1 {
		t.Fatalf("several imagefs processes serve %s: %v", mp, pids)
	}
	if len(pids) == 1 {
		return pids[0]
	}
	return 0
}

// imagefsProcesses lists live processes running bin whose arguments
// mention needle.
func imagefsProcesses(t testing.TB, bin, needle string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || exe != bin {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte(needle)) {
			continue
		}
		if processGone(pid) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// processGone reports whether pid has exited: no /proc entry, or a zombie
// nobody reaped (the serving process's parent exited long ago).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) state ...; comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// waitGone waits up to timeout for pid to exit.
func waitGone(t testing.TB, pid int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("imagefs process %d still running %s after its mount ended", pid, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// unmountRetry unmounts mp if it is still an imagefs mount, retrying while
// busy, and as a last resort detaching it; a failure fails the test.
func unmountRetry(t testing.TB, mp string) {
	t.Helper()
	if !isImagefsMount(t, mp) {
		return
	}
	var err error
	for try := 0; try < 20; try++ {
		if err = syscall.Unmount(mp, 0); err == nil || err == syscall.EINVAL {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Unmount(mp, syscall.MNT_DETACH)
	t.Errorf("test left %s mounted; unmount: %v (detached it)", mp, err)
}

// shortTempDir is a fresh directory under /tmp, removed at the end (and
// checked to hold no mount then): podman refuses run roots longer than 50
// bytes, which paths under t.TempDir easily are.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "ifs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	testenv.NoMountsLeft(t, dir)
	return dir
}

// storeUsable proves the store is free again after imagefs let go of it:
// podman can list it and change it (a tag takes the store's write lock).
func (e *cliEnv) storeUsable(id string) {
	e.t.Helper()
	for _, args := range [][]string{
		{"tag", id, "localhost/cli/after:1"},
		{"images", "-a", "--noheading", "--format", "{{.Repository}}:{{.Tag}}"},
	} {
		cmd := e.podman(args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			e.t.Fatal(err)
		}
		timer := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
		err := cmd.Wait()
		timer.Stop()
		if err != nil {
			e.t.Fatalf("podman %s after unmount: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		if args[0] == "images" && !strings.Contains(out.String(), "localhost/cli/after:1") {
			e.t.Fatalf("podman images after tag does not list localhost/cli/after:1:\n%s", out.String())
		}
	}
}

// podman runs podman on the test's store. podman 4.3 refuses a runroot
// longer than 50 characters, which t.TempDir paths easily are: then it
// gets the runroot through a short symlink (the same directory, so the
// same locks).
func (e *cliEnv) podman(args ...string) *exec.Cmd {
	e.t.Helper()
	cmd := e.store.Podman(args...)
	if len(e.store.RunRoot) <= 50 {
		return cmd
	}
	if e.shortRun == "" {
		dir, err := os.MkdirTemp("/tmp", "ifs")
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { os.RemoveAll(dir) })
		e.shortRun = filepath.Join(dir, "r")
		if err := os.Symlink(e.store.RunRoot, e.shortRun); err != nil {
			e.t.Fatal(err)
		}
	}
	for i, a := range cmd.Args {
		if a == e.store.RunRoot && i > 0 && cmd.Args[i-1] == "--runroot" {
			cmd.Args[i] = e.shortRun
		}
	}
	return cmd
}

// oneErrorLine checks the contract for a refused command: a non-zero exit,
// nothing on stdout, exactly one line on stderr that contains want.
func oneErrorLine(t testing.TB, what string, r runResult, want string) {
	t.Helper()
	if r.code == 0 {
		t.Errorf("%s: exit 0, want failure (stderr %q)", what, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("%s: stdout %q, want nothing", what, r.stdout)
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if r.stderr == "" || len(lines) != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("%s: stderr must be exactly one line, got %q", what, r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Errorf("%s: stderr %q does not mention %q", what, r.stderr, want)
	}
}
