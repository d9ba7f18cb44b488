package storageview

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imagefs/imagefs/internal/fixture"
	"github.com/imagefs/imagefs/internal/testenv"
)

// removeAsHelperEnv makes the test binary a helper that removes one image
// (removeAsHelper), run as another user by TestRemoveAsNonRoot.
const removeAsHelperEnv = "STORAGEVIEW_REMOVE_AS"

type removeRequest struct {
	GraphRoot, RunRoot, Driver, ImageID string
	StorageConf                         string // CONTAINERS_STORAGE_CONF, if not /dev/null
}

// removeAsHelper opens the store the JSON request names, removes the
// image (if it names one) and prints "ok" or the error.
func removeAsHelper(req string) {
	var r removeRequest
	if err := json.Unmarshal([]byte(req), &r); err != nil {
		fmt.Println("error:", err)
		os.Exit(0)
	}
	v, err := Open(Options{GraphRoot: r.GraphRoot, RunRoot: r.RunRoot, Driver: r.Driver})
	if err == nil {
		if r.ImageID != "" {
			err = v.RemoveImage(r.ImageID)
		}
		if cerr := v.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Println("error:", err)
	} else {
		fmt.Println("ok")
	}
	os.Exit(0)
}

// TestRemoveAsNonRoot: a server that is not root removes an image when it
// can delete all of the image's layers, opening the user's own 0555
// directories (every overlay diff directory is one) for it. A rootless
// store holds files of its user namespace's other users, which podman
// deletes as root of that namespace; outside it the deletion would stop
// half way through a layer. Such a removal is refused and changes nothing,
// and a layer that stays (shared with another image) keeps its modes.
func TestRemoveAsNonRoot(t *testing.T) {
	testenv.RequireRoot(t) // to give the store to another user
	for _, tc := range []struct {
		name, driver string
		imageStore   bool // layers in storage.conf's imagestore, not the graph root
	}{{"vfs", "vfs", false}, {"overlay", "overlay", false}, {"vfs-imagestore", "vfs", true}} {
		t.Run(tc.name, func(t *testing.T) {
			driver := tc.driver
			var s *fixture.Store
			var conf string // the helper's storage.conf, which alone names the image store
			if tc.imageStore {
				s = fixture.NewStoreWithImageStore(t, driver)
				conf = s.StorageConfPath()
			} else {
				s = fixture.NewStore(t, driver)
			}
			locked := s.Add(t, fixture.Image{Names: []string{"localhost/locked:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{
				fixture.Dir("home"), fixture.Dir("home/u", fixture.Mode(0o700)), fixture.File("home/u/secret", "s\n"),
			}}}})
			base := fixture.Layer{Entries: []fixture.Entry{fixture.Dir("ro", fixture.Mode(0o555)), fixture.File("ro/f", "f\n")}}
			plain := s.Add(t, fixture.Image{Names: []string{"localhost/plain:1"}, Layers: []fixture.Layer{base, {Entries: []fixture.Entry{
				fixture.File("etc/plain", "p\n"),
			}}}})
			kept := s.Add(t, fixture.Image{Names: []string{"localhost/kept:1"}, Layers: []fixture.Layer{base}})
			s.Close()
			const user = 65534
			giveStore(t, s, user)
			layerDir := func(id string) string {
				root := s.GraphRoot
				if s.ImageStore != "" {
					root = s.ImageStore
				}
				if driver == "vfs" {
					return filepath.Join(root, "vfs", "dir", id)
				}
				return filepath.Join(root, "overlay", id, "diff")
			}
			// The locked image's home/u stays root's, as a container
			// user's directory is a subuid's on disk.
			secretDir := filepath.Join(layerDir(locked.LayerIDs[0]), "home", "u")
			if err := os.Lchown(secretDir, 0, 0); err != nil {
				t.Fatal(err)
			}
			modes := func(id string) string {
				out, err := exec.Command("find", layerDir(id), "-type", "d", "-printf", "%P %m\n").Output()
				if err != nil {
					t.Fatal(err)
				}
				return string(out)
			}
			lockedModes, keptModes := modes(locked.LayerIDs[0]), modes(kept.LayerIDs[0])
			asUser := helperAs(t, user)
			removeAs := func(id string) string {
				return asUser(removeRequest{GraphRoot: s.GraphRoot, RunRoot: s.RunRoot, Driver: driver, ImageID: id, StorageConf: conf})
			}

			out := removeAs(locked.ID)
			if !strings.Contains(out, "only the store's user namespace can remove it") || !strings.Contains(out, secretDir) {
				t.Errorf("removing the image with a directory the user may not empty: %q, want a refusal naming %s", out, secretDir)
			}
			if _, err := os.Stat(filepath.Join(secretDir, "secret")); err != nil {
				t.Errorf("the refused removal deleted files: %v", err)
			}
			if got := modes(locked.LayerIDs[0]); got != lockedModes {
				t.Errorf("the refused removal changed modes:\n%s\nwas\n%s", got, lockedModes)
			}
			if out := removeAs(plain.ID); out != "ok" {
				t.Errorf("removing an image the user may delete: %q", out)
			}
			if got := modes(kept.LayerIDs[0]); got != keptModes {
				t.Errorf("the layer another image keeps has other modes now:\n%s\nwas\n%s", got, keptModes)
			}
			if out := removeAs(""); out != "ok" {
				t.Errorf("the store does not open after the removals: %s", out)
			}
			// The fixture's store object knows of the image store; this
			// process's storage.conf (read once) does not.
			has := func(image, layer string) bool {
				_, ierr := s.Store.Image(image)
				_, lerr := s.Store.Layer(layer)
				return ierr == nil && lerr == nil
			}
			if !has(locked.ID, locked.LayerIDs[0]) || !has(kept.ID, kept.LayerIDs[0]) {
				t.Errorf("the store lost what it was not asked to: locked %v, kept %v",
					has(locked.ID, locked.LayerIDs[0]), has(kept.ID, kept.LayerIDs[0]))
			}
			if _, err := s.Store.Image(plain.ID); err == nil {
				t.Errorf("the removed image is still there")
			}
			if _, err := s.Store.Layer(plain.LayerIDs[1]); err == nil {
				t.Errorf("the removed image's own layer is still there")
			}
		})
	}
}

// giveStore makes the closed store s user's, and its directories' parents
// searchable.
func giveStore(t *testing.T, s *fixture.Store, user int) {
	t.Helper()
	for _, root := range []string{s.GraphRoot, s.RunRoot, s.ImageStore} {
		if root == "" {
			continue
		}
		for dir := filepath.Dir(root); dir != "/"; dir = filepath.Dir(dir) {
			var st syscall.Stat_t
			if syscall.Stat(dir, &st) == nil && st.Mode&0o001 == 0 {
				if err := os.Chmod(dir, os.FileMode(st.Mode&0o777|0o001)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", user, user), root).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v %s", err, out)
		}
	}
}

// helperAs returns a function running removeAsHelper as user for a
// request, returning what it printed.
func helperAs(t *testing.T, user int) func(removeRequest) string {
	t.Helper()
	// The test binary, where the user can run it.
	binDir, err := os.MkdirTemp("/tmp", "ifsbin") // not under TMPDIR, which may be private
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(binDir) })
	bin := filepath.Join(binDir, "storageview.test")
	if out, err := exec.Command("cp", os.Args[0], bin).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	if err := os.Chmod(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	xdg := filepath.Join(binDir, "xdg")
	if err := os.Mkdir(xdg, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(xdg, user, user); err != nil {
		t.Fatal(err)
	}
	return func(r removeRequest) string {
		req, _ := json.Marshal(r)
		conf := r.StorageConf
		if conf == "" {
			conf = "/dev/null"
		}
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), removeAsHelperEnv+"="+string(req), "XDG_RUNTIME_DIR="+xdg, "HOME=/nonexistent",
			"CONTAINERS_STORAGE_CONF="+conf)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(user), Gid: uint32(user)}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
}

// TestOpenOverlayAsNonRoot: a user's own overlay store opens without
// root: the driver's private bind mount of its home, which podman makes
// as root of its user namespace, is skipped.
func TestOpenOverlayAsNonRoot(t *testing.T) {
	testenv.RequireRoot(t)
	s := fixture.NewStore(t, "overlay")
	s.Add(t, fixture.Image{Names: []string{"localhost/a:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("a", "a\n")}}}})
	s.Close()
	const user = 65534
	giveStore(t, s, user)
	if out := helperAs(t, user)(removeRequest{GraphRoot: s.GraphRoot, RunRoot: s.RunRoot, Driver: "overlay"}); out != "ok" {
		t.Errorf("opening the user's overlay store as the user: %s", out)
	}
}

// TestRemoveAsNonRootMappedLayer: a vfs image holds a mapped copy of its
// top layer once a container of another ID mapping used it, and deleting
// the image deletes that copy first: its files, of other IDs, must be
// checked too, or the deletion fails after the image's record is gone
// (and leaves a directory that keeps the store from opening).
func TestRemoveAsNonRootMappedLayer(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequirePodman(t)
	s := fixture.NewStore(t, "vfs")
	img := s.Add(t, fixture.Image{Names: []string{"localhost/m:1"}, Layers: []fixture.Layer{{Entries: []fixture.Entry{fixture.File("etc/m", "m\n")}}}})
	s.PodmanOutput(t, "create", "--pull=never", "--net", "none", "--uidmap", "0:1:2000", "--gidmap", "0:1:2000", "--name", "mapped", img.ID, "true")
	s.PodmanOutput(t, "rm", "mapped")
	stored, err := s.Store.Image(img.ID)
	if err != nil || len(stored.MappedTopLayers) != 1 {
		t.Fatalf("the image has no mapped top layer: %+v %v", stored, err)
	}
	mapped := filepath.Join(s.GraphRoot, "vfs", "dir", stored.MappedTopLayers[0])
	s.Close()
	const user = 65534
	giveStore(t, s, user)
	// The mapped copy's files are of the mapping's IDs, not the user's.
	if out, err := exec.Command("chown", "-R", "100000:100000", mapped).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	removeAs := helperAs(t, user)
	req := removeRequest{GraphRoot: s.GraphRoot, RunRoot: s.RunRoot, Driver: "vfs", ImageID: img.ID}
	if out := removeAs(req); !strings.Contains(out, "only the store's user namespace can remove it") || !strings.Contains(out, mapped) {
		t.Errorf("removing the image whose mapped layer the user may not delete: %q, want a refusal naming %s", out, mapped)
	}
	if out := removeAs(removeRequest{GraphRoot: s.GraphRoot, RunRoot: s.RunRoot, Driver: "vfs"}); out != "ok" {
		t.Fatalf("the store does not open after the refusal: %s", out)
	}
	s.Store.Free()
	v, err := Open(Options{GraphRoot: s.GraphRoot, RunRoot: s.RunRoot, Driver: "vfs"})
	if err != nil {
		t.Fatal(err)
	}
	if v.Index().ImageByID(img.ID) == nil {
		t.Errorf("the refused removal removed the image")
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	// The user's own mapped copy goes with the image.
	if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", user, user), mapped).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	if out := removeAs(req); out != "ok" {
		t.Errorf("removing the image: %s", out)
	}
	if out := removeAs(removeRequest{GraphRoot: s.GraphRoot, RunRoot: s.RunRoot, Driver: "vfs"}); out != "ok" {
		t.Errorf("the store does not open after the removal: %s", out)
	}
	if _, err := os.Stat(mapped); !os.IsNotExist(err) {
		t.Errorf("the mapped layer is still there: %v", err)
	}
}
