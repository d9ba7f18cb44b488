package union

import (
	"container/list"
	"slices"
	"strings"
	"sync"
)

// DefaultCacheEntries bounds a Cache made with NewCache(0): about 256k
// entries, some tens of megabytes.
const DefaultCacheEntries = 1 << 18

// Cache keeps merged directory listings, least recently used first out,
// holding at most max entries in total (a single listing larger than
// that is still kept while it is the newest).
type Cache struct {
	mu      sync.Mutex
	max     int
	entries int
	lru     list.List // of *cached, most recent at front
	byKey   map[string]*list.Element
}

type cached struct {
	key string
	l   *Listing
}

// NewCache returns a cache bounded to maxEntries entries
// (DefaultCacheEntries when maxEntries <= 0).
func NewCache(maxEntries int) *Cache {
	if maxEntries <= 0 {
		maxEntries = DefaultCacheEntries
	}
	return &Cache{max: maxEntries, byKey: make(map[string]*list.Element)}
}

// Len returns the number of cached listings and of entries in them.
func (c *Cache) Len() (listings, entries int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.entries
}

func (c *Cache) get(key string) *Listing {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.byKey[key]; el != nil {
		c.lru.MoveToFront(el)
		return el.Value.(*cached).l
	}
	return nil
}

// put stores l under key and returns the listing to use: an equal one
// stored meanwhile by a concurrent builder wins.
func (c *Cache) put(key string, l *Listing) *Listing {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.byKey[key]; el != nil {
		c.lru.MoveToFront(el)
		return el.Value.(*cached).l
	}
	c.byKey[key] = c.lru.PushFront(&cached{key: key, l: l})
	c.entries += weight(l)
	for c.entries > c.max && c.lru.Len() > 1 {
		el := c.lru.Back()
		old := el.Value.(*cached)
		c.lru.Remove(el)
		delete(c.byKey, old.key)
		c.entries -= weight(old.l)
	}
	return l
}

// Forget drops the listings of every stack on a layer directory whose path
// holds one of parts (a removed layer's ID, which containers/storage puts
// in its directory's path): they would otherwise stay until the cache is
// full, holding memory for layers that are gone.
func (c *Cache) Forget(parts []string) {
	if len(parts) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, el := range c.byKey {
		stack, _, _ := strings.Cut(key, "\x00\x00") // the stack's layers, then the directory
		if slices.ContainsFunc(parts, func(p string) bool { return strings.Contains(stack, p) }) {
			c.lru.Remove(el)
			delete(c.byKey, key)
			c.entries -= weight(el.Value.(*cached).l)
		}
	}
}

// weight counts a listing as its entries plus one for itself.
func weight(l *Listing) int { return len(l.Entries) + 1 }
