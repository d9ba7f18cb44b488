package nodes

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagefs/imagefs/internal/union"
	"github.com/imagefs/imagefs/internal/union/uniontest"
)

// TestRootfsTrustedXattrsListed: trusted.* names are listed only to a
// caller holding CAP_SYS_ADMIN, as the layers' own file system lists them;
// imagefs reads them as root for everybody.
func TestRootfsTrustedXattrsListed(t *testing.T) {
	l := uniontest.NewLayer(t, t.TempDir(), "l0", false)
	l.File("f", "f", 0o644).Xattr("f", "trusted.secret", "s").Xattr("f", "user.open", "o")
	l.Stamp()
	mnt, _ := mountRootfs(t, newRootfsFakeStore([]union.Layer{{ID: "layer0", Path: l.Dir}}, false), nil)
	f := filepath.Join(mnt, "rootfs", "f")

	if got, want := listxattrNames(t, f), []string{"trusted.secret", "user.open"}; !slices.Equal(got, want) {
		t.Errorf("listxattr as root: %q, want %q", got, want)
	}
	// Without CAP_SYS_ADMIN (capabilities are per thread: this goroutine's
	// thread drops it and ends with the goroutine, never unlocked).
	got := make(chan []string)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			t.Error(err)
			got <- nil
			return
		}
		data[0].Effective &^= 1 << unix.CAP_SYS_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			t.Error(err)
			got <- nil
			return
		}
		got <- listxattrNames(t, f)
	}()
	if names, want := <-got, []string{"user.open"}; !slices.Equal(names, want) {
		t.Errorf("listxattr without CAP_SYS_ADMIN: %q, want %q", names, want)
	}

	// Root of a user namespace of its own holds every capability there,
	// none over the layers' file system, which then lists no trusted.*.
	inUserNS := func(p string) []string {
		out, err := exec.Command("unshare", "--user", "--map-root-user", "python3", "-c",
			"import os, sys; print(' '.join(sorted(os.listxattr(sys.argv[1], follow_symlinks=False))))", p).Output()
		if err != nil {
			t.Fatalf("unshare --user … listxattr %s: %v", p, err)
		}
		return strings.Fields(string(out))
	}
	want := inUserNS(filepath.Join(l.Dir, "f"))
	if slices.Contains(want, "trusted.secret") || !slices.Contains(want, "user.open") {
		t.Fatalf("the layer's own file system lists %q in a user namespace", want)
	}
	if got := inUserNS(f); !slices.Equal(got, want) {
		t.Errorf("listxattr in a user namespace: %q, want %q as the layer's file system lists them", got, want)
	}
}

func listxattrNames(t *testing.T, p string) []string {
	buf := make([]byte, 1024)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Error(err)
		return nil
	}
	names := strings.Split(strings.TrimSuffix(string(buf[:n]), "\x00"), "\x00")
	slices.Sort(names)
	return names
}
