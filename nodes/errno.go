package nodes

import (
	"context"
	"errors"
	"syscall"

	"github.com/imagefs/imagefs/storageview"
)

// toErrno maps an error of the store to the errno the kernel gets. The
// store's sentinel errors have fixed meanings; a cancelled request (the
// caller was interrupted) is EINTR; anything else is an internal failure:
// it is logged with op and path and becomes EIO.
func (t *tree) toErrno(ctx context.Context, op, path string, err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, storageview.ErrNotFound), errors.Is(err, storageview.ErrAmbiguous):
		return syscall.ENOENT
	case errors.Is(err, storageview.ErrInUse):
		return syscall.EBUSY
	case errors.Is(err, storageview.ErrReadOnly):
		return syscall.EROFS
	case errors.Is(err, storageview.ErrInvalidName):
		return syscall.EINVAL
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		ctx != nil && ctx.Err() != nil:
		return syscall.EINTR
	}
	var en syscall.Errno
	if errors.As(err, &en) && en != 0 {
		t.log.Printf("%s %s: %v", op, path, err)
		return en
	}
	t.log.Printf("%s %s: %v (EIO)", op, path, err)
	return syscall.EIO
}
