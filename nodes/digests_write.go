package nodes

import (
	"context"
	"strings"
	"syscall"

	digest "github.com/opencontainers/go-digest"
)

// Unlink (rm digests/sha256:<hex>) removes the image the digest belongs
// to, with all its names (as rmdir images/<id>): EBUSY when a container
// uses it, EINVAL when several lists have that manifest (which one the
// caller means, the digest cannot tell).
func (d *digestsDir) Unlink(ctx context.Context, name string) syscall.Errno {
	defer d.t.writing()() // the follower waits for it
	const op = "unlink"
	t, p := d.t, "/digests/"+name
	w, errno := t.writer(ctx, op, p)
	if errno != 0 {
		return errno
	}
	if errno := t.refuseMoveOut(ctx, op, p); errno != 0 {
		return errno
	}
	if errno := t.refuseReplace(ctx, op, p); errno != 0 {
		return errno
	}
	ix := t.index()
	img := ix.ImageByDigest(digest.Digest(name))
	if img == nil {
		return t.refuseWrite(op, p, syscall.ENOENT, "no image has this digest")
	}
	if holders := ix.ManifestHolders(digest.Digest(name)); len(holders) > 1 {
		ids := make([]string, len(holders))
		for i, h := range holders {
			ids[i] = h.ID
		}
		return t.refuseWrite(op, p, syscall.EINVAL, "%d images have this manifest (manifest lists of the same instances): %s; "+
			"remove one with rmdir images/<id>", len(holders), strings.Join(ids, ", "))
	}
	if err := t.change(ctx, w, "digests", func() error { return w.RemoveImage(img.ID) }); err != nil {
		return t.writeErrno(ctx, op, p, err)
	}
	return 0
}
