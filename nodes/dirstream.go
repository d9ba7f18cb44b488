package nodes

import (
	"context"
	"hash/fnv"
	"sort"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// A listing is read in pieces: the kernel asks for the rest at the offset
// of the last entry it got, from a new listing when the directory changed
// in between (podman tagged, and the kernel's cached listing was dropped).
// Offsets that counted entries then skipped or repeated entries that had
// not changed. So an entry's offset is a cookie of its name, and a
// listing goes on after that name, wherever it now is, or would be if it
// was removed: each entry neither added nor removed meanwhile comes once,
// as getdents(2) promises. (rootfs/ and diff/ listings never change.)

// listing is a directory listing of d: ".", "..", then ents (sorted by
// name by the caller: an unstable order makes entries vanish for
// concurrent readers, and the cookies rely on it).
func (d *dirNode) listing(ents []fuse.DirEntry) fusefs.DirStream {
	self := d.EmbeddedInode()
	selfIno := self.StableAttr().Ino
	parentIno := selfIno
	if _, p := self.Parent(); p != nil {
		parentIno = p.StableAttr().Ino
	}
	all := make([]fuse.DirEntry, 0, len(ents)+2)
	all = append(all,
		fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: selfIno, Off: 1},
		fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: parentIno, Off: 2})
	for _, e := range ents {
		e.Off = nameCookie(e.Name)
		all = append(all, e)
	}
	d.cookies.remember(all[2:])
	return &cookieStream{ents: all, cookies: &d.cookies}
}

// nameCookie is the offset of the entry after name: in [2^61, 2^62), so
// positive as a loff_t and clear of "." (1) and ".." (2).
func nameCookie(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()>>3 | 1<<61
}

// nameCookies maps the cookies a directory handed out to their names, so
// that a listing can go on after a name that is gone from it.
type nameCookies struct {
	mu    sync.Mutex
	names map[uint64]listedName
}

type listedName struct {
	name   string
	listed time.Time // in the latest listing that had it
}

// cookieMemory is how long a removed name's cookie is kept: a reader that
// stopped at it and comes back later finds the listing ended there.
const cookieMemory = time.Hour

// remember records the cookies of a new listing. The names of entries
// removed since are kept for cookieMemory (looked through only once they
// outnumber the listing), for readers that stopped at one of them: however
// many went at once (podman untag, rmi -a), as the reader's own next read
// makes the new listing.
func (c *nameCookies) remember(ents []fuse.DirEntry) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.names == nil {
		c.names = make(map[uint64]listedName, len(ents))
	}
	for _, e := range ents {
		c.names[e.Off] = listedName{e.Name, now}
	}
	if len(c.names) > 2*len(ents)+256 {
		for cookie, n := range c.names {
			if now.Sub(n.listed) > cookieMemory {
				delete(c.names, cookie)
			}
		}
	}
}

func (c *nameCookies) name(cookie uint64) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.names[cookie]
	return n.name, ok
}

// cookieStream is a listing whose offsets are name cookies.
type cookieStream struct {
	ents    []fuse.DirEntry // ".", "..", then sorted by name
	next    int
	cookies *nameCookies
}

func (s *cookieStream) HasNext() bool { return s.next < len(s.ents) }

func (s *cookieStream) Next() (fuse.DirEntry, syscall.Errno) {
	s.next++
	return s.ents[s.next-1], 0
}

func (s *cookieStream) Close() {}

var _ = (fusefs.FileSeekdirer)((*cookieStream)(nil))

// Seekdir goes on after the entry whose cookie off is. EINVAL for a cookie
// this directory never handed out (or forgot: cookieMemory).
func (s *cookieStream) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off <= 2 { // the start, after ".", after ".."
		s.next = int(off)
		return 0
	}
	name, ok := s.cookies.name(off)
	if !ok {
		return syscall.EINVAL
	}
	named := s.ents[2:]
	s.next = 2 + sort.Search(len(named), func(i int) bool { return named[i].Name > name })
	return 0
}
