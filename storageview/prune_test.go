package storageview

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/internal/fixture"
)

// buildChain makes a store in which podman build --layers leaves untagged
// intermediate images: localhost/app:1 and :2 share the intermediate of
// their first step (COPY a); app:1 has two more (LABEL, COPY b), app:2
// one (COPY c); localhost/base:1 is their named base. localhost/used:1
// sits on an intermediate (COPY u) that a container uses.
func buildChain(t *testing.T) *fixture.Store {
	t.Helper()
	s, dir := newPodmanStore(t, map[string]string{"etc/": "", "etc/hello": "hello\n"})
	s.PodmanOutput(t, "import", filepath.Join(dir, "base.tar"), "localhost/base:1")
	for name, content := range map[string]string{"a": "a\n", "b": "b\n", "c": "c\n", "u": "u\n"} {
		writeFile(t, filepath.Join(dir, name), []byte(content))
	}
	build := func(tag, steps string) {
		file := filepath.Join(dir, strings.NewReplacer(":", "-", "/", "-").Replace(tag))
		writeFile(t, file, []byte("FROM localhost/base:1\n"+steps))
		s.PodmanOutput(t, "build", "--layers", "--pull=never", "-f", file, "-t", tag, dir)
	}
	build("localhost/app:1", "COPY a /a\nLABEL step=2\nCOPY b /b\n")
	build("localhost/app:2", "COPY a /a\nCOPY c /c\n")
	build("localhost/used:1", "COPY u /u\nLABEL used=yes\n")
	return s
}

// podmanNames is what podman images -a shows: the names, sorted, and how
// many images have none.
func podmanNames(t *testing.T, s *fixture.Store) (names []string, unnamed int) {
	t.Helper()
	for _, n := range podmanRepoTags(t, s) {
		if len(n) == 0 {
			unnamed++
		}
		names = append(names, n...)
	}
	slices.Sort(names)
	return names, unnamed
}

// TestPruneParentsLikePodman removes images through the View in one store
// and with podman rmi in another built the same way: the images left must
// be the same, dangling intermediates included.
func TestPruneParentsLikePodman(t *testing.T) {
	ours, theirs := buildChain(t), buildChain(t)
	v := openView(t, ours)
	names, unnamed := podmanNames(t, ours)
	// base, app:1, app:2, used:1; intermediates: COPY a, LABEL, COPY u.
	if want := []string{"localhost/app:1", "localhost/app:2", "localhost/base:1", "localhost/used:1"}; !slices.Equal(names, want) || unnamed != 3 {
		t.Fatalf("podman built %v and %d untagged images; want %v and 3 (did build --layers change?)", names, unnamed, want)
	}
	parentID := theirParent(t, ours, "localhost/used:1")
	ours.PodmanOutput(t, "create", "--net", "none", "--name", "c1", parentID, "/bin/sh")
	theirs.PodmanOutput(t, "create", "--net", "none", "--name", "c1", theirParent(t, theirs, "localhost/used:1"), "/bin/sh")

	same := func(step string) {
		t.Helper()
		gotNames, gotUnnamed := podmanNames(t, ours)
		wantNames, wantUnnamed := podmanNames(t, theirs)
		if !slices.Equal(gotNames, wantNames) || gotUnnamed != wantUnnamed {
			t.Errorf("after %s: imagefs left %v and %d untagged; podman rmi left %v and %d", step, gotNames, gotUnnamed, wantNames, wantUnnamed)
		}
	}

	// app:1 goes with its LABEL intermediate; the COPY a one stays (app:2
	// is built on it).
	if err := v.RemoveName("localhost/app:1"); err != nil {
		t.Fatalf("RemoveName(app:1): %v", err)
	}
	theirs.PodmanOutput(t, "rmi", "localhost/app:1")
	same("removing localhost/app:1")
	if _, unnamed := podmanNames(t, ours); unnamed != 2 {
		t.Errorf("%d untagged images left, want 2 (COPY a, COPY u)", unnamed)
	}

	// app:2 by ID: now the COPY a intermediate is dangling and goes too;
	// base has a name and stays.
	app2 := v.Index().ImageByName("localhost/app:2")
	if err := v.RemoveImage(app2.ID); err != nil {
		t.Fatalf("RemoveImage(app:2): %v", err)
	}
	theirs.PodmanOutput(t, "rmi", "localhost/app:2")
	same("removing localhost/app:2")

	// used:1 goes; its parent is used by a container and stays (podman rmi
	// removes used:1 and then reports the parent as in use).
	if err := v.RemoveName("localhost/used:1"); err != nil {
		t.Fatalf("RemoveName(used:1): %v", err)
	}
	if out, err := theirs.Podman("rmi", "localhost/used:1").CombinedOutput(); err == nil {
		t.Logf("podman rmi localhost/used:1 did not fail on the used parent: %s", out)
	}
	same("removing localhost/used:1")
	if v.Index().ImageByID(parentID) == nil {
		t.Errorf("the parent a container uses was removed")
	}
}

// theirParent is podman's Parent of the image named name.
func theirParent(t *testing.T, s *fixture.Store, name string) string {
	t.Helper()
	p := strings.TrimSpace(s.PodmanOutput(t, "image", "inspect", "--format", "{{.Parent}}", name))
	if p == "" {
		t.Fatalf("podman: %s has no parent", name)
	}
	return p
}
