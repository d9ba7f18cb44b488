package storageview

import "errors"

// Removing an image also removes its dangling parents, as podman rmi does
// (libimage Image.removeRecursive): the parent (inspect.json's Parent,
// found before the removal) goes when, once its child is gone, it has no
// names and no children; then its own parent, and so on. These are the
// untagged intermediate images of `podman build --layers`. A parent that
// cannot go (a container uses it, it is in an additional image store) stays
// with a log line, where podman rmi reports an error: the removal asked for
// has happened either way.

// errNamed: a parent being pruned got a name meanwhile, so it stays.
var errNamed = errors.New("the image has a name now")

// removing returns a mutator that stores, in *parent, the ID of the parent
// of the image it deletes ("" when it has none).
func (v *View) removing(parent *string) *mutator {
	m := v.mutator()
	m.deleting = func(id string) {
		ix := v.current()
		*parent = v.parentID(ix, ix.ImageByID(id))
	}
	return m
}

// parentID is the ID of img's parent in ix, "" when it has none (or img
// is nil).
func (v *View) parentID(ix *Index, img *Image) string {
	if img != nil {
		if p := v.parent(ix, img); p != nil {
			return p.ID
		}
	}
	return ""
}

// current returns the index of the store as it is now, not as last checked.
func (v *View) current() *Index {
	v.expireCheck()
	return v.Index()
}

// pruneParents removes the image with this ID, the parent of the removed
// image child, if it is dangling, then its parents while they are.
func (v *View) pruneParents(id, child string) {
	for id != "" {
		ix := v.current()
		img := ix.ImageByID(id)
		if img == nil || len(img.Names) > 0 || v.hasChildren(ix, img) {
			return
		}
		next := v.parentID(ix, img)
		if err := v.mutator().removeImage(id, true); err != nil {
			v.log.Printf("storageview: dangling parent image %s of removed image %s stays: %v", short(id), short(child), err)
			return
		}
		v.log.Printf("storageview: removed dangling parent image %s of removed image %s (as podman rmi)", short(id), short(child))
		id, child = next, id
	}
}

// hasChildren is libimage's children rule, the converse of parent: some
// image whose top layer is img's top layer or a layer on top of it has
// img's config history plus one entry and all of img's layers. Layerless
// images compare with the other layerless images. An image whose config
// cannot be read counts as a child, and one without a config (a list) as
// having children, so that nothing is pruned on a guess.
func (v *View) hasChildren(ix *Index, img *Image) bool {
	parent := v.ociOf(img)
	if parent == nil {
		return true
	}
	candidates := append([]*Image(nil), ix.ImagesByTopLayer(img.TopLayer)...)
	if img.TopLayer != "" {
		for _, l := range ix.Layers {
			if l.Parent == img.TopLayer {
				candidates = append(candidates, ix.ImagesByTopLayer(l.ID)...)
			}
		}
	}
	for _, c := range candidates {
		if c.ID == img.ID || c.IsList {
			continue
		}
		child := v.ociOf(c)
		if child == nil || areParentAndChild(parent, child) {
			return true
		}
	}
	return false
}
