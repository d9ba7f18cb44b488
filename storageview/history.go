package storageview

import (
	"bytes"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// historyRow is one line of the history file.
type historyRow struct {
	id        string
	created   time.Time
	createdBy string
	size      int64
	comment   string
}

// History returns what `podman history --no-trunc --human=false` prints
// for the image: one line per config history entry, newest first, with
// columns ID (the image whose top layer the entry made, as podman finds
// it, else <missing>), CREATED (RFC 3339, as recorded), CREATED BY, SIZE
// (the layer's size, podman's units) and COMMENT. A manifest list has no
// history of its own: header only.
func (v *View) History(imageID string) ([]byte, error) {
	ix, img, err := v.image(imageID)
	if err != nil {
		return nil, err
	}
	k := docKey{docHistory, img.ID}
	if b, ok := v.cache.doc(ix.Generation, k); ok {
		return b, nil
	}
	var rows []historyRow
	if !img.IsList {
		m, err := v.meta(img)
		if err != nil {
			return nil, err
		}
		if m.ociErr != nil {
			return nil, fmt.Errorf("reading the config of image %s: %w", short(img.ID), m.ociErr)
		}
		rows = v.historyRows(ix, img, m)
	}
	var buf bytes.Buffer
	// podman's report writer: min width 12, tab width 2, padding 2.
	tw := tabwriter.NewWriter(&buf, 12, 2, 2, ' ', 0)
	fmt.Fprint(tw, "ID\tCREATED\tCREATED BY\tSIZE\tCOMMENT\n")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.id, r.created.Format(time.RFC3339), r.createdBy, podmanSize(r.size), r.comment)
	}
	if err := tw.Flush(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	v.cache.putDoc(ix.Generation, k, b)
	return b, nil
}

// historyRows walks the config history newest first beside the layer
// chain, top layer first, as libimage's History (podman 4.3): an entry
// that made a layer gets that layer's size and moves down the chain (an
// empty-layer entry stays on the same layer, and so does every entry once
// the base layer is reached: older non-empty entries get its size again);
// the first image (in store order) whose top layer the current layer is
// lends its ID, once. A layerless image's lines are all <missing>.
func (v *View) historyRows(ix *Index, img *Image, m *imageMeta) []historyRow {
	hist := m.oci.History
	var layer *Layer
	if img.TopLayer != "" {
		layer = ix.Layer(img.TopLayer)
	}
	used := map[string]bool{}
	rows := make([]historyRow, 0, len(hist))
	for x := len(hist) - 1; x >= 0; x-- {
		h := hist[x]
		r := historyRow{id: "<missing>", createdBy: h.CreatedBy, comment: h.Comment}
		if h.Created != nil {
			r.created = *h.Created
		}
		if layer != nil {
			if !h.EmptyLayer {
				r.size = v.layerSize(layer)
			}
			if on := ix.ImagesByTopLayer(layer.ID); len(on) > 0 && !used[on[0].ID] {
				r.id = on[0].ID
				used[on[0].ID] = true
			}
			if !h.EmptyLayer && layer.Parent != "" {
				layer = ix.Layer(layer.Parent)
			}
		}
		rows = append(rows, r)
	}
	return rows
}

// podmanSize formats a size as podman's history does: go-units'
// HumanSizeWithPrecision(n, 3) ("2.05kB") with a space before the unit.
func podmanSize(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	s := fmt.Sprintf("%.3g%s", f, units[i])
	j := strings.LastIndexFunc(s, unicode.IsNumber)
	return s[:j+1] + " " + s[j+1:]
}
