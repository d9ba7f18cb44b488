package main

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/imagefs/imagefs/fs"
)

// TestDaemonEnv: the serving process runs in /, so relative paths of the
// environment reach it made absolute against our directory: the run
// directory above all, which umount, run here, looks in for the server.
func TestDaemonEnv(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv(fs.RunDirVar, "run")
	t.Setenv("CONTAINERS_STORAGE_CONF", "conf/storage.conf")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	env := daemonEnv()
	for _, want := range []string{
		fs.RunDirVar + "=" + filepath.Join(dir, "run"),
		"CONTAINERS_STORAGE_CONF=" + filepath.Join(dir, "conf/storage.conf"),
		"XDG_RUNTIME_DIR=/run/user/1000",
	} {
		if !slices.Contains(env, want) {
			t.Errorf("the child's environment lacks %s", want)
		}
	}
}
