package nodes

import (
	"context"
	"strings"
	"syscall"
)

// Rmdir (rmdir images/<id>, also by a unique ID prefix) removes the image
// with all its names, as podman rmi given the ID and every name: EBUSY when
// a container uses it; layers other images use stay. Nothing else below
// images/ changes (EROFS from the read-only tree).
func (d *imagesDir) Rmdir(ctx context.Context, name string) syscall.Errno {
	defer d.t.writing()() // the follower waits for it
	const op = "rmdir"
	t, p := d.t, "/images/"+name
	w, errno := t.writer(ctx, op, p)
	if errno != 0 {
		return errno
	}
	if errno := t.refuseMoveOut(ctx, op, p); errno != 0 {
		return errno
	}
	ix := t.index()
	img := ix.ImageByID(name)
	if img == nil {
		var candidates []string
		img, candidates = ix.ResolveIDPrefix(name)
		if len(candidates) > 1 {
			return t.refuseWrite(op, p, syscall.ENOENT, "ambiguous ID prefix, %d images match: %s",
				len(candidates), strings.Join(candidates, ", "))
		}
		if img == nil {
			return t.refuseWrite(op, p, syscall.ENOENT, "no such image")
		}
	}
	if err := t.change(ctx, w, "images", func() error { return w.RemoveImage(img.ID) }); err != nil {
		return t.writeErrno(ctx, op, p, err)
	}
	return 0
}
