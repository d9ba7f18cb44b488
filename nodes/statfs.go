package nodes

import (
	"context"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// statfs(2) anywhere in the mount describes the file system the store
// keeps its images on, as overlayfs describes its layers' file system: df
// shows the disk the images use, and the name length limit (pathconf
// NAME_MAX) is that file system's instead of 0.

// StatFs sends every STATFS to the root, whatever node it names: the tree
// is one file system, and its node kinds need not each answer.
func (h *handleless) StatFs(cancel <-chan struct{}, in *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	root := *in
	root.NodeId = fuse.FUSE_ROOT_ID
	return h.RawFileSystem.StatFs(cancel, &root, out)
}

var _ = (fusefs.NodeStatfser)((*rootDir)(nil))

func (r *rootDir) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var st syscall.Statfs_t
	if err := r.t.store.Statfs(&st); err != nil {
		r.t.log.Printf("statfs: %v", err)
		return fusefs.ToErrno(err)
	}
	out.FromStatfsT(&st)
	return 0
}
