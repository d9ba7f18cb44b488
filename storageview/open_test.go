package storageview

import (
	"context"
	"errors"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.podman.io/storage"
	"golang.org/x/sys/unix"

	"github.com/imagefs/imagefs/internal/fixture"
	"github.com/imagefs/imagefs/internal/testenv"
)

// TestFollowRecordedDriver: the driver a store is opened with follows the
// records it holds, as podman follows the driver it made the store with.
func TestFollowRecordedDriver(t *testing.T) {
	root := t.TempDir()
	store := func(drivers ...string) string {
		dir := filepath.Join(root, strings.Join(drivers, "+"))
		for _, d := range drivers {
			if err := os.MkdirAll(filepath.Join(dir, d+"-images"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, d+"-images", "images.json"), []byte("[]"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	for _, tc := range []struct {
		name      string
		graphRoot string
		driver    string
		explicit  bool
		want      string // "" with wantErr: refused
		wantErr   bool
	}{
		{"none configured, one recorded (vfs, which containers/storage would never pick)", store("vfs"), "", false, "vfs", false},
		{"configured overlay, vfs recorded", store("vfs"), "overlay", false, "vfs", false},
		{"asked for overlay, vfs recorded", store("vfs"), "overlay", true, "", true},
		{"configured overlay, both recorded", store("overlay", "vfs"), "overlay", false, "overlay", false},
		{"none configured, both recorded", store("overlay", "vfs"), "", false, "overlay", false},
		{"none configured, two others recorded", store("btrfs", "vfs"), "", false, "", false},
		{"configured overlay, nothing recorded", filepath.Join(root, "new"), "overlay", false, "overlay", false},
		{"configured vfs, two others recorded", store("overlay", "btrfs"), "vfs", false, "", true},
	} {
		so := storage.StoreOptions{GraphRoot: tc.graphRoot, GraphDriverName: tc.driver}
		err := followRecordedDriver(&so, tc.explicit, log.New(io.Discard, "", 0))
		if (err != nil) != tc.wantErr || (!tc.wantErr && so.GraphDriverName != tc.want) {
			t.Errorf("%s: driver %q, error %v; want %q, error %v", tc.name, so.GraphDriverName, err, tc.want, tc.wantErr)
		}
	}
}

// TestLockFilesNotWritable: with a part of the store turned read-only
// under the view (a file system mounted over it), a rebuild and a write
// are refused with an error instead of reaching containers/storage, which
// panics when it cannot open a lock file (and then hangs every later use
// of the store); once the part is writable again, both work.
func TestLockFilesNotWritable(t *testing.T) {
	testenv.RequireRoot(t)
	s := fixture.NewStore(t, "vfs")
	a := s.Add(t, fixture.Image{Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("a", "a\n")}}}})
	v := openView(t, s)
	dir := filepath.Join(s.GraphRoot, "vfs-images")
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	unmounted := false
	unmount := func() {
		if !unmounted {
			unmounted = true
			if err := unix.Unmount(dir, 0); err != nil {
				t.Errorf("unmount %s: %v", dir, err)
			}
		}
	}
	defer unmount()
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	before := v.Index()
	v.Invalidate()
	if ix := v.Index(); ix != before {
		t.Errorf("the index changed while the store could not be read")
	}
	if err := v.WaitUnlocked(context.Background()); !errors.Is(err, ErrReadOnly) {
		t.Errorf("WaitUnlocked with a read-only lock file: %v, want ErrReadOnly", err)
	}
	unmount()
	if err := v.Tag(a.ID, "localhost/after:1"); err != nil {
		t.Fatalf("tag once the store is writable again: %v", err)
	}
	if img := v.Index().ImageByName("localhost/after:1"); img == nil || img.ID != a.ID {
		t.Errorf("the tag does not show: %+v", img)
	}
}

// TestStoreDirs: the directories a mount point must keep clear of, the
// additional image stores included, however the options name them.
func TestStoreDirs(t *testing.T) {
	dirs, err := StoreDirs(Options{GraphRoot: "/g", RunRoot: "/r", Driver: "overlay",
		DriverOptions: []string{"overlay.mountopt=nodev", "overlay.imagestore=/a,/b", "imagestore=/c", "additionalimagestore=/d"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range dirs {
		got = append(got, d.What+" "+d.Path)
	}
	want := []string{"graph root /g", "run root /r", "additional image store /a", "additional image store /b",
		"additional image store /c", "additional image store /d"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("StoreDirs: %q, want %q", got, want)
	}
}

// TestPodmanRunRoot: without XDG_RUNTIME_DIR a user's run root is where
// podman 4.3 keeps it, not where newer containers/storage would.
func TestPodmanRunRoot(t *testing.T) {
	for _, c := range []struct {
		runRoot string
		uid     int
		want    string
	}{
		{"/tmp/storage-run-1001/containers", 1001, "/tmp/podman-run-1001/containers"},
		{"/run/user/1001/containers", 1001, "/run/user/1001/containers"},
		{"/tmp/storage-run-1002/containers", 1001, "/tmp/storage-run-1002/containers"},
		{"/run/containers/storage", 0, "/run/containers/storage"},
		{"/srv/run", 1001, "/srv/run"},
	} {
		if got := podmanRunRoot(c.runRoot, c.uid, "/tmp"); got != c.want {
			t.Errorf("podmanRunRoot(%q, %d) = %q, want %q", c.runRoot, c.uid, got, c.want)
		}
	}
}
