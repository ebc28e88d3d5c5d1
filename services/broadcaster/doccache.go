package broadcaster

import (
	"container/list"
	"sync"
)

// docCache keeps the latest version of the documents that full subscriptions
// follow, least recently used first out once it holds more than max bytes. When
// a change comes without its document (value_omitted, a large document), the hub
// applies the change to the cached previous version instead of reading the
// document from statestore's log.
type docCache struct {
	mu    sync.Mutex
	max   int64
	size  int64
	order *list.List // of *cachedDoc, most recently used at the front
	byID  map[string]*list.Element
}

type cachedDoc struct {
	id      string
	version int64
	value   []byte
}

// cachedDocOverhead approximates the bookkeeping of one entry.
const cachedDocOverhead = 128

func (d *cachedDoc) bytes() int64 { return int64(len(d.id) + len(d.value) + cachedDocOverhead) }

func newDocCache(maxBytes int64) *docCache {
	return &docCache{max: maxBytes, order: list.New(), byID: map[string]*list.Element{}}
}

// get returns the cached document id at version, if that is the version held.
func (c *docCache) get(id string, version int64) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byID[id]
	if !ok {
		return nil, false
	}
	d := e.Value.(*cachedDoc)
	if d.version != version {
		return nil, false
	}
	c.order.MoveToFront(e)
	return d.value, true
}

// put records value as the latest version of id. A document larger than the
// whole cache is not kept.
func (c *docCache) put(id string, version int64, value []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(id)
	d := &cachedDoc{id: id, version: version, value: value}
	if d.bytes() > c.max {
		return
	}
	c.byID[id] = c.order.PushFront(d)
	c.size += d.bytes()
	for c.size > c.max {
		c.removeLocked(c.order.Back().Value.(*cachedDoc).id)
	}
}

// drop forgets id (a version the cache does not hold went by).
func (c *docCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(id)
}

func (c *docCache) removeLocked(id string) {
	e, ok := c.byID[id]
	if !ok {
		return
	}
	c.order.Remove(e)
	delete(c.byID, id)
	c.size -= e.Value.(*cachedDoc).bytes()
}

// bytes is what the cache holds.
func (c *docCache) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}
