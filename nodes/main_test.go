package nodes

import (
	"os"
	"testing"

	"github.com/imagefs/imagefs/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.RunHelper()
	os.Exit(m.Run())
}
