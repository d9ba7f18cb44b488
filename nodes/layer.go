package nodes

import (
	"context"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/storageview"
)

// layerDir is layers/<id>/: one layer. Its children are the entries of
// layerChildren that apply to the layer.
type layerDir struct {
	dirNode
	id string
}

func newLayerDir(t *tree, id string) *layerDir {
	return &layerDir{dirNode: dirNode{node: node{t: t}}, id: id}
}

func layerIno(id string) uint64 { return hashIno(kindLayer, id) }

// layerChild is one entry of a layer directory (see imageChild).
type layerChild struct {
	name string
	mode uint32 // file type
	// in reports whether l has this entry; nil means every layer.
	in func(l *storageview.Layer) bool
	// node makes the entry's node (holding the layer ID, not l).
	node func(d *layerDir) treeNode
	// lookup and ino replace node for entries that are not treeNodes
	// (diff/ of the rootfs issue).
	lookup func(ctx context.Context, d *layerDir, l *storageview.Layer, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno)
	ino    func(layerID string) uint64
}

// layerChildren are the entries of layers/<id>/. Entries served by other
// files join it from their init (diff/ and changes: rootfs_hook.go).
var layerChildren = []layerChild{
	{name: "info.json", mode: syscall.S_IFREG, node: func(d *layerDir) treeNode {
		t, id := d.t, d.id
		// Not immutable: it names the images using the layer.
		return newBlobFile(t, hashIno(kindLayerFile, id, "info.json"), "/layers/"+id+"/info.json", blobSource{
			state: func(ix *storageview.Index) (blobState, bool) {
				l := ix.Layer(id)
				if l == nil {
					return blobState{}, false
				}
				return blobState{mtime: t.timeOr(ix, l.Created)}, true
			},
			read: func() ([]byte, error) { return t.store.LayerInfoJSON(id) },
		})
	}},
	{name: "parent", mode: syscall.S_IFLNK, in: hasParent, node: func(d *layerDir) treeNode {
		t, id := d.t, d.id
		return &symlink{
			node: node{t: t},
			ino:  hashIno(kindLayerParent, id),
			path: "/layers/" + id + "/parent",
			resolve: func(ix *storageview.Index) (string, time.Time, bool) {
				l := ix.Layer(id)
				if l == nil || l.Parent == "" {
					return "", time.Time{}, false
				}
				return "../" + l.Parent, t.timeOr(ix, l.Created), true
			},
			entryTimeout: t.immutableTimeout,
			attrTimeout:  t.immutableTimeout,
		}
	}},
}

func hasParent(l *storageview.Layer) bool { return l.Parent != "" }

func (d *layerDir) stable() fusefs.StableAttr {
	return stableAttr(syscall.S_IFDIR, layerIno(d.id))
}

func (d *layerDir) timeouts() (time.Duration, time.Duration) {
	return d.t.entryTimeout, d.t.attrTimeout
}

func (d *layerDir) attr(ctx context.Context, ix *storageview.Index, a *fuse.Attr) syscall.Errno {
	l := ix.Layer(d.id)
	if l == nil {
		return syscall.ENOENT
	}
	subdirs := 0
	for _, c := range layerChildren {
		if c.mode == syscall.S_IFDIR && (c.in == nil || c.in(l)) {
			subdirs++
		}
	}
	d.t.setAttr(a, layerIno(d.id), dirMode, uint32(2+subdirs), 0, d.t.timeOr(ix, l.Created))
	return 0
}

// Lookup finds the layer's entries; ENOENT once the layer is gone.
func (d *layerDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ix := d.t.index()
	l := ix.Layer(d.id)
	if l == nil {
		return nil, syscall.ENOENT
	}
	for _, c := range layerChildren {
		if c.name != name || (c.in != nil && !c.in(l)) {
			continue
		}
		if c.lookup != nil {
			return c.lookup(ctx, d, l, out)
		}
		return lookupChild(ctx, d.EmbeddedInode(), name, ix, c.node(d), out)
	}
	return nil, syscall.ENOENT
}

// Readdir lists the entries the layer has, sorted by name.
func (d *layerDir) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	l := d.t.index().Layer(d.id)
	if l == nil {
		return nil, syscall.ENOENT
	}
	var ents []fuse.DirEntry
	for _, c := range layerChildren {
		if c.in != nil && !c.in(l) {
			continue
		}
		var ino uint64
		if c.ino != nil {
			ino = c.ino(d.id)
		} else {
			ino = c.node(d).stable().Ino
		}
		ents = append(ents, fuse.DirEntry{Name: c.name, Mode: c.mode, Ino: ino})
	}
	sortEntries(ents)
	return d.listing(ents), 0
}
