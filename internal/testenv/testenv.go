// Package testenv holds the capability checks shared by imagefs tests.
//
// A test that needs FUSE, root or podman calls the matching Require
// function. Normally a missing capability skips the test; with
// IMAGEFS_REQUIRE_ALL=1 (set by .ci/run) it fails it, so a green CI means
// the mount and podman tests really ran.
package testenv

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// RequireAllVar names the environment variable that turns skips into failures.
const RequireAllVar = "IMAGEFS_REQUIRE_ALL"

func missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv(RequireAllVar) == "1" {
		t.Fatalf("%s is missing and %s=1: this test must run", what, RequireAllVar)
	}
	t.Skipf("%s is missing (set %s=1 to fail instead)", what, RequireAllVar)
}

// RequireRoot skips (or fails) unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "root")
	}
}

// RequireFUSE skips (or fails) unless /dev/fuse can be opened and we are root.
func RequireFUSE(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		missing(t, "/dev/fuse ("+err.Error()+")")
		return
	}
	f.Close()
}

// RequirePodman skips (or fails) unless the podman binary is on PATH; it
// returns its path.
func RequirePodman(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("podman")
	if err != nil {
		missing(t, "podman")
	}
	return p
}

// RequireSkopeo skips (or fails) unless the skopeo binary is on PATH.
func RequireSkopeo(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("skopeo"); err != nil {
		missing(t, "skopeo")
	}
}

// MountsUnder lists the mount points in /proc/self/mounts at or below dir.
func MountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		mp := unescapeMount(fields[1])
		if mp == dir || strings.HasPrefix(mp, strings.TrimSuffix(dir, "/")+"/") {
			found = append(found, mp)
		}
	}
	return found, sc.Err()
}

// unescapeMount undoes the octal escapes (\040 for space…) of /proc/mounts.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			v := (s[i+1]-'0')*64 + (s[i+2]-'0')*8 + (s[i+3] - '0')
			b.WriteByte(v)
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// NoMountsLeft registers a cleanup that fails the test if any mount is
// still present at or below dir when the test ends. Register it before the
// cleanups that unmount (cleanups run last-registered first).
func NoMountsLeft(t testing.TB, dir string) {
	t.Helper()
	t.Cleanup(func() {
		left, err := MountsUnder(dir)
		if err != nil {
			t.Errorf("reading mounts: %v", err)
		}
		if len(left) > 0 {
			t.Errorf("mounts left behind under %s: %v", dir, left)
		}
	})
}

// HoldWriteLock makes another process hold the lock file at path locked
// for writing, as podman holds a store's lock while it writes (an fcntl
// lock, as containers/storage takes), until the returned release or the
// end of the test.
func HoldWriteLock(t testing.TB, path string) (release func()) {
	t.Helper()
	holder := exec.Command("python3", "-c", `
import fcntl, sys, time
f = open(sys.argv[1], "r+")
fcntl.lockf(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(600)
`, path)
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { holder.Process.Kill(); holder.Wait() }) }
	t.Cleanup(release)
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "locked\n" {
		t.Fatalf("lock holder said %q", line)
	}
	return release
}
