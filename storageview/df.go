package storageview

import (
	"bytes"
	"fmt"
	"strings"
	"syscall"
	"text/tabwriter"
)

// DiskUsage is the df file's numbers. Sizes are bytes of layer content
// (each layer's uncompressed size from its record, measured on disk when
// the record has none); image metadata (manifests, configs) is not
// counted.
type DiskUsage struct {
	Images      int   // images in the store, each once however many names it has
	Active      int   // images used by at least one container
	Size        int64 // every layer of every image, shared layers once (each copy once: ReadOnlyCopy)
	Reclaimable int64 // what removing every image no container uses would free
	PerImage    []ImageUsage
}

// ImageUsage is one image's line of the df file.
type ImageUsage struct {
	ID         string
	Size       int64 // its layer chain
	Unique     int64 // its layers no other image uses
	Containers int
	Names      []string
}

// Usage computes the disk usage of the images in ix. Reclaimable counts
// the writable store's copies of the layers that only images without
// containers use: images with containers stay, and so do images of
// read-only stores, which cannot be removed. A layer both stores hold is
// on disk twice: an image of a read-only store keeps its own store's
// copy, and the writable store's goes with the last writable image using
// it.
func (v *View) Usage(ix *Index) DiskUsage {
	du := DiskUsage{Images: len(ix.Images)}
	kept := map[string]bool{} // the writable store's copy stays (or the layer is read-only)
	counted := map[string]bool{}
	for _, img := range ix.Images {
		u := ImageUsage{ID: img.ID, Containers: len(img.Containers), Names: img.Names}
		if len(img.Containers) > 0 {
			du.Active++
		}
		for _, id := range img.Layers {
			l := ix.Layer(id)
			if l == nil {
				continue
			}
			n := v.layerSize(l)
			u.Size += n
			if len(l.Images) == 1 {
				u.Unique += n
			}
			if !counted[id] {
				counted[id] = true
				du.Size += n
				if l.ReadOnlyCopy {
					du.Size += n
				}
			}
			if len(img.Containers) > 0 || l.ReadOnly || img.ReadOnly && !l.ReadOnlyCopy {
				kept[id] = true
			}
		}
		du.PerImage = append(du.PerImage, u)
	}
	for id := range counted {
		if l := ix.Layer(id); !kept[id] {
			du.Reclaimable += v.layerSize(l)
		}
	}
	return du
}

// Statfs describes the file system of the store's graph root, where its
// layers and image records live (what statfs of the mount reports).
func (v *View) Statfs(st *syscall.Statfs_t) error {
	if err := syscall.Statfs(v.graphRoot, st); err != nil {
		return fmt.Errorf("statfs %s: %w", v.graphRoot, err)
	}
	return nil
}

// DF returns the df file: a summary line like `podman system df`'s Images
// line, with sizes in bytes, then one line per image (sorted by ID):
//
//	TYPE    TOTAL  ACTIVE  SIZE   RECLAIMABLE
//	Images  3      1       30720  10240
//
//	IMAGE ID   SIZE   UNIQUE  SHARED  CONTAINERS  NAMES
//	<64 hex>   20480  10240   10240   1           localhost/a:1,localhost/b:1
//
// NAMES is "<none>" for an image without names.
func (v *View) DF() ([]byte, error) {
	if v.closed.Load() {
		return nil, errClosed
	}
	ix := v.Index()
	k := docKey{docDF, ""}
	if b, ok := v.cache.doc(ix.Generation, k); ok {
		return b, nil
	}
	du := v.Usage(ix)
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "TYPE\tTOTAL\tACTIVE\tSIZE\tRECLAIMABLE\n")
	fmt.Fprintf(tw, "Images\t%d\t%d\t%d\t%d\n", du.Images, du.Active, du.Size, du.Reclaimable)
	if err := tw.Flush(); err != nil {
		return nil, err
	}
	buf.WriteString("\n")
	tw = tabwriter.NewWriter(&buf, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "IMAGE ID\tSIZE\tUNIQUE\tSHARED\tCONTAINERS\tNAMES\n")
	for _, u := range du.PerImage {
		names := "<none>"
		if len(u.Names) > 0 {
			names = strings.Join(u.Names, ",")
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\n", u.ID, u.Size, u.Unique, u.Size-u.Unique, u.Containers, names)
	}
	if err := tw.Flush(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	v.cache.putDoc(ix.Generation, k, b)
	return b, nil
}
