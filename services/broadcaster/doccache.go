package broadcaster

import "github.com/fedsync/fedsync/libs/bytelru"

// docCache keeps the latest version of the documents that full subscriptions
// follow, least recently used first out once it holds more than max bytes. When
// a change comes without its document (value_omitted, a large document), the hub
// applies the change to the cached previous version instead of reading the
// document from statestore's log.
type docCache struct {
	max   int64
	cache *bytelru.Cache[cachedDoc]
}

type cachedDoc struct {
	version int64
	value   []byte
}

// cachedDocOverhead approximates the bookkeeping of one entry.
const cachedDocOverhead = 128

func newDocCache(maxBytes int64) *docCache {
	return &docCache{max: maxBytes, cache: bytelru.New[cachedDoc](maxBytes)}
}

// get returns the cached document id at version, if that is the version held.
func (c *docCache) get(id string, version int64) ([]byte, bool) {
	d, ok := c.cache.Get(id)
	if !ok || d.version != version {
		return nil, false
	}
	return d.value, true
}

// put records value as the latest version of id. A document larger than the
// whole cache is not kept.
func (c *docCache) put(id string, version int64, value []byte) {
	c.cache.Put(id, cachedDoc{version: version, value: value}, int64(len(id)+len(value)+cachedDocOverhead))
}

// drop forgets id (a version the cache does not hold went by).
func (c *docCache) drop(id string) { c.cache.Remove(id) }

// clear forgets every document.
func (c *docCache) clear() { c.cache.Clear() }

// bytes is what the cache holds.
func (c *docCache) bytes() int64 { return c.cache.Bytes() }
