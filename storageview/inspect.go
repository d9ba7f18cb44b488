package storageview

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/manifest"
)

// inspectData is `podman image inspect`'s object (podman 4.3, libimage
// ImageData): same fields, same order, same JSON names.
type inspectData struct {
	ID           string                        `json:"Id"`
	Digest       digest.Digest                 `json:"Digest"`
	RepoTags     []string                      `json:"RepoTags"`
	RepoDigests  []string                      `json:"RepoDigests"`
	Parent       string                        `json:"Parent"`
	Comment      string                        `json:"Comment"`
	Created      *time.Time                    `json:"Created"`
	Config       *imgspecv1.ImageConfig        `json:"Config"`
	Version      string                        `json:"Version"`
	Author       string                        `json:"Author"`
	Architecture string                        `json:"Architecture"`
	Os           string                        `json:"Os"`
	Size         int64                         `json:"Size"`
	VirtualSize  int64                         `json:"VirtualSize"`
	GraphDriver  *driverData                   `json:"GraphDriver"`
	RootFS       *rootFS                       `json:"RootFS"`
	Labels       map[string]string             `json:"Labels"`
	Annotations  map[string]string             `json:"Annotations"`
	ManifestType string                        `json:"ManifestType"`
	User         string                        `json:"User"`
	History      []imgspecv1.History           `json:"History"`
	NamesHistory []string                      `json:"NamesHistory"`
	HealthCheck  *manifest.Schema2HealthConfig `json:"Healthcheck,omitempty"`
}

type driverData struct {
	Name string            `json:"Name"`
	Data map[string]string `json:"Data"`
}

type rootFS struct {
	Type   string          `json:"Type"`
	Layers []digest.Digest `json:"Layers"`
}

// InspectJSON returns what `podman image inspect` prints for the image, as
// one object (not a list), indented as podman indents, with a trailing
// newline. GraphDriver.Data never holds MergedDir (podman adds it while the
// image happens to be mounted). A manifest list gets an object describing
// the list itself; podman would describe the local platform's instance.
func (v *View) InspectJSON(imageID string) ([]byte, error) {
	ix, img, err := v.image(imageID)
	if err != nil {
		return nil, err
	}
	k := docKey{docInspect, img.ID}
	if b, ok := v.cache.doc(ix.Generation, k); ok {
		return b, nil
	}
	m, err := v.meta(img)
	if err != nil {
		return nil, err
	}
	d, err := v.inspect(ix, img, m)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // podman prints "<", ">" and "&" as they are
	enc.SetIndent("", "     ")
	if err := enc.Encode(d); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	v.cache.putDoc(ix.Generation, k, b)
	return b, nil
}

func (v *View) inspect(ix *Index, img *Image, m *imageMeta) (*inspectData, error) {
	size := v.imageSize(ix, img)
	d := &inspectData{
		ID:           img.ID,
		RepoTags:     v.repoTags(img),
		RepoDigests:  v.repoDigests(img),
		Size:         size,
		VirtualSize:  size,
		NamesHistory: img.NamesHistory,
		ManifestType: m.mimeType,
		Annotations:  m.annotations,
	}
	if d.Annotations == nil {
		d.Annotations = map[string]string{} // podman prints {}
	}
	if img.IsList {
		d.Digest = img.Digest
		created := img.Created
		d.Created = &created
		d.GraphDriver = &driverData{Name: v.driver}
		return d, nil
	}
	if m.ociErr != nil {
		return nil, fmt.Errorf("reading the config of image %s: %w", short(img.ID), m.ociErr)
	}
	oci := m.oci
	d.Digest = img.recordDigest
	if d.Digest == "" {
		d.Digest = img.Digest
	}
	d.Comment = m.comment
	d.Created = oci.Created
	d.Config = &oci.Config
	d.Version = m.info.DockerVersion
	d.Author = oci.Author
	d.Architecture = oci.Architecture
	d.Os = oci.OS
	d.Labels = m.info.Labels
	d.RootFS = &rootFS{Type: oci.RootFS.Type, Layers: oci.RootFS.DiffIDs}
	d.User = oci.Config.User
	d.History = oci.History
	d.HealthCheck = m.health
	d.GraphDriver = v.graphDriverData(img)
	if p := v.parent(ix, img); p != nil {
		d.Parent = p.ID
	}
	return d, nil
}

// graphDriverData is the driver's metadata for the top layer, as podman
// shows it, without MergedDir. podman asks for it for a layerless image
// too (layer "": the overlay driver answers with its home's diff and work
// directories); a list has none.
func (v *View) graphDriverData(img *Image) *driverData {
	dd := &driverData{Name: v.driver}
	if img.IsList {
		return dd
	}
	drv, err := v.store.GraphDriver()
	if err != nil {
		return dd
	}
	md, err := drv.Metadata(img.TopLayer)
	if err != nil {
		return dd
	}
	delete(md, "MergedDir")
	dd.Data = md
	return dd
}

// repoTags are the names that carry a tag, as libimage's RepoTags.
func (v *View) repoTags(img *Image) []string {
	tags := make([]string, 0, len(img.Names))
	for _, n := range img.Names {
		ref, err := reference.Parse(n)
		if err != nil {
			v.log.Printf("storageview: image %s: name %q does not parse: %v", short(img.ID), n, err)
			continue
		}
		if t, ok := ref.(reference.NamedTagged); ok {
			tags = append(tags, t.String())
		}
	}
	return tags
}

// repoDigests pairs every name's repository with every digest of the
// image, sorted, as libimage's RepoDigests.
func (v *View) repoDigests(img *Image) []string {
	out := []string{}
	seen := map[string]bool{}
	digests := append(append([]digest.Digest(nil), img.Digests...), img.recordDigest)
	for _, n := range img.Names {
		named, err := reference.ParseNormalizedNamed(n)
		if err != nil {
			v.log.Printf("storageview: image %s: name %q does not parse: %v", short(img.ID), n, err)
			continue
		}
		for _, d := range digests {
			if d == "" {
				continue
			}
			c, err := reference.WithDigest(reference.TrimNamed(named), d)
			if err != nil {
				continue
			}
			if s := c.String(); !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	sort.Strings(out)
	return out
}

// parent is libimage's parent rule (podman 4.3): among the images whose
// top layer is this image's top layer or its parent layer (those first),
// in store order, the first whose config history is this image's minus
// its last entry and whose layers are a prefix of this image's. Images
// without layers compare with the other layerless images. Lists have no
// parent.
func (v *View) parent(ix *Index, img *Image) *Image {
	if img.IsList {
		return nil
	}
	child := v.ociOf(img)
	if child == nil {
		return nil
	}
	var candidates []*Image
	if img.TopLayer == "" {
		candidates = ix.ImagesByTopLayer("")
	} else {
		candidates = append(candidates, ix.ImagesByTopLayer(img.TopLayer)...)
		if l := ix.Layer(img.TopLayer); l != nil && l.Parent != "" {
			candidates = append(candidates, ix.ImagesByTopLayer(l.Parent)...)
		}
	}
	for _, c := range candidates {
		if c.ID == img.ID || c.IsList {
			continue
		}
		if p := v.ociOf(c); p != nil && areParentAndChild(p, child) {
			return c
		}
	}
	return nil
}

// ociOf returns the image's config as podman reads it, or nil.
func (v *View) ociOf(img *Image) *imgspecv1.Image {
	m, err := v.meta(img)
	if err != nil || m.ociErr != nil {
		return nil
	}
	return m.oci
}

// areParentAndChild: the child uses all of the parent's layers (diff IDs)
// and its history is the parent's plus exactly one entry.
func areParentAndChild(parent, child *imgspecv1.Image) bool {
	if len(parent.RootFS.DiffIDs) > len(child.RootFS.DiffIDs) {
		return false
	}
	for i := range parent.RootFS.DiffIDs {
		if child.RootFS.DiffIDs[i] != parent.RootFS.DiffIDs[i] {
			return false
		}
	}
	if len(parent.History)+1 != len(child.History) {
		return false
	}
	for i := range parent.History {
		if !sameHistory(parent.History[i], child.History[i]) {
			return false
		}
	}
	return true
}

func sameHistory(a, b imgspecv1.History) bool {
	if (a.Created == nil) != (b.Created == nil) {
		return false
	}
	if a.Created != nil && !a.Created.Equal(*b.Created) {
		return false
	}
	return a.CreatedBy == b.CreatedBy && a.Author == b.Author && a.Comment == b.Comment && a.EmptyLayer == b.EmptyLayer
}
