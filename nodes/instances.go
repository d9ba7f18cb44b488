package nodes

import (
	"context"
	"fmt"
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

	// podman manifest add, remove and annotate change a list in place:
	// its instances are read once per manifest digest.
	mu        sync.Mutex
	version   digest.Digest
	instances []storageview.Instance // nil: not read yet
}

const platformsName = "platforms"

// list returns the instances of the list img, as its manifest now has them.
func (d *instancesDir) list(ctx context.Context, img *storageview.Image) ([]storageview.Instance, syscall.Errno) {
	inst, err := d.instancesOf(img.Digest)
	if err != nil {
		return nil, d.t.toErrno(ctx, "read", "/images/"+d.id+"/instances", err)
	}
	return inst, 0
}

// instancesOf returns the instances of the list whose manifest digest is
// version, reading them from the store once.
func (d *instancesDir) instancesOf(version digest.Digest) ([]storageview.Instance, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.instances != nil && d.version == version {
		return d.instances, nil
	}
	inst, err := d.t.store.Instances(d.id)
	if err != nil {
		return nil, err
	}
	if inst == nil {
		inst = []storageview.Instance{}
	}
	d.version, d.instances = version, inst
	return inst, nil
}

func (d *instancesDir) listImage(ix *storageview.Index) *storageview.Image {
	img := ix.ImageByID(d.id)
	if img == nil || !img.IsList {
		return nil
	}
	return img
}

func (d *instancesDir) stable() fusefs.StableAttr {
	return stableAttr(syscall.S_IFDIR, hashIno(kindInstances, d.id))
}

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
	img := d.listImage(ix)
	if img == nil {
		return nil, syscall.ENOENT
	}
	if name == platformsName {
		return lookupChild(ctx, d.EmbeddedInode(), name, ix, d.platforms(), out)
	}
	inst, errno := d.list(ctx, img)
	if errno != 0 {
		return nil, errno
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
		entryTimeout: t.entryTimeout, // podman manifest remove takes it away
		attrTimeout:  t.attrTimeout,  // the target's length changes when the instance comes or goes
	}
}

// platforms is instances/platforms: one line per instance,
// "<digest> <os>/<arch>[/<variant>]", in list order.
// Its version is the list's manifest digest.
func (d *instancesDir) platforms() *blobFile {
	t, id := d.t, d.id
	return newBlobFile(t, hashIno(kindPlatforms, id), "/images/"+id+"/instances/platforms", blobSource{
		immutable: true, versioned: true,
		state: func(ix *storageview.Index) (blobState, bool) {
			img := d.listImage(ix)
			if img == nil {
				return blobState{}, false
			}
			return blobState{mtime: t.timeOr(ix, img.Created), version: img.Digest.String()}, true
		},
		read: func() ([]byte, error) {
			img := d.listImage(t.index())
			if img == nil {
				return nil, fmt.Errorf("image %s: %w", id, storageview.ErrNotFound)
			}
			inst, err := d.instancesOf(img.Digest)
			return platformsFile(inst), err
		},
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
	img := d.listImage(d.t.index())
	if img == nil {
		return nil, syscall.ENOENT
	}
	inst, errno := d.list(ctx, img)
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
	return d.listing(ents), 0
}
