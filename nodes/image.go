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

// imageDir is images/<id>/: one image, by full ID. Its children are the
// entries of imageChildren that apply to the image.
type imageDir struct {
	dirNode
	id string
}

func newImageDir(t *tree, id string) *imageDir {
	return &imageDir{dirNode: dirNode{node: node{t: t}}, id: id}
}

func imageIno(id string) uint64 { return hashIno(kindImage, id) }

// imageChild is one entry of an image directory.
type imageChild struct {
	name string
	mode uint32 // file type: S_IFREG, S_IFDIR
	// in reports whether img has this entry; nil means every image.
	in func(img *storageview.Image) bool
	// node makes the entry's node (holding the image ID, not img).
	node func(d *imageDir) treeNode
	// lookup, for entries that are not treeNodes (rootfs/), returns the
	// entry's inode under d, filling out; node is nil then, and ino gives
	// the number listings show.
	lookup func(ctx context.Context, d *imageDir, img *storageview.Image, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno)
	ino    func(imageID string) uint64
}

func isList(img *storageview.Image) bool    { return img.IsList }
func notList(img *storageview.Image) bool   { return !img.IsList }
func hasConfig(img *storageview.Image) bool { return !img.IsList && !img.NoConfig }

// imageChildren are the entries of images/<id>/. Entries served by other
// files join it from their init (rootfs/: rootfs_hook.go, with lookup and
// ino set); listings sort by name whatever the order here.
var imageChildren = []imageChild{
	{name: "manifest", mode: syscall.S_IFREG, node: func(d *imageDir) treeNode {
		return d.file("manifest", blobSource{immutable: true, versioned: true,
			read: func() ([]byte, error) { return d.t.store.Manifest(d.id) }}, manifestVersion)
	}},
	{name: "config", mode: syscall.S_IFREG, in: hasConfig, node: func(d *imageDir) treeNode {
		return d.file("config", blobSource{immutable: true,
			read: func() ([]byte, error) { return d.t.store.Config(d.id) }}, nil)
	}},
	{name: "digest", mode: syscall.S_IFREG, node: func(d *imageDir) treeNode {
		return d.file("digest", blobSource{immutable: true, versioned: true,
			read: d.fromIndex(digestFile)}, manifestVersion)
	}},
	{name: "names", mode: syscall.S_IFREG, node: func(d *imageDir) treeNode {
		return d.file("names", blobSource{read: d.fromIndex(namesFile)}, nil)
	}},
	{name: "inspect.json", mode: syscall.S_IFREG, node: func(d *imageDir) treeNode {
		return d.file("inspect.json", blobSource{
			read: func() ([]byte, error) { return d.t.store.InspectJSON(d.id) }}, nil)
	}},
	{name: "history", mode: syscall.S_IFREG, in: notList, node: func(d *imageDir) treeNode {
		return d.file("history", blobSource{
			read: func() ([]byte, error) { return d.t.store.History(d.id) }}, nil)
	}},
	{name: "layers", mode: syscall.S_IFDIR, in: notList, node: func(d *imageDir) treeNode {
		return &imageLayersDir{dirNode: dirNode{node: node{t: d.t}}, id: d.id}
	}},
	{name: "instances", mode: syscall.S_IFDIR, in: isList, node: func(d *imageDir) treeNode {
		return &instancesDir{dirNode: dirNode{node: node{t: d.t}}, id: d.id}
	}},
}

func manifestVersion(img *storageview.Image) string { return img.Digest.String() }

// digestFile is the digest file's content: "sha256:<hex>\n".
func digestFile(img *storageview.Image) []byte {
	if img.Digest == "" {
		return nil
	}
	return []byte(img.Digest.String() + "\n")
}

// namesFile is the names file's content: one name a line, in store order.
func namesFile(img *storageview.Image) []byte {
	if len(img.Names) == 0 {
		return nil
	}
	return []byte(strings.Join(img.Names, "\n") + "\n")
}

// file is the blob file name of this image; version (nil: none) names
// the content of an immutable file.
func (d *imageDir) file(name string, src blobSource, version func(*storageview.Image) string) *blobFile {
	t, id := d.t, d.id
	src.state = func(ix *storageview.Index) (blobState, bool) {
		img := ix.ImageByID(id)
		if img == nil {
			return blobState{}, false
		}
		st := blobState{mtime: t.timeOr(ix, img.Created)}
		if version != nil {
			st.version = version(img)
		}
		return st, true
	}
	return newBlobFile(t, hashIno(kindImageFile, id, name), "/images/"+id+"/"+name, src)
}

// fromIndex reads a file made from the image's record in the index.
func (d *imageDir) fromIndex(content func(*storageview.Image) []byte) func() ([]byte, error) {
	return func() ([]byte, error) {
		img := d.t.index().ImageByID(d.id)
		if img == nil {
			return nil, storageview.ErrNotFound
		}
		return content(img), nil
	}
}

// image returns the image in ix, nil when it is gone.
func (d *imageDir) image(ix *storageview.Index) *storageview.Image { return ix.ImageByID(d.id) }

func (d *imageDir) stable() fusefs.StableAttr {
	return stableAttr(syscall.S_IFDIR, imageIno(d.id))
}

func (d *imageDir) timeouts() (time.Duration, time.Duration) {
	return d.t.entryTimeout, d.t.attrTimeout
}

func (d *imageDir) attr(ctx context.Context, ix *storageview.Index, a *fuse.Attr) syscall.Errno {
	img := d.image(ix)
	if img == nil {
		return syscall.ENOENT
	}
	subdirs := 0
	for _, c := range imageChildren {
		if c.mode == syscall.S_IFDIR && (c.in == nil || c.in(img)) {
			subdirs++
		}
	}
	d.t.setAttr(a, imageIno(d.id), dirMode, uint32(2+subdirs), 0, d.t.timeOr(ix, img.Created))
	return 0
}

// Lookup finds the image's entries; ENOENT once the image is gone, and for
// entries a manifest list has not (config, layers/, history).
func (d *imageDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ix := d.t.index()
	img := d.image(ix)
	if img == nil {
		return nil, syscall.ENOENT
	}
	for _, c := range imageChildren {
		if c.name != name || (c.in != nil && !c.in(img)) {
			continue
		}
		if c.lookup != nil {
			return c.lookup(ctx, d, img, out)
		}
		return lookupChild(ctx, d.EmbeddedInode(), name, ix, c.node(d), out)
	}
	return nil, syscall.ENOENT
}

// Readdir lists the entries the image has, sorted by name.
func (d *imageDir) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	img := d.image(d.t.index())
	if img == nil {
		return nil, syscall.ENOENT
	}
	var ents []fuse.DirEntry
	for _, c := range imageChildren {
		if c.in != nil && !c.in(img) {
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
