package nodes

import (
	"context"
	"fmt"
	"strconv"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imagefs/imagefs/storageview"
)

// imageLayersDir is images/<id>/layers/: the image's layer chain as
// symlinks NNN -> ../../../layers/<layer-id>, 000 the base layer. An
// image's chain never changes, so everything here has long timeouts.
type imageLayersDir struct {
	dirNode
	id string
}

// layerLinkName is the name of the i-th layer (base 0) of a chain of n:
// three digits, or as many as the last index needs, so that the names of
// one chain have one width and list in chain order.
func layerLinkName(i, n int) string {
	return fmt.Sprintf("%0*d", max(3, len(strconv.Itoa(n-1))), i)
}

// parseLayerLinkName is the inverse of layerLinkName for a chain of n; ok
// is false for any other spelling ("1", "0001", "-01") and past the end.
func parseLayerLinkName(name string, n int) (int, bool) {
	i, err := strconv.Atoi(name)
	if err != nil || i < 0 || i >= n || layerLinkName(i, n) != name {
		return 0, false
	}
	return i, true
}

func (d *imageLayersDir) chain(ix *storageview.Index) (*storageview.Image, bool) {
	img := ix.ImageByID(d.id)
	if img == nil || img.IsList {
		return nil, false
	}
	return img, true
}

func (d *imageLayersDir) stable() fusefs.StableAttr {
	return stableAttr(syscall.S_IFDIR, hashIno(kindImageLayers, d.id))
}

func (d *imageLayersDir) timeouts() (time.Duration, time.Duration) {
	return d.t.immutableTimeout, d.t.immutableTimeout
}

func (d *imageLayersDir) attr(ctx context.Context, ix *storageview.Index, a *fuse.Attr) syscall.Errno {
	img, ok := d.chain(ix)
	if !ok {
		return syscall.ENOENT
	}
	d.t.setAttr(a, d.stable().Ino, dirMode, 2, 0, d.t.timeOr(ix, img.Created))
	return 0
}

// Lookup finds NNN.
func (d *imageLayersDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ix := d.t.index()
	img, ok := d.chain(ix)
	if !ok {
		return nil, syscall.ENOENT
	}
	i, ok := parseLayerLinkName(name, len(img.Layers))
	if !ok {
		return nil, syscall.ENOENT
	}
	return lookupChild(ctx, d.EmbeddedInode(), name, ix, d.link(i, len(img.Layers)), out)
}

// link is the symlink to the i-th layer of n.
func (d *imageLayersDir) link(i, n int) *symlink {
	t, id, name := d.t, d.id, layerLinkName(i, n)
	return &symlink{
		node: node{t: t},
		ino:  hashIno(kindImageLayer, id, name),
		path: "/images/" + id + "/layers/" + name,
		resolve: func(ix *storageview.Index) (string, time.Time, bool) {
			img := ix.ImageByID(id)
			if img == nil || i >= len(img.Layers) {
				return "", time.Time{}, false
			}
			return "../../../layers/" + img.Layers[i], t.timeOr(ix, img.Created), true
		},
		entryTimeout: t.immutableTimeout,
		attrTimeout:  t.immutableTimeout,
	}
}

// Readdir lists 000 … NNN, base layer first.
func (d *imageLayersDir) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	img, ok := d.chain(d.t.index())
	if !ok {
		return nil, syscall.ENOENT
	}
	ents := make([]fuse.DirEntry, len(img.Layers))
	for i := range img.Layers {
		name := layerLinkName(i, len(img.Layers))
		ents[i] = fuse.DirEntry{Name: name, Mode: syscall.S_IFLNK, Ino: hashIno(kindImageLayer, d.id, name)}
	}
	return d.listing(ents), 0
}
