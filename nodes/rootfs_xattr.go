package nodes

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/xattrs"
)

var _ = (fusefs.NodeGetxattrer)((*rootfsNode)(nil))

// Getxattr returns the xattr as stored in the layer that supplies the
// entry (overlay's own markers hidden). Names the entry lacks are ENODATA
// from the index, without touching the layer once its xattrs are known.
// user.imagefs.layer and user.imagefs.layer-index name the supplying layer
// under rootfs/; they are answered but never listed (a layer's own xattrs
// of those names are hidden there). diff/ serves them as stored.
func (n *rootfsNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	var v []byte
	switch {
	case isLayerXattr(attr) && !n.tree.noLayerXattrs:
		i, errno := n.layerIndex()
		if errno != 0 {
			return 0, errno
		}
		if attr == xattrs.RootfsLayer {
			v = []byte(n.tree.all[i].ID)
		} else {
			v = []byte(rootfsLayerName(i))
		}
	default:
		var err error
		if v, err = n.tree.stack.GetXattr(n.ent, attr); err != nil {
			return 0, n.tree.errno("getxattr", n.ent.Path, err)
		}
	}
	return rootfsCopyXattr(dest, v)
}

// layerIndex is the index in the image's layers (images/<id>/layers/NNN)
// of the layer that supplied the entry.
func (n *rootfsNode) layerIndex() (int, syscall.Errno) {
	t := n.tree
	if t.noLayerXattrs || n.ent.Layer < 0 {
		return 0, syscall.ENODATA
	}
	if len(t.stack.Layers()) == len(t.all) {
		return n.ent.Layer, 0
	}
	// Full (vfs) layers: the stack shows only the top directory. The entry
	// comes from the topmost layer whose changes add or change it, as the
	// topmost diff holding it does for overlay.
	if n.ent.Path == "" {
		return len(t.all) - 1, 0
	}
	for k := len(t.all) - 1; k > 0; k-- {
		c, err := t.r.layerChangeSet(t.all[k].ID, t.all[:k+1])
		if err != nil {
			return 0, t.errno("getxattr", n.ent.Path, err)
		}
		if c.has("/" + n.ent.Path) {
			return k, 0
		}
	}
	return 0, 0
}

var _ = (fusefs.NodeListxattrer)((*rootfsNode)(nil))

// Listxattr lists the stored xattrs, NUL-terminated, without the
// user.imagefs.* names (so cp -a, rsync -X and tar --xattrs skip them),
// without security.selinux (never served, see handleless.go), and without
// trusted.* names for a caller lacking CAP_SYS_ADMIN, as the layers' own
// file system lists them (we read them as root).
func (n *rootfsNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	all, err := n.tree.stack.ListXattr(n.ent)
	if err != nil {
		return 0, n.tree.errno("listxattr", n.ent.Path, err)
	}
	hideTrusted := slices.ContainsFunc(all, isTrustedXattr) && !callerHasSysAdmin(ctx)
	names := slices.DeleteFunc(slices.Clone(all), func(name string) bool {
		return name == selinuxXattr || hideTrusted && isTrustedXattr(name) || isLayerXattr(name) && !n.tree.noLayerXattrs
	})
	size := 0
	for _, name := range names {
		size += len(name) + 1
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	off := 0
	for _, name := range names {
		off += copy(dest[off:], name)
		dest[off] = 0
		off++
	}
	return uint32(size), 0
}

// rootfsCopyXattr copies v into dest, or says how big dest must be.
func rootfsCopyXattr(dest, v []byte) (uint32, syscall.Errno) {
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func isTrustedXattr(name string) bool { return strings.HasPrefix(name, "trusted.") }

func isLayerXattr(name string) bool {
	return name == xattrs.RootfsLayer || name == xattrs.RootfsLayerIndex
}

// capSysAdmin is CAP_SYS_ADMIN's bit in /proc/PID/status's CapEff.
const capSysAdmin = 21

// callerHasSysAdmin reports whether the process making the request holds
// CAP_SYS_ADMIN, which listing trusted.* xattrs takes, in our user
// namespace: one a user made (unshare -Ur) gives its processes every
// capability, but only over what that namespace owns. It reads the
// caller's /proc: only done for entries that carry such names.
func callerHasSysAdmin(ctx context.Context) bool {
	c, ok := fuse.FromContext(ctx)
	if !ok || c.Pid == 0 {
		return false
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", c.Pid))
	if own, oerr := os.Readlink("/proc/self/ns/user"); err != nil || oerr != nil || ns != own {
		return false
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid))
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(status)) {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			return err == nil && caps&(1<<capSysAdmin) != 0
		}
	}
	return false
}
