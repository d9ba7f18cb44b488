package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The go-fuse floor: the least a go-fuse server can do to serve a file's
// bytes the way imagefs does (no OPEN, READs spliced from the layer file,
// the same read sizes), run as a fourth view of the rows that read large
// files cold. It looks names up in the layer directories, top first, and
// does nothing else: no index, no merged listings, no whiteouts. What it
// takes against the kernel and fuse-overlayfs is the part of a row that
// no go-fuse server could save.

const floorName = "go-fuse floor"

// floorMain is the "serve-floor" helper: it mounts the floor at its last
// argument and serves it until unmounted.
func floorMain(args []string) int {
	fs := flag.NewFlagSet("serve-floor", flag.ContinueOnError)
	lowers := fs.String("lowers", "", "layer directories, colon-separated, top first")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 || *lowers == "" {
		fmt.Fprintln(os.Stderr, "usage: serve-floor -lowers DIR[:DIR…] MOUNTPOINT")
		return 2
	}
	f := &floorFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), lowers: strings.Split(*lowers, ":"),
		nodes: map[uint64]*floorNode{fuse.FUSE_ROOT_ID: {fd: -1}}, ids: map[string]uint64{"": fuse.FUSE_ROOT_ID}}
	srv, err := fuse.NewServer(f, fs.Arg(0), &fuse.MountOptions{
		FsName: "floor", Name: "imagefs-bench-floor", DirectMount: true,
		MaxWrite: 256 << 10, // imagefs's MaxRead
		Options:  []string{"default_permissions"},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve-floor:", err)
		return 1
	}
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
		<-c
		_ = srv.Unmount()
	}()
	srv.Serve()
	return 0
}

type floorFS struct {
	fuse.RawFileSystem
	lowers []string

	mu    sync.Mutex
	nodes map[uint64]*floorNode
	ids   map[string]uint64 // by path
}

type floorNode struct {
	path string
	once sync.Once
	fd   int
}

func (f *floorFS) node(id uint64) *floorNode {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nodes[id]
}

// lstat finds path in the topmost layer that has it.
func (f *floorFS) lstat(path string, st *unix.Stat_t) (string, bool) {
	for _, l := range f.lowers {
		if p := filepath.Join(l, path); unix.Lstat(p, st) == nil {
			return p, true
		}
	}
	return "", false
}

func floorAttr(a *fuse.Attr, st *unix.Stat_t, id uint64) {
	a.Ino, a.Size, a.Blocks, a.Mode, a.Nlink = id, uint64(st.Size), uint64(st.Blocks), st.Mode, uint32(st.Nlink)
	a.Owner = fuse.Owner{Uid: st.Uid, Gid: st.Gid}
	a.Mtime, a.Mtimensec, a.Blksize = uint64(st.Mtim.Sec), uint32(st.Mtim.Nsec), 4096
}

func (f *floorFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	path := filepath.Join(f.node(h.NodeId).path, name)
	var st unix.Stat_t
	if _, ok := f.lstat(path, &st); !ok {
		return fuse.ENOENT
	}
	f.mu.Lock()
	id, ok := f.ids[path]
	if !ok {
		id = uint64(len(f.nodes) + 1)
		f.ids[path], f.nodes[id] = id, &floorNode{path: path, fd: -1}
	}
	f.mu.Unlock()
	out.NodeId = id
	out.SetEntryTimeout(time.Hour)
	out.SetAttrTimeout(time.Hour)
	floorAttr(&out.Attr, &st, id)
	return fuse.OK
}

func (f *floorFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	var st unix.Stat_t
	if _, ok := f.lstat(f.node(in.NodeId).path, &st); !ok {
		return fuse.ENOENT
	}
	floorAttr(&out.Attr, &st, in.NodeId)
	out.SetTimeout(time.Hour)
	return fuse.OK
}

// Open and OpenDir: ENOSYS, so the kernel sends neither, as for imagefs.
func (f *floorFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

func (f *floorFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

// Read splices from the layer file, opened on the first read and kept.
func (f *floorFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	n := f.node(in.NodeId)
	n.once.Do(func() {
		var st unix.Stat_t
		if p, ok := f.lstat(n.path, &st); ok {
			n.fd, _ = unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		}
	})
	if n.fd < 0 {
		return nil, fuse.EIO
	}
	return fuse.ReadResultFd(uintptr(n.fd), int64(in.Offset), int(in.Size)), fuse.OK
}

// floorView is the floor served by this binary (self, as serve-floor)
// over the image's layer directories.
func floorView(self, mnt string, lowers []string, log string) *serverView {
	return &serverView{title: floorName, fstype: "fuse.imagefs-bench-floor", mnt: mnt, lowers: lowers, log: log,
		command: func(lowers, mnt string) *exec.Cmd {
			return exec.Command(self, "serve-floor", "-lowers", lowers, mnt)
		}}
}
