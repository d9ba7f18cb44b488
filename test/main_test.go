package test

import (
	"os"
	"testing"

	"go.podman.io/storage/pkg/reexec"

	"github.com/imagefs/imagefs/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.RunHelper()
	if reexec.Init() {
		return
	}
	os.Exit(m.Run())
}
