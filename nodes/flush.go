package nodes

import (
	"context"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
)

// noFlush answers FLUSH (sent on every close(2)) with ENOSYS. The kernel
// then stops sending FLUSH for the whole connection (fc->no_flush), which
// saves one synchronous round trip per close. That is right for imagefs:
// no file handle buffers writes or reports errors at close, so FLUSH has
// nothing to do. A handle that ever needs FLUSH must not be served by
// this mount (the setting is connection-wide and sticky).
type noFlush struct{}

var _ = (fusefs.FileFlusher)(noFlush{})

func (noFlush) Flush(ctx context.Context) syscall.Errno { return syscall.ENOSYS }
