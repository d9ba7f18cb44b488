package nodes

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	digest "github.com/opencontainers/go-digest"

	"github.com/imagefs/imagefs/storageview"
)

// instancesDir is images/<id>/instances/ of a manifest list: one symlink
// per instance, named by its digest, to the local image holding it
// (../../<id>), or dangling (../../../digests/<digest>, which does not
// exist) when the instance is not stored locally; and the file platforms.
type instancesDir struct {
	dirNode
	id string

	mu        sync.Mutex
	instances []storageview.Instance // read once: a list never changes
}

const platformsName = "platforms"

// list returns the list's instances, read from the store once.
func (d *instancesDir) list(ctx context.Context) ([]storageview.Instance, syscall.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.instances != nil {
		return d.instances, 0
	}
	inst, err := d.t.store.Instances(d.id)
	if err != nil {
		return nil, d.t.toErrno(ctx, "read", "/images/"+d.id+"/instances", err)
	}
	if inst == nil {
		inst = []storageview.Instance{}
	}
	d.instances = inst
	return inst, 0
}

func (d *instancesDir) listImage(ix *storageview.Index) *storageview.Image {
	img := ix.ImageByID(d.id)
	if img == nil || !img.IsList {
		return nil
	}
	return img
}

func (d *instancesDir) stable() fusefs.StableAttr {
	return fusefs.StableAttr{Mode: syscall.S_IFDIR, Ino: hashIno(kindInstances, d.id)}
}

// The entries never change (a list is immutable); the links' targets do.
func (d *instancesDir) timeouts() (time.Duration, time.Duration) {
	return d.t.immutableTimeout, d.t.attrTimeout
}

func (d *instancesDir) attr(ctx context.Context, ix *storageview.Index, a *fuse.Attr) syscall.Errno {
	img := d.listImage(ix)
	if img == nil {
		return syscall.ENOENT
	}
	d.t.setAttr(a, d.stable().Ino, dirMode, 2, 0, d.t.timeOr(ix, img.Created))
	return 0
}

// Lookup finds platforms and the instances by digest.
func (d *instancesDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ix := d.t.index()
	if d.listImage(ix) == nil {
		return nil, syscall.ENOENT
	}
	inst, errno := d.list(ctx)
	if errno != 0 {
		return nil, errno
	}
	if name == platformsName {
		return lookupChild(ctx, d.EmbeddedInode(), name, ix, d.platforms(inst), out)
	}
	for _, in := range inst {
		if in.Digest.String() == name {
			return lookupChild(ctx, d.EmbeddedInode(), name, ix, d.link(in.Digest), out)
		}
	}
	return nil, syscall.ENOENT
}

// link is the symlink of one instance.
func (d *instancesDir) link(dg digest.Digest) *symlink {
	t, id := d.t, d.id
	return &symlink{
		node: node{t: t},
		ino:  hashIno(kindInstance, id, dg.String()),
		path: "/images/" + id + "/instances/" + dg.String(),
		resolve: func(ix *storageview.Index) (string, time.Time, bool) {
			list := ix.ImageByID(id)
			if list == nil {
				return "", time.Time{}, false
			}
			if img := ix.ImageByDigest(dg); img != nil {
				return "../../" + img.ID, t.timeOr(ix, img.Created), true
			}
			return "../../../digests/" + dg.String(), t.timeOr(ix, list.Created), true
		},
		entryTimeout: t.immutableTimeout,
		attrTimeout:  t.attrTimeout, // the target's length changes when the instance comes or goes
	}
}

// platforms is instances/platforms: one line per instance,
// "<digest> <os>/<arch>[/<variant>]", in list order.
func (d *instancesDir) platforms(inst []storageview.Instance) *blobFile {
	t, id := d.t, d.id
	return newBlobFile(t, hashIno(kindPlatforms, id), "/images/"+id+"/instances/platforms", blobSource{
		immutable: true,
		state: func(ix *storageview.Index) (blobState, bool) {
			img := ix.ImageByID(id)
			if img == nil || !img.IsList {
				return blobState{}, false
			}
			return blobState{mtime: t.timeOr(ix, img.Created)}, true
		},
		read: func() ([]byte, error) { return platformsFile(inst), nil },
	})
}

func platformsFile(inst []storageview.Instance) []byte {
	var b strings.Builder
	for _, in := range inst {
		b.WriteString(in.Digest.String())
		b.WriteByte(' ')
		b.WriteString(platformString(in))
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// platformString is os/arch[/variant], "unknown" for a missing part.
func platformString(in storageview.Instance) string {
	or := func(s string) string {
		if s == "" {
			return "unknown"
		}
		return s
	}
	p := or(in.OS) + "/" + or(in.Arch)
	if in.Variant != "" {
		p += "/" + in.Variant
	}
	return p
}

// Readdir lists the instances, sorted by digest, and platforms.
func (d *instancesDir) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	if d.listImage(d.t.index()) == nil {
		return nil, syscall.ENOENT
	}
	inst, errno := d.list(ctx)
	if errno != 0 {
		return nil, errno
	}
	names := map[string]bool{}
	ents := []fuse.DirEntry{{Name: platformsName, Mode: syscall.S_IFREG, Ino: hashIno(kindPlatforms, d.id)}}
	for _, in := range inst {
		n := in.Digest.String()
		if names[n] || n == "" {
			continue
		}
		names[n] = true
		ents = append(ents, fuse.DirEntry{Name: n, Mode: syscall.S_IFLNK, Ino: hashIno(kindInstance, d.id, n)})
	}
	sortEntries(ents)
	return listing(d.EmbeddedInode(), ents), 0
}
