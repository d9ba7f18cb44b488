package nodes

// Bounding what a mount keeps in memory for rootfs/ and diff/. Every
// entry the kernel knows has a go-fuse inode and its lstat data here
// (about 0.6 KiB), and the kernel lets go of them only when it drops its
// dentries — with gigabytes free it never does, so a walk through every
// image would keep every entry it touched. Past RootfsOptions.MaxInodes,
// the trees that grew least recently are dropped from the kernel's cache
// as a whole (NotifyEntry of their rootfs/ or diff/ entry: the kernel
// drops every unused dentry below and sends FORGET), and come back on the
// next lookup, from the listing cache.

import (
	"cmp"
	"slices"
	"sync/atomic"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
)

// DefaultMaxInodes bounds the rootfs/ and diff/ inodes the kernel is
// left knowing (RootfsOptions.MaxInodes). It is larger than one image
// should need, so that warm walks of a big image stay cached; eviction
// takes whole trees, never the newest, and brings the count down to three
// quarters of the bound.
const DefaultMaxInodes = 1 << 18

// treeState is what eviction knows of a rootfsTree.
type treeState struct {
	parent    *fusefs.Inode // images/<id>/ or layers/<id>/
	name      string        // "rootfs" or "diff"
	live      atomic.Int64  // inodes of the tree the kernel knows
	lastGrown atomic.Int64  // UnixNano of its newest inode
}

// track registers t for eviction (Rootfs.newRoot, knownRoot).
func (r *Rootfs) track(t *rootfsTree) {
	r.mu.Lock()
	r.trees[t] = struct{}{}
	r.mu.Unlock()
}

// grew counts a new inode of t; past the bound it starts an eviction.
func (t *rootfsTree) grew() {
	t.live.Add(1)
	t.lastGrown.Store(time.Now().UnixNano())
	if t.r.live.Add(1) > t.r.maxInodes && t.r.evicting.CompareAndSwap(false, true) {
		go t.r.evict()
	}
}

var _ = (fusefs.NodeOnForgetter)((*rootfsNode)(nil))

// OnForget: the kernel dropped the entry.
func (n *rootfsNode) OnForget() {
	t := n.tree
	t.r.live.Add(-1)
	if t.live.Add(-1) == 0 { // the root went too: the tree is unreachable
		t.r.mu.Lock()
		delete(t.r.trees, t)
		t.r.mu.Unlock()
	}
}

// evict drops the least recently grown trees from the kernel's cache
// until the live count would be back under three quarters of the bound.
// It runs in its own goroutine: a notification must not be sent from
// inside an operation on the same directory (notify.go).
func (r *Rootfs) evict() {
	defer r.evicting.Store(false)
	type candidate struct {
		t         *rootfsTree
		lastGrown int64
	}
	r.mu.Lock()
	trees := make([]candidate, 0, len(r.trees))
	for t := range r.trees {
		trees = append(trees, candidate{t, t.lastGrown.Load()})
	}
	r.mu.Unlock()
	slices.SortFunc(trees, func(a, b candidate) int { return cmp.Compare(a.lastGrown, b.lastGrown) })
	excess := r.live.Load() - r.maxInodes*3/4
	for _, c := range trees[:max(len(trees)-1, 0)] { // never the newest
		if excess <= 0 {
			break
		}
		excess -= c.t.live.Load()
		r.mu.Lock()
		delete(r.trees, c.t)
		r.mu.Unlock()
		c.t.parent.NotifyEntry(c.t.name)
	}
}
