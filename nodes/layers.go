package nodes

import (
	"context"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/storageview"
)

// layersDir is layers/: one directory per layer of the store, by full ID.
// A unique ID prefix also resolves, as in images/, without being listed.
type layersDir struct{ dirNode }

func (d *layersDir) stable() fusefs.StableAttr {
	return stableAttr(syscall.S_IFDIR, layersIno)
}

func (d *layersDir) timeouts() (time.Duration, time.Duration) {
	return d.t.immutableTimeout, d.t.attrTimeout
}

func (d *layersDir) attr(ctx context.Context, ix *storageview.Index, a *fuse.Attr) syscall.Errno {
	fixedDirAttr(d.t, ix, a, layersIno, dirMode, len(ix.Layers))
	return 0
}

// Lookup finds a layer by full ID or unique ID prefix: the same node by
// either name.
func (d *layersDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ix := d.t.index()
	l := ix.Layer(name)
	if l == nil {
		var candidates []string
		if l, candidates = ix.ResolveLayerPrefix(name); l == nil {
			return nil, d.t.noPrefixMatch("layers", name, candidates, out)
		}
	}
	return lookupChild(ctx, d.EmbeddedInode(), name, ix, newLayerDir(d.t, l.ID), out)
}

// Readdir lists every layer, sorted by ID.
func (d *layersDir) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	ix := d.t.index()
	ents := make([]fuse.DirEntry, 0, len(ix.Layers))
	for _, l := range ix.Layers { // sorted by ID
		ents = append(ents, fuse.DirEntry{Name: l.ID, Mode: syscall.S_IFDIR, Ino: layerIno(l.ID)})
	}
	return d.listing(ents), 0
}
