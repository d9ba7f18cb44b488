package nodes

import (
	"slices"
	"testing"
)

// TestTargetRefs: what a symlink target made in names/<dir…> may name,
// best first.
func TestTargetRefs(t *testing.T) {
	id := "4f1c2b3a4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"
	for _, c := range []struct {
		dir    []string
		target string
		want   []string
	}{
		{[]string{"quay.io", "me"}, "../../../images/" + id, []string{id}},
		{[]string{"quay.io", "me"}, "../../../images/" + id + "/", []string{id}},
		{[]string{"localhost"}, "../../digests/sha256:abc", []string{"sha256:abc"}},
		{[]string{"localhost"}, "../quay.io/org/tool:2", []string{"quay.io/org/tool:2"}},
		{[]string{"localhost"}, "app:2", []string{"localhost/app:2", "app:2"}},
		{nil, "/mnt/x/images/4f1c", []string{"4f1c"}},
		{nil, "/srv/names/mnt/names/quay.io/a:1", []string{"quay.io/a:1", "mnt/names/quay.io/a:1"}},
		{[]string{"localhost"}, "quay.io/org/tool:2", []string{"localhost/quay.io/org/tool:2", "quay.io/org/tool:2"}},
		{[]string{"localhost"}, "4f1c", []string{"localhost/4f1c", "4f1c"}},
		{[]string{"a"}, "../../../../etc/passwd", nil},
		{[]string{"a"}, "../../images/" + id + "/manifest", nil},
	} {
		if got := targetRefs(c.dir, c.target); !slices.Equal(got, c.want) {
			t.Errorf("targetRefs(%v, %q) = %q, want %q", c.dir, c.target, got, c.want)
		}
	}
}

// TestTempName: GNU ln -sf's temporary names, and nothing else.
func TestTempName(t *testing.T) {
	for name, want := range map[string]bool{
		"CuK0wN0n": true, "Cuabcdef": true, "CuK0wN0": false, "CuK0wN0n1": false,
		"cuK0wN0n": false, "CuK0-N0n": false, "app:1": false,
	} {
		if isTempName(name) != want {
			t.Errorf("isTempName(%q) = %v", name, !want)
		}
	}
}
