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

// namesDir is names/ or one of its subdirectories: every image name as a
// path, names/docker.io/library/alpine:3.19, whose last component is a
// symlink to the image's directory. path is the directory's components
// below names/ (empty for names/ itself).
type namesDir struct {
	dirNode
	path []string
}

// latestTag is the tag a repository name without one stands for.
const latestTag = ":latest"

// nameDir is the names/ directory at path in ix, nil when there is none.
// Every namesDir operation resolves its directory here, so directories
// that exist without a name below them (mkdir -p of the writes issue) can
// join in one place.
func (t *tree) nameDir(ix *storageview.Index, path []string) *storageview.NameDir {
	return ix.NameDir(path)
}

func (d *namesDir) pathString() string { return strings.Join(d.path, "/") }

func (d *namesDir) stable() fusefs.StableAttr {
	ino := uint64(namesIno)
	if len(d.path) > 0 {
		ino = hashIno(kindNameDir, d.pathString())
	}
	return stableAttr(syscall.S_IFDIR, ino)
}

// timeouts: names/ itself, and a directory only in memory (mkdir made it:
// names_write.go), keep their entries for long; the others follow the
// store.
func (d *namesDir) timeouts() (time.Duration, time.Duration) {
	if len(d.path) == 0 || d.t.isPending(d.pathString()) {
		return d.t.immutableTimeout, d.t.attrTimeout
	}
	return d.t.entryTimeout, d.t.attrTimeout
}

func (d *namesDir) attr(ctx context.Context, ix *storageview.Index, a *fuse.Attr) syscall.Errno {
	nd := d.t.nameDir(ix, d.path)
	if nd == nil && !d.t.isPending(d.pathString()) {
		return syscall.ENOENT
	}
	// Subdirectories: the store's, and those mkdir made (in memory).
	subdirs := 0
	if nd != nil {
		subdirs = len(nd.Dirs)
	}
	for _, c := range d.t.pendingChildren(d.pathString()) {
		if nd == nil || nd.Dirs[c] == nil {
			subdirs++
		}
	}
	fixedDirAttr(d.t, ix, a, d.stable().Ino, d.t.changeableDir(), subdirs)
	return 0
}

// Lookup finds a subdirectory or a name. A repository without a tag
// (names/docker.io/library/alpine) is its ":latest" name when that exists
// and no directory has the same name; it is not listed.
func (d *namesDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ix := d.t.index()
	nd := d.t.nameDir(ix, d.path)
	if nd == nil {
		return d.lookupPending(ctx, ix, name, out) // below a directory mkdir made, or ENOENT
	}
	if nd.Dirs[name] != nil {
		sub := &namesDir{dirNode: dirNode{node: node{t: d.t}}, path: append(d.path[:len(d.path):len(d.path)], name)}
		return lookupChild(ctx, d.EmbeddedInode(), name, ix, sub, out)
	}
	leaf := name
	if _, ok := nd.Leaves[leaf]; !ok {
		// The repository without a tag is its :latest link, unless
		// mkdir made a directory of that name.
		leaf = name + latestTag
		if _, ok := nd.Leaves[leaf]; !ok || strings.ContainsAny(name, ":@") || d.t.isPending(joinName(d.path, name)) {
			return d.lookupPending(ctx, ix, name, out) // a directory mkdir made, or ENOENT
		}
	}
	return lookupChild(ctx, d.EmbeddedInode(), name, ix, d.link(leaf), out)
}

// link is the symlink of the name leaf in this directory: relative, with
// one "../" per level up to the mount's root. It is the same kind of node
// the write side creates, so a later mv moves it rather than orphaning it.
func (d *namesDir) link(leaf string) *nameLink {
	full := joinName(d.path, leaf)
	return newNameLink(d.t, len(d.path), hashIno(kindName, full), full, "")
}

// Readdir lists the subdirectories and names of this level, and the
// directories mkdir made, sorted (a directory hides a name spelled the
// same, which the name grammar rules out anyway).
func (d *namesDir) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	nd := d.t.nameDir(d.t.index(), d.path)
	if nd == nil && !d.t.isPending(d.pathString()) {
		return nil, syscall.ENOENT
	}
	return d.listing(d.entries(nd)), 0
}
