package nodes

import (
	"context"
	"syscall"

	digest "github.com/opencontainers/go-digest"
)

// Unlink (rm digests/sha256:<hex>) removes the image the digest belongs
// to, with all its names (as rmdir images/<id>): EBUSY when a container
// uses it.
func (d *digestsDir) Unlink(ctx context.Context, name string) syscall.Errno {
	const op = "unlink"
	t, p := d.t, "/digests/"+name
	w, errno := t.writer(ctx, op, p)
	if errno != 0 {
		return errno
	}
	if errno := t.refuseMoveOut(ctx, op, p); errno != 0 {
		return errno
	}
	img := t.index().ImageByDigest(digest.Digest(name))
	if img == nil {
		return t.refuseWrite(op, p, syscall.ENOENT, "no image has this digest")
	}
	if err := t.change(ctx, w, "digests", func() error { return w.RemoveImage(img.ID) }); err != nil {
		return t.writeErrno(ctx, op, p, err)
	}
	return 0
}
