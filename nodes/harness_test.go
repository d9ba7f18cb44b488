package nodes

import (
	"bytes"
	"context"
	"log"
	"strings"
	"sync"
	"syscall"
	"testing"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// harness drives a tree over a fake store through go-fuse's raw bridge,
// exactly as the kernel's requests would (lookups register children, the
// same identity yields the same node ID), without mounting anything.
type harness struct {
	t    *testing.T
	s    *fakeStore
	raw  fuse.RawFileSystem
	root *fusefs.Inode
	logs *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newHarness(t *testing.T, s *fakeStore, o Options) *harness {
	t.Helper()
	logs := &syncBuffer{}
	if o.Log == nil {
		o.Log = log.New(logs, "", 0)
	}
	root := NewRoot(s, o)
	raw := NewRawFS(root, &fusefs.Options{
		RootStableAttr: &fusefs.StableAttr{Ino: RootIno, Mode: syscall.S_IFDIR},
	})
	return &harness{t: t, s: s, raw: raw, root: root.EmbeddedInode(), logs: logs}
}

// lookup walks p ("images/<id>/manifest") from the root, one LOOKUP per
// component; it returns the node ID, the inode and the last entry.
func (h *harness) lookup(p string) (uint64, *fusefs.Inode, fuse.EntryOut, syscall.Errno) {
	nid, cur := uint64(fuse.FUSE_ROOT_ID), h.root
	var out fuse.EntryOut
	if p == "" {
		return nid, cur, out, 0
	}
	for _, name := range strings.Split(p, "/") {
		out = fuse.EntryOut{}
		if st := h.raw.Lookup(nil, &fuse.InHeader{NodeId: nid}, name, &out); st != fuse.OK {
			return 0, nil, out, syscall.Errno(st)
		}
		nid, cur = out.NodeId, cur.GetChild(name)
		if cur == nil {
			h.t.Fatalf("lookup %s: %s answered but is not a child", p, name)
		}
	}
	return nid, cur, out, 0
}

// mustLookup is lookup that fails the test on an error.
func (h *harness) mustLookup(p string) (uint64, *fusefs.Inode, fuse.EntryOut) {
	h.t.Helper()
	nid, in, out, errno := h.lookup(p)
	if errno != 0 {
		h.t.Fatalf("lookup %s: %v", p, errno)
	}
	return nid, in, out
}

func (h *harness) getattr(nid uint64) (fuse.AttrOut, syscall.Errno) {
	var out fuse.AttrOut
	st := h.raw.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: nid}}, &out)
	return out, syscall.Errno(st)
}

// read reads p whole, as the kernel does on this mount: OPEN is ENOSYS
// (handleless.go), then reads without a handle.
func (h *harness) read(p string) ([]byte, syscall.Errno) {
	h.t.Helper()
	nid, _, _, errno := h.lookup(p)
	if errno != 0 {
		return nil, errno
	}
	return h.readNode(nid)
}

func (h *harness) readNode(nid uint64) ([]byte, syscall.Errno) {
	h.t.Helper()
	var oo fuse.OpenOut
	if st := h.raw.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: nid}, Flags: syscall.O_RDONLY}, &oo); st != fuse.ENOSYS {
		h.t.Errorf("OPEN of node %d: %v, want ENOSYS", nid, st)
	}
	var data []byte
	buf := make([]byte, 7) // small reads: offsets must work
	for {
		res, st := h.raw.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: nid},
			Offset: uint64(len(data)), Size: uint32(len(buf))}, buf)
		if st != fuse.OK {
			return nil, syscall.Errno(st)
		}
		b, st := res.Bytes(buf)
		if st != fuse.OK {
			return nil, syscall.Errno(st)
		}
		if len(b) == 0 {
			return data, 0
		}
		data = append(data, b...)
	}
}

func (h *harness) mustRead(p string) []byte {
	h.t.Helper()
	b, errno := h.read(p)
	if errno != 0 {
		h.t.Fatalf("read %s: %v", p, errno)
	}
	return b
}

func (h *harness) readlink(p string) (string, syscall.Errno) {
	nid, _, _, errno := h.lookup(p)
	if errno != 0 {
		return "", errno
	}
	b, st := h.raw.Readlink(nil, &fuse.InHeader{NodeId: nid})
	return string(b), syscall.Errno(st)
}

func (h *harness) mustReadlink(p string) string {
	h.t.Helper()
	s, errno := h.readlink(p)
	if errno != 0 {
		h.t.Fatalf("readlink %s: %v", p, errno)
	}
	return s
}

// readdir lists p (without . and ..): names in listing order and their
// entries.
func (h *harness) readdir(p string) ([]string, map[string]fuse.DirEntry, syscall.Errno) {
	h.t.Helper()
	_, in, _, errno := h.lookup(p)
	if errno != 0 {
		return nil, nil, errno
	}
	ds, errno := in.Operations().(fusefs.NodeReaddirer).Readdir(context.Background())
	if errno != 0 {
		return nil, nil, errno
	}
	var names []string
	ents := map[string]fuse.DirEntry{}
	dots := 0
	for ds.HasNext() {
		e, errno := ds.Next()
		if errno != 0 {
			return nil, nil, errno
		}
		if e.Name == "." || e.Name == ".." {
			dots++
			continue
		}
		names = append(names, e.Name)
		ents[e.Name] = e
	}
	if dots != 2 {
		h.t.Errorf("readdir %s: %d of . and .., want 2", p, dots)
	}
	return names, ents, 0
}

func (h *harness) mustReaddir(p string) []string {
	h.t.Helper()
	names, _, errno := h.readdir(p)
	if errno != 0 {
		h.t.Fatalf("readdir %s: %v", p, errno)
	}
	return names
}

// readdirIno is the inode number the listing of dir gives name.
func (h *harness) readdirIno(dir, name string) uint64 {
	h.t.Helper()
	_, ents, errno := h.readdir(strings.TrimSuffix(dir, "/"))
	if errno != 0 {
		h.t.Fatalf("readdir %s: %v", dir, errno)
	}
	return ents[name].Ino
}
