package nodes

import (
	"context"
	"strings"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/storageview"
)

// imagesDir is images/: one directory per image, named by its full ID.
// Any unique ID prefix of at least storageview.MinIDPrefix hex digits
// also resolves (as podman resolves one) without being listed.
type imagesDir struct{ dirNode }

func (d *imagesDir) stable() fusefs.StableAttr {
	return stableAttr(syscall.S_IFDIR, imagesIno)
}

func (d *imagesDir) timeouts() (time.Duration, time.Duration) {
	return d.t.immutableTimeout, d.t.attrTimeout
}

func (d *imagesDir) attr(ctx context.Context, ix *storageview.Index, a *fuse.Attr) syscall.Errno {
	fixedDirAttr(d.t, ix, a, imagesIno, d.t.changeableDir(), len(ix.Images))
	return 0
}

// Lookup resolves a full image ID or a unique ID prefix to the image's
// directory: the same node (and inode number) by either name. An
// ambiguous prefix is ENOENT, with a log line naming the candidates.
func (d *imagesDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ix := d.t.index()
	img := ix.ImageByID(name)
	if img == nil {
		var candidates []string
		if img, candidates = ix.ResolveIDPrefix(name); img == nil {
			return nil, d.t.noPrefixMatch("images", name, candidates, out)
		}
	}
	return lookupChild(ctx, d.EmbeddedInode(), name, ix, newImageDir(d.t, img.ID), out)
}

// noPrefixMatch is the ENOENT of a lookup in dir (images, layers) by an ID
// prefix that matched nothing or several IDs; several are logged.
//
// Only a full ID is left to the kernel as a negative entry: an image or
// layer that comes drops it by name (notify.go), but a prefix it makes
// resolvable (or, gone, makes unique) could only be dropped if we knew
// which prefixes the kernel keeps, and negative entries are not in the
// node tree. So a prefix that finds nothing is not kept: its negative
// entry expires at once, and the next lookup asks again.
func (t *tree) noPrefixMatch(dir, name string, candidates []string, out *fuse.EntryOut) syscall.Errno {
	if len(candidates) > 1 {
		t.log.Printf("lookup /%s/%s: ambiguous ID prefix, %d %s match: %s (ENOENT)",
			dir, name, len(candidates), dir, strings.Join(candidates, ", "))
	}
	if len(name) < 64 {
		out.SetEntryTimeout(time.Nanosecond)
	}
	return syscall.ENOENT
}

// Readdir lists every image by full ID, sorted.
func (d *imagesDir) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	ix := d.t.index()
	ents := make([]fuse.DirEntry, 0, len(ix.Images))
	for _, img := range ix.Images { // sorted by ID
		ents = append(ents, fuse.DirEntry{Name: img.ID, Mode: syscall.S_IFDIR, Ino: imageIno(img.ID)})
	}
	return d.listing(ents), 0
}
