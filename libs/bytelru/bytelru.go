// Package bytelru is a cache bounded by bytes that forgets the least recently
// used entries first: the one document cache of merge and the broadcasters.
package bytelru

import (
	"container/list"
	"sync"
)

// Cache holds values by key up to a total size. It is safe for concurrent use.
// A cache with a limit of 0 or less holds nothing.
type Cache[V any] struct {
	mu    sync.Mutex
	max   int64
	size  int64
	order *list.List // of *entry[V], most recently used at the front
	items map[string]*list.Element
}

type entry[V any] struct {
	key  string
	val  V
	size int64
}

// New returns a cache of at most maxBytes.
func New[V any](maxBytes int64) *Cache[V] {
	return &Cache[V]{max: maxBytes, order: list.New(), items: map[string]*list.Element{}}
}

// Get returns the value of key and marks it used.
func (c *Cache[V]) Get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[key]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*entry[V]).val, true
}

// Has reports whether key is cached, without marking it used.
func (c *Cache[V]) Has(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[key]
	return ok
}

// Put stores val of the given size under key, forgetting the least recently
// used entries beyond the limit. A value larger than the whole cache is not
// kept (and the key's previous value is forgotten).
func (c *Cache[V]) Put(key string, val V, size int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(key)
	if size > c.max {
		return
	}
	c.items[key] = c.order.PushFront(&entry[V]{key: key, val: val, size: size})
	c.size += size
	for c.size > c.max {
		c.removeLocked(c.order.Back().Value.(*entry[V]).key)
	}
}

// Remove forgets key.
func (c *Cache[V]) Remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(key)
}

// Clear forgets everything.
func (c *Cache[V]) Clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.order.Init()
	clear(c.items)
	c.size = 0
}

// Bytes is the size of what the cache holds.
func (c *Cache[V]) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

func (c *Cache[V]) removeLocked(key string) {
	e, ok := c.items[key]
	if !ok {
		return
	}
	c.order.Remove(e)
	delete(c.items, key)
	c.size -= e.Value.(*entry[V]).size
}
