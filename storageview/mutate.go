package storageview

// The changes the tree asks for — tag, untag, remove, retag — with podman's
// rules (containers/common libimage: Image.Tag, Image.Untag,
// Image.removeRecursive, Runtime.LookupImage), written fresh on top of
// go.podman.io/storage, since containers/common is not available here.
//
// Every lookup reads the store itself, not an Index snapshot, so a decision
// is taken on the store's current records; every change invalidates the
// index so the next Index() shows it.

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	digest "github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/storage"
	"go.podman.io/storage/pkg/lockfile"
)

// More errors of the mutations; nodes map them to errno.
var (
	// ErrNameTaken: a plain tag or a rename onto a name another image
	// holds (EEXIST).
	ErrNameTaken = errors.New("name is held by another image")
)

// nameMu serializes this process's read-modify-write changes of names
// lists (c/storage offers no compare-and-set; podman has the same window
// against other processes).
var nameMu sync.Mutex

// mutator applies changes to a store. View builds one per call from its
// store, its read-only option and its Invalidate.
type mutator struct {
	store    storage.Store
	readOnly bool   // the view was opened read-only (mount --read-only)
	changed  func() // called after every change that reached the store
	// deleting, if set, is called with an image's ID just before the
	// image is deleted (the View finds its parent then: prune.go).
	deleting func(id string)
	// otherUsers, if set, lists containers the store does not know of
	// that use an image (transient.go).
	otherUsers func(id string) []string
	// forget, if set, makes containers/storage read its records from disk
	// again (failed).
	forget func()
}

func (m *mutator) done() {
	if m.changed != nil {
		m.changed()
	}
}

// deleteImage deletes the image img of the store's images imgs (as just
// read) and the layers nothing else uses; the store refuses, changing
// nothing, when a container uses the image.
func (m *mutator) deleteImage(img *storage.Image, imgs []storage.Image) error {
	id := img.ID
	if m.otherUsers != nil {
		if users := m.otherUsers(id); len(users) > 0 {
			return fmt.Errorf("%w: image used by %s (recorded in the graph root, where podman 4.3 keeps containers of a transient store)", ErrInUse, short(users[0]))
		}
	}
	restore, err := m.openLayersForRemoval(img, imgs)
	if err != nil {
		return err
	}
	defer restore()
	if m.deleting != nil {
		m.deleting(id)
	}
	if _, err := m.store.DeleteImage(id, true); err != nil {
		// Its top layer lives in an additional store: the record went
		// (an additional store may hold a copy of the same ID), and the
		// layer is not ours to delete; podman rmi succeeds too.
		if errors.Is(err, storage.ErrLayerUnknown) {
			if img, ierr := m.store.Image(id); errors.Is(ierr, storage.ErrImageUnknown) || ierr == nil && img.ReadOnly {
				m.done()
				return nil
			}
		}
		return m.failed(err)
	}
	m.done()
	return nil
}

// failed is the error of a store write that failed: containers/storage
// may keep the change in memory although it could not save it (a full
// disk), and show it, and save it with the next write; forget makes it
// read its records from disk again.
func (m *mutator) failed(err error) error {
	if m.forget != nil && !errors.Is(err, storage.ErrImageUsedByContainer) && !errors.Is(err, storage.ErrImageUnknown) {
		m.forget()
	}
	return storeErr(err)
}

// NormalizeName returns name as `podman tag` stores it (libimage
// NormalizeName): a name whose first component is not a registry (no '.'
// or ':', not "localhost") gets "localhost/" in front ("app" →
// "localhost/app:latest"); docker.io names are completed
// ("docker.io/alpine" → "docker.io/library/alpine:latest"); ":latest" is
// added when there is neither tag nor digest; of a name with both tag and
// digest only the digest stays. Bad grammar (upper case, bad characters,
// over-long) is ErrInvalidName.
func NormalizeName(name string) (string, error) {
	named, err := normalizeName(name)
	if err != nil {
		return "", err
	}
	return named.String(), nil
}

func normalizeName(name string) (reference.Named, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty name", ErrInvalidName)
	}
	if strings.HasPrefix(name, "sha256:") {
		return nil, fmt.Errorf("%w: %q is a digest, not a name", ErrInvalidName, name)
	}
	ref, err := reference.Parse(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrInvalidName, name, err)
	}
	named, ok := ref.(reference.Named)
	if !ok {
		return nil, fmt.Errorf("%w: %q has no repository", ErrInvalidName, name)
	}
	if d := reference.Domain(named); !strings.ContainsAny(d, ".:") && d != "localhost" {
		name = "localhost/" + name
	}
	named, err = reference.ParseNormalizedNamed(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrInvalidName, name, err)
	}
	if _, tagged := named.(reference.NamedTagged); tagged {
		if dig, ok := named.(reference.Digested); ok {
			return reference.WithDigest(reference.TrimNamed(named), dig.Digest())
		}
		return named, nil
	}
	if _, ok := named.(reference.Digested); ok {
		return named, nil
	}
	return reference.TagNameOnly(named), nil
}

// tagName is normalizeName for a name to tag with: digested names are
// refused, as podman tag refuses them.
func tagName(name string) (string, error) {
	named, err := normalizeName(name)
	if err != nil {
		return "", err
	}
	if _, ok := named.(reference.Digested); ok {
		return "", fmt.Errorf("%w: cannot tag with a digested name %q", ErrInvalidName, name)
	}
	return named.String(), nil
}

// images lists the store's images once for a lookup.
func (m *mutator) images() ([]storage.Image, error) {
	imgs, err := m.store.Images()
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	return imgs, nil
}

// The lookups below take the first match: the store lists the writable
// store's images first, then each additional store's in configured order,
// the order c/storage's own Image lookup walks them in.

// byID returns the image with exactly this ID. An ID found both in the
// writable store and in an additional store is the writable record.
func byID(imgs []storage.Image, id string) *storage.Image {
	for i := range imgs {
		if imgs[i].ID == id {
			return &imgs[i]
		}
	}
	return nil
}

// byName returns the image holding exactly this stored name.
func byName(imgs []storage.Image, name string) *storage.Image {
	for i := range imgs {
		if slices.Contains(imgs[i].Names, name) {
			return &imgs[i]
		}
	}
	return nil
}

// byIDPrefix returns the one image whose ID starts with prefix;
// ErrAmbiguous when several do, nil when none.
func byIDPrefix(imgs []storage.Image, prefix string) (*storage.Image, error) {
	if prefix == "" || len(prefix) > 64 || !isLowerHex(prefix) {
		return nil, nil
	}
	var found *storage.Image
	var ids []string
	for i := range imgs {
		if strings.HasPrefix(imgs[i].ID, prefix) {
			if found != nil && found.ID == imgs[i].ID {
				continue // same image in two stores
			}
			found = &imgs[i]
			ids = append(ids, imgs[i].ID)
		}
	}
	if len(ids) > 1 {
		return nil, fmt.Errorf("%w: %q matches %s", ErrAmbiguous, prefix, strings.Join(ids, ", "))
	}
	return found, nil
}

// byDigest returns the first image recording this manifest digest.
func byDigest(imgs []storage.Image, d digest.Digest) *storage.Image {
	for i := range imgs {
		if imgs[i].Digest == d {
			return &imgs[i]
		}
		for _, x := range imgs[i].Digests {
			if x == d {
				return &imgs[i]
			}
		}
	}
	return nil
}

// resolve finds the image ref names, as podman tag finds its source
// (libimage Runtime.LookupImage), in this order:
//
//  1. a full ID, a stored name, a unique ID prefix (c/storage's lookup);
//     "sha256:<hex>" is the ID or ID prefix <hex>, else a manifest digest
//     any image records (podman stops at the ID; imagefs also takes the
//     digests/ entries);
//  2. a short name's candidates: "localhost/<name>", the
//     unqualified-search registries of registries.conf and the docker.io
//     form ("alpine" → docker.io/library/alpine:latest), each with
//     ":latest" added when there is no tag;
//  3. a digested name "repo@sha256:…" by its digest; a short name "app:1"
//     matching the end of a stored name at a '/' ("quay.io/x/app:1").
//
// Unlike podman, a manifest list resolves to the list itself, not to the
// local image of the host's platform: a link to images/<list-id> tags the list.
// A name with both tag and digest is taken by its digest, as podman does.
func (m *mutator) resolve(ref string) (*storage.Image, error) {
	if ref == "" {
		return nil, fmt.Errorf("%w: empty reference", ErrNotFound)
	}
	imgs, err := m.images()
	if err != nil {
		return nil, err
	}
	if named, err := reference.Parse(ref); err == nil {
		if _, tagged := named.(reference.NamedTagged); tagged {
			if c, ok := named.(reference.Canonical); ok {
				ref = c.Name() + "@" + c.Digest().String()
			}
		}
	}
	if hex, ok := strings.CutPrefix(ref, "sha256:"); ok {
		// As podman's: a full ID or manifest digest, never a prefix.
		d, err := digest.Parse(ref)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: sha256: takes 64 hexadecimal digits", ErrNotFound, ref)
		}
		if img := byID(imgs, hex); img != nil {
			return img, nil
		}
		if img := byDigest(imgs, d); img != nil {
			return img, nil
		}
		return nil, fmt.Errorf("%w: %s", ErrNotFound, ref)
	}
	if img := byID(imgs, ref); img != nil {
		return img, nil
	}
	if img := byName(imgs, ref); img != nil {
		return img, nil
	}
	if img, err := byIDPrefix(imgs, ref); err != nil || img != nil {
		return img, err
	}
	for _, c := range nameCandidates(ref) {
		if img := byName(imgs, c); img != nil {
			return img, nil
		}
	}
	if img := byRepoTagOrDigest(imgs, ref); img != nil {
		return img, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, ref)
}

// nameCandidates are the stored names a user's name may stand for, best
// first (shortnames.ResolveLocally plus the docker.io form): a qualified
// name is itself with ":latest" added when untagged; a short name is its
// registries.conf alias, then "localhost/<name>", then each
// unqualified-search registry, then the docker.io form.
func nameCandidates(name string) []string {
	var out []string
	add := func(n reference.Named) { out = append(out, reference.TagNameOnly(n).String()) }
	short, named := isShortName(name)
	if named == nil {
		return nil
	}
	if !short {
		if n, err := reference.ParseNormalizedNamed(name); err == nil {
			add(n)
		}
		return out
	}
	repo := reference.TrimNamed(named)
	withSuffix := func(n reference.Named) reference.Named {
		if t, ok := named.(reference.Tagged); ok {
			if x, err := reference.WithTag(n, t.Tag()); err == nil {
				n = x
			}
		}
		if d, ok := named.(reference.Digested); ok {
			if x, err := reference.WithDigest(n, d.Digest()); err == nil {
				n = x
			}
		}
		return n
	}
	if alias, _, err := sysregistriesv2.ResolveShortNameAlias(nil, repo.String()); err == nil && alias != nil {
		add(withSuffix(alias))
	}
	regs, _ := sysregistriesv2.UnqualifiedSearchRegistries(nil)
	for _, reg := range append([]string{"localhost"}, regs...) {
		if n, err := reference.ParseNormalizedNamed(reg + "/" + name); err == nil {
			add(n)
		}
	}
	if n, err := reference.ParseDockerRef(name); err == nil {
		out = append(out, n.String())
	}
	return out
}

// isShortName reports whether name has no registry part (its first
// component has no '.' or ':' and is not "localhost"), and returns it
// parsed as typed; nil when it is no valid name.
func isShortName(name string) (bool, reference.Named) {
	ref, err := reference.Parse(name)
	if err != nil {
		return false, nil
	}
	named, ok := ref.(reference.Named)
	if !ok {
		return false, nil
	}
	d := reference.Domain(named)
	return !strings.ContainsAny(d, ".:") && d != "localhost", named
}

// byRepoTagOrDigest is libimage's last resort
// (lookupImageInDigestsAndRepoTags): a digested name by any image's
// recorded digests; a short tagged name by the end of a stored name.
func byRepoTagOrDigest(imgs []storage.Image, name string) *storage.Image {
	ref, err := reference.Parse(name)
	if err != nil {
		return nil
	}
	named, ok := ref.(reference.Named)
	if !ok {
		return nil
	}
	if dig, ok := named.(reference.Digested); ok {
		return byDigest(imgs, dig.Digest())
	}
	if short, _ := isShortName(name); !short {
		return nil
	}
	tagged, ok := reference.TagNameOnly(named).(reference.NamedTagged)
	if !ok {
		return nil
	}
	repo, tag := tagged.Name(), tagged.Tag()
	for i := range imgs {
		for _, n := range imgs[i].Names {
			r, err := reference.Parse(n)
			if err != nil {
				continue
			}
			nt, ok := r.(reference.NamedTagged)
			if !ok || nt.Tag() != tag {
				continue
			}
			full := nt.Name()
			if full == repo || strings.HasSuffix(full, "/"+repo) {
				return &imgs[i]
			}
		}
	}
	return nil
}

// writable refuses changes to a read-only view or an image of a read-only
// additional store.
func (m *mutator) writable(img *storage.Image) error {
	if m.readOnly {
		return fmt.Errorf("%w: the view is read-only", ErrReadOnly)
	}
	if img != nil && img.ReadOnly {
		return fmt.Errorf("%w: image %s is in an additional image store", ErrReadOnly, img.ID)
	}
	return nil
}

// storeErr maps the store's errors to the view's sentinels.
func storeErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storage.ErrImageUsedByContainer):
		// c/storage says "image used by <container>: image is in use by a container".
		return fmt.Errorf("%w: %s", ErrInUse, strings.TrimSuffix(err.Error(), ": "+storage.ErrImageUsedByContainer.Error()))
	case errors.Is(err, storage.ErrImageUnknown), errors.Is(err, storage.ErrNotAnImage):
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	case errors.Is(err, storage.ErrStoreIsReadOnly):
		return fmt.Errorf("%w: %v", ErrReadOnly, err)
	}
	return err
}

// tag adds name to the image with this full ID: the name is normalized
// (NormalizeName) and appended to the image's names. A name another image
// holds is ErrNameTaken, unless take is set: then that image loses it, as
// with podman tag. The check reads the store, not the index, which may lag
// behind a name podman has just given. It returns the name as stored.
func (m *mutator) tag(id, name string, take bool) (string, error) {
	n, err := tagName(name)
	if err != nil {
		return "", err
	}
	if err := m.writable(nil); err != nil {
		return "", err
	}
	nameMu.Lock()
	defer nameMu.Unlock()
	imgs, err := m.images()
	if err != nil {
		return "", err
	}
	img := byID(imgs, id)
	if img == nil {
		return "", fmt.Errorf("%w: image %s", ErrNotFound, id)
	}
	if err := m.writable(img); err != nil {
		return "", err
	}
	if holder := byName(imgs, n); holder != nil && holder.ID != id {
		if holder.ReadOnly {
			return "", fmt.Errorf("%w: %s is held by image %s of an additional image store", ErrReadOnly, n, holder.ID)
		}
		if !take {
			return "", fmt.Errorf("%w: %s belongs to image %s", ErrNameTaken, n, holder.ID)
		}
	}
	if err := m.addName(img, n); err != nil {
		return "", err
	}
	m.done()
	return n, nil
}

// addName appends name to the names of img (as read before), in podman's
// order (libimage: SetNames of the names plus the new one). It calls
// AddNames with that same list: AddNames puts its list before the names
// the image holds once the store's lock is taken and drops repeats, so the
// result is that list plus any name another process gave the image since
// our read, which SetNames would drop.
func (m *mutator) addName(img *storage.Image, name string) error {
	if err := m.store.AddNames(img.ID, append(slices.Clone(img.Names), name)); err != nil {
		return m.failed(err)
	}
	return nil
}

// removeName is podman rmi <name> for a stored name (or a name that
// resolves to one, like "alpine" for docker.io/library/alpine:latest):
// when the image has other names only this one goes; when it is the last,
// the image is removed — and if a container uses it, nothing changes
// (ErrInUse). It returns the image's ID and whether the image was removed.
func (m *mutator) removeName(name string) (id string, removed bool, err error) {
	if err := m.writable(nil); err != nil {
		return "", false, err
	}
	nameMu.Lock()
	defer nameMu.Unlock()
	imgs, err := m.images()
	if err != nil {
		return "", false, err
	}
	stored, img := name, byName(imgs, name)
	if img == nil {
		for _, c := range nameCandidates(name) {
			if img = byName(imgs, c); img != nil {
				stored = c
				break
			}
		}
	}
	if img == nil {
		return "", false, fmt.Errorf("%w: no image is named %s", ErrNotFound, name)
	}
	if err := m.writable(img); err != nil {
		return img.ID, false, err
	}
	if len(img.Names) > 1 {
		if err := m.store.RemoveNames(img.ID, []string{stored}); err != nil {
			return img.ID, false, m.failed(err)
		}
		m.done()
		return img.ID, false, nil
	}
	// The last name: remove the image. DeleteImage checks for containers
	// under the store's lock and changes nothing when one uses the image.
	if err := m.deleteImage(img, imgs); err != nil {
		return img.ID, false, err
	}
	return img.ID, true, nil
}

// removeImage is podman rmi of the image with this full ID, names and all
// (as `podman rmi` given the ID and every name): ErrInUse when a
// container uses it; layers other images or containers use stay (the
// store deletes only the layers nothing else references). With
// onlyUnnamed, an image that has a name now is left alone (errNamed): a
// dangling parent tagged while it was being pruned.
func (m *mutator) removeImage(id string, onlyUnnamed bool) error {
	if err := m.writable(nil); err != nil {
		return err
	}
	if onlyUnnamed {
		nameMu.Lock()
		defer nameMu.Unlock()
	}
	imgs, err := m.images()
	if err != nil {
		return err
	}
	img := byID(imgs, id)
	if img == nil {
		return fmt.Errorf("%w: image %s", ErrNotFound, id)
	}
	if err := m.writable(img); err != nil {
		return err
	}
	if onlyUnnamed && len(img.Names) > 0 {
		return fmt.Errorf("%w: %s", errNamed, strings.Join(img.Names, ", "))
	}
	return m.deleteImage(img, imgs)
}

// retag moves the image holding oldName to newName: newName is appended,
// then oldName dropped (as podman tag, then podman untag). A newName held
// by another image is ErrNameTaken; a newName the image already holds just
// drops oldName. It returns the image ID and the new name as stored.
func (m *mutator) retag(oldName, newName string) (string, string, error) {
	n, err := tagName(newName)
	if err != nil {
		return "", "", err
	}
	if err := m.writable(nil); err != nil {
		return "", "", err
	}
	nameMu.Lock()
	defer nameMu.Unlock()
	imgs, err := m.images()
	if err != nil {
		return "", "", err
	}
	img := byName(imgs, oldName)
	if img == nil {
		return "", "", fmt.Errorf("%w: no image is named %s", ErrNotFound, oldName)
	}
	if err := m.writable(img); err != nil {
		return img.ID, "", err
	}
	if holder := byName(imgs, n); holder != nil && holder.ID != img.ID {
		return img.ID, "", fmt.Errorf("%w: %s belongs to image %s", ErrNameTaken, n, holder.ID)
	}
	if n == oldName {
		return img.ID, n, nil
	}
	// Add, then remove (names others gave the image meanwhile stay, see
	// addName): the image never holds neither of the two.
	if err := m.addName(img, n); err != nil {
		return img.ID, "", err
	}
	err = m.store.RemoveNames(img.ID, []string{oldName})
	m.done()
	if err != nil { // the image holds both names
		return img.ID, "", m.failed(err)
	}
	return img.ID, n, nil
}

// mutator returns the view's mutator: its store, its read-only option, and
// Invalidate so the next Index shows each change.
func (v *View) mutator() *mutator {
	return &mutator{store: v.store, readOnly: v.opts.ReadOnly, changed: v.changedByUs, otherUsers: v.graphRootUsers, forget: v.forgetUnsaved}
}

// forgetUnsaved makes every user of the store's records, this process's
// containers/storage included, read them from disk at their next use:
// it records a write in their lock files, as another process's write does.
func (v *View) forgetUnsaved() {
	for _, r := range v.writableRoots() {
		for _, kind := range []string{"images", "layers"} {
			path := v.recordLock(r, kind)
			if _, err := os.Stat(path); err != nil {
				continue
			}
			lf, err := lockfile.GetLockFile(path)
			if err != nil {
				v.log.Printf("storageview: %v", err)
				continue
			}
			lf.Lock()
			if _, err := lf.RecordWrite(); err != nil {
				v.log.Printf("storageview: recording a write in %s: %v", path, err)
			}
			lf.Unlock()
		}
	}
	v.Invalidate()
}

// changedByUs is called after each of our own changes: the index is
// rebuilt before the change returns (so the next Index shows it), and the
// followers (Subscribe) are woken at once.
func (v *View) changedByUs() {
	v.refreshNow()
	wakeFollower(v)
}

// ResolveImage finds the image ref names, as podman tag finds its source:
// a full ID, a unique ID prefix, "sha256:<id or manifest digest>", a stored
// name, a short name ("alpine" → localhost/alpine:latest or
// docker.io/library/alpine:latest, whichever is stored), name@digest. An
// unknown ref is ErrNotFound, an ambiguous ID prefix ErrAmbiguous.
func (v *View) ResolveImage(ref string) (*Image, error) {
	img, err := v.mutator().resolve(ref)
	if err != nil {
		return nil, err
	}
	return v.indexed(img.ID)
}

// indexed returns the Index's record of an image the store has just shown
// us, rebuilding the Index if it does not have it yet.
func (v *View) indexed(id string) (*Image, error) {
	if img := v.Index().ImageByID(id); img != nil {
		return img, nil
	}
	v.Invalidate()
	if img := v.Index().ImageByID(id); img != nil {
		return img, nil
	}
	return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
}

// Tag gives the image with this full ID the name (ln -s): the name is
// normalized (NormalizeName: "app" is localhost/app:latest) and added after
// the image's names. A name another image holds in the store now is
// ErrNameTaken, even if the index does not show it yet. Bad grammar or a
// digested name is ErrInvalidName, an image of an additional store (or a
// name one holds) ErrReadOnly.
func (v *View) Tag(imageID, name string) error {
	_, err := v.mutator().tag(imageID, name, false)
	return err
}

// TakeName is Tag that moves the name from the image holding it, as podman
// tag does (ln -sfn: the rename of its temporary link over the name).
func (v *View) TakeName(imageID, name string) error {
	_, err := v.mutator().tag(imageID, name, true)
	return err
}

// RemoveName is podman rmi <name>: the name goes; if it was the image's
// last, the image goes too — unless a container uses it, and then nothing
// changes and the error is ErrInUse — and so do its dangling parents
// (prune.go).
func (v *View) RemoveName(name string) error {
	var parent string
	id, removed, err := v.removing(&parent).removeName(name)
	if removed {
		v.pruneParents(parent, id)
	}
	return err
}

// RemoveImage removes the image with this full ID and all its names
// (podman rmi with the ID and every name), and its dangling parents.
// ErrInUse when a container uses it; layers shared with other images stay.
func (v *View) RemoveImage(imageID string) error {
	var parent string
	if err := v.removing(&parent).removeImage(imageID, false); err != nil {
		return err
	}
	v.pruneParents(parent, imageID)
	return nil
}

// Retag moves a name: newName (normalized) is added to the image holding
// oldName, then oldName dropped. ErrNameTaken when another image holds
// newName.
func (v *View) Retag(oldName, newName string) error {
	_, _, err := v.mutator().retag(oldName, newName)
	return err
}

// Writable returns ErrReadOnly when the view was opened read-only (mount
// --read-only): the tree then refuses even changes that stay in memory,
// like mkdir in names/.
func (v *View) Writable() error {
	return v.mutator().writable(nil)
}
