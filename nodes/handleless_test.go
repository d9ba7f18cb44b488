package nodes

import (
	"bytes"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// readdirAt sends one handle-less READDIR of node nid at off, as the
// kernel does on this mount, with room for about one entry when small.
func (h *harness) readdirAt(nid, off uint64, small bool) (*fuse.DirEntryList, fuse.Status) {
	size := 4096
	if small {
		size = 100
	}
	out := fuse.NewDirEntryList(make([]byte, size), off)
	st := h.raw.ReadDir(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: nid}, Offset: off, Size: uint32(size)}, out)
	return out, st
}

// A READDIR at an offset the directory never handed out (or forgot, an
// hour after its name went: dirstream.go) ends the listing instead of
// failing, and a cursor left at an offset serves no one once the listing
// changed.
func TestReaddirAtUnknownOffset(t *testing.T) {
	w := newWorld()
	h := newHarness(t, w.s, Options{})
	nid, _, _ := h.mustLookup("images")

	// Read part of the listing: ".", "..", then the first images.
	off := uint64(0)
	for i := 0; i < 4; i++ {
		out, st := h.readdirAt(nid, off, true)
		if st != fuse.OK || out.Offset == off {
			t.Fatalf("READDIR images at %d: %v, offset %d", off, st, out.Offset)
		}
		off = out.Offset
	}
	w.s.remove(w.app.ID)
	w.s.remove(w.dangling.ID)
	w.s.remove(w.lst.ID)

	// A new listing (no cursor at that offset) does not know it.
	out, st := h.readdirAt(nid, off+100, false)
	if st != fuse.OK || out.Offset != off+100 || len(out.Bytes()) != 0 {
		t.Errorf("READDIR past the end: %v, offset %d, %d bytes; want OK and nothing", st, out.Offset, len(out.Bytes()))
	}
	// The cursor left at off is not the listing any more: a reader asking
	// for off gets the rest of the current one, without the removed images.
	out, st = h.readdirAt(nid, off, false)
	for _, id := range []string{w.app.ID, w.dangling.ID, w.lst.ID} {
		if st != fuse.OK || bytes.Contains(out.Bytes(), []byte(id)) {
			t.Errorf("READDIR at the cursor's offset %d after the change: %v, lists the removed %.12s", off, st, id)
		}
	}
}

// A cursor left by a listing read half way whose directory the kernel
// then forgets is closed with the FORGET: closed later, when newer
// listings push it out, the bridge no longer knew the node, panicked,
// and failed the READDIR that pushed it out (EIO through the kernel).
func TestReaddirCursorOfForgottenNode(t *testing.T) {
	w := newWorld()
	h := newHarness(t, w.s, Options{})
	nid, _, _ := h.mustLookup("images/" + w.app.ID)
	if out, st := h.readdirAt(nid, 0, true); st != fuse.OK || out.Offset == 0 {
		t.Fatalf("READDIR images/<id>: %v, offset %d", st, out.Offset)
	}
	h.raw.Forget(nid, 1)
	names, _, _ := h.mustLookup("names")
	for i := 0; i <= maxDirCursors; i++ {
		if _, st := h.readdirAt(names, 0, true); st != fuse.OK {
			t.Fatalf("READDIR names (listing %d): %v", i, st)
		}
	}
}
