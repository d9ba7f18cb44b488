package union

import (
	"bytes"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Change is one line of a layer's changes file.
type Change struct {
	Kind byte   // 'A' added, 'C' changed, 'D' deleted
	Path string // absolute inside the image ("/etc/passwd")
	// Hidden: the path lies in a directory of the new tree that some
	// users may not read and search (its mode lacks r-x for its owner,
	// group or others, or an ancestor's does, or it has an ACL, whose
	// named users and groups may have less), so that the image's own
	// permissions would keep the name from them.
	Hidden bool
}

// aclAccessXattr holds a file's access ACL when it has more entries than
// its mode bits say.
const aclAccessXattr = "system.posix_acl_access"

// closedToSome reports whether a directory of this mode, with an ACL or
// not, keeps its names from some user: owner, group or others lack r-x
// (a 0705 directory shuts its group out), or named users and groups of an
// ACL may.
func closedToSome(mode uint32, hasACL bool) bool { return mode&0o555 != 0o555 || hasACL }

// String formats the change as podman diff prints it: "A /path".
func (c Change) String() string { return string(c.Kind) + " " + c.Path }

// Changes lists what layer k of layers (base first) changes in the tree
// the layers below it make, the way containers/storage's naive diff
// (podman diff IMAGE) compares the two trees: a name only in the new tree
// is A, with everything below it; a name only in the old tree is D (its
// contents are not listed); a name in both is C when its type, mode,
// owner, device number, mtime and size (not for directories, block
// devices and sockets), security.capability or user.* xattrs differ; a
// directory holding a change is C too. The result is sorted by path, and
// says which names the tree's modes hide from others (Change.Hidden).
//
// For diff layers only the directories the layer itself holds are
// compared; for Full (vfs) layers the whole trees are.
func Changes(layers []Layer, k int, cache *Cache) ([]Change, error) {
	old, err := NewStack(layers[:k], cache)
	if err != nil {
		return nil, err
	}
	cur, err := NewStack(layers[:k+1], cache)
	if err != nil {
		return nil, err
	}
	d := &differ{old: old, cur: cur, prune: !layers[k].Full, top: int32(len(cur.layers) - 1)}
	if _, err := d.dir(cur.Root(), old.Root(), true, false); err != nil {
		return nil, err
	}
	sort.Slice(d.out, func(i, j int) bool { return d.out[i].Path < d.out[j].Path })
	return d.out, nil
}

type differ struct {
	old, cur *Stack
	prune    bool
	top      int32 // index of the compared layer in cur
	out      []Change
}

// dir compares directory n of the new tree with o of the old one (nil
// when there is none); it reports whether anything below changed. hidden
// tells whether n's own name is hidden from others.
func (d *differ) dir(n, o *Entry, reported, hidden bool) (bool, error) {
	mark := len(d.out)
	nl, err := d.cur.List(n)
	if err != nil {
		return false, err
	}
	st, err := d.cur.Stat(n)
	if err != nil {
		return false, err
	}
	_, aclErr := d.cur.GetXattr(n, aclAccessXattr)
	inside := hidden || closedToSome(st.Mode, aclErr == nil)
	var ol *Listing
	if o != nil && o.IsDir() {
		if ol, err = d.old.List(o); err != nil {
			return false, err
		}
	}
	for _, nc := range nl.Entries {
		var oc *Entry
		if ol != nil {
			oc = ol.Find(nc.Name)
		}
		childReported := false
		switch {
		case oc == nil:
			d.out = append(d.out, Change{'A', "/" + nc.Path, inside})
			childReported = true
		default:
			diff, err := d.differs(nc, oc)
			if err != nil {
				return false, err
			}
			if diff {
				d.out = append(d.out, Change{'C', "/" + nc.Path, inside})
				childReported = true
			}
		}
		if !nc.IsDir() {
			continue
		}
		if d.prune && oc != nil && !hasLayer(nc.chain, d.top) {
			continue // the layer holds nothing under this directory
		}
		if _, err := d.dir(nc, oc, childReported, inside); err != nil {
			return false, err
		}
	}
	if ol != nil {
		for _, oc := range ol.Entries {
			if nl.Find(oc.Name) == nil {
				d.out = append(d.out, Change{'D', "/" + oc.Path, inside})
			}
		}
	}
	changed := len(d.out) > mark
	if changed && !reported && n.Path != "" {
		d.out = append(d.out, Change{'C', "/" + n.Path, hidden})
	}
	return changed, nil
}

func hasLayer(chain []int32, li int32) bool {
	for _, c := range chain {
		if c == li {
			return true
		}
	}
	return false
}

// differs compares a name present in both trees.
func (d *differ) differs(n, o *Entry) (bool, error) {
	a, err := d.cur.Stat(n)
	if err != nil {
		return false, err
	}
	b, err := d.old.Stat(o)
	if err != nil {
		return false, err
	}
	// As podman 4.3's containers/storage (and Docker): neither size nor
	// mtime count for directories — a directory's mtime moves with every
	// name added or removed below it, which is reported by itself — and
	// by its test of the mode's S_IFDIR bit, for block devices and
	// sockets neither. A symlink's target is not compared.
	if a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid || a.Rdev != b.Rdev ||
		(b.Mode&unix.S_IFDIR != unix.S_IFDIR && (!sameTime(a.Mtime, b.Mtime) || a.Size != b.Size)) {
		return true, nil
	}
	x1, err := d.cur.xattrs(n)
	if err != nil {
		return false, err
	}
	x2, err := d.old.xattrs(o)
	if err != nil {
		return false, err
	}
	return !sameXattrs(x1, x2), nil
}

// sameTime is containers/storage's sameFsTimeSpec: equal, or equal
// seconds when one side has no nanoseconds.
func sameTime(a, b unix.Timespec) bool {
	return a == b || (a.Sec == b.Sec && (a.Nsec == 0 || b.Nsec == 0))
}

func sameXattrs(a, b *xattrSet) bool {
	if !bytes.Equal(a.values["security.capability"], b.values["security.capability"]) {
		return false
	}
	count := func(x *xattrSet) int {
		n := 0
		for k := range x.values {
			if strings.HasPrefix(k, "user.") {
				n++
			}
		}
		return n
	}
	if count(a) != count(b) {
		return false
	}
	for k, v := range a.values {
		if strings.HasPrefix(k, "user.") {
			w, ok := b.values[k]
			if !ok || !bytes.Equal(v, w) {
				return false
			}
		}
	}
	return true
}
