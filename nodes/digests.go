package nodes

import (
	"context"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	digest "github.com/opencontainers/go-digest"

	"github.com/imagefs/imagefs/storageview"
)

// digestsDir is digests/: every manifest digest of every image (lists
// included), each a symlink sha256:<hex> -> ../images/<id>.
type digestsDir struct{ dirNode }

func (d *digestsDir) stable() fusefs.StableAttr {
	return stableAttr(syscall.S_IFDIR, digestsIno)
}

func (d *digestsDir) timeouts() (time.Duration, time.Duration) {
	return d.t.immutableTimeout, d.t.attrTimeout
}

func (d *digestsDir) attr(ctx context.Context, ix *storageview.Index, a *fuse.Attr) syscall.Errno {
	fixedDirAttr(d.t, ix, a, digestsIno, d.t.changeableDir(), 0)
	return 0
}

// Lookup finds a digest of an image.
func (d *digestsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ix := d.t.index()
	if ix.ImageByDigest(digest.Digest(name)) == nil {
		return nil, syscall.ENOENT
	}
	return lookupChild(ctx, d.EmbeddedInode(), name, ix, d.link(digest.Digest(name)), out)
}

func (d *digestsDir) link(dg digest.Digest) *symlink {
	t := d.t
	return &symlink{
		node: node{t: t},
		ino:  hashIno(kindDigest, dg.String()),
		path: "/digests/" + dg.String(),
		resolve: func(ix *storageview.Index) (string, time.Time, bool) {
			img := ix.ImageByDigest(dg)
			if img == nil {
				return "", time.Time{}, false
			}
			return "../images/" + img.ID, t.timeOr(ix, img.Created), true
		},
		entryTimeout: t.entryTimeout,
		attrTimeout:  t.attrTimeout,
	}
}

// imageDigests lists every digest of ix once, with the image it leads to.
func imageDigests(ix *storageview.Index) []digest.Digest {
	seen := map[digest.Digest]bool{}
	var out []digest.Digest
	add := func(img *storageview.Image, dg digest.Digest) {
		if dg == "" || seen[dg] || ix.ImageByDigest(dg) != img {
			return
		}
		seen[dg] = true
		out = append(out, dg)
	}
	for _, img := range ix.Images {
		add(img, img.Digest)
		for _, dg := range img.Digests {
			add(img, dg)
		}
	}
	return out
}

// Readdir lists every digest, sorted.
func (d *digestsDir) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	dgs := imageDigests(d.t.index())
	ents := make([]fuse.DirEntry, 0, len(dgs))
	for _, dg := range dgs {
		ents = append(ents, fuse.DirEntry{Name: dg.String(), Mode: syscall.S_IFLNK, Ino: hashIno(kindDigest, dg.String())})
	}
	sortEntries(ents)
	return d.listing(ents), 0
}
