package fedsync

import (
	"container/list"
	"encoding/json"
	"sync"
	"time"
)

// The seed's L1 cache (7.1): in memory, least recently used out first, each
// entry fresh for a TTL (60 s), bounded in bytes (100 MB). Get answers from it
// while an entry is fresh; subscriptions of the same client keep it current
// (a delivered change replaces the cached version before the event reaches
// the reader, so a Get after an event never returns an older version); a
// strong write drops the entry.

// CacheOptions configure the L1 cache.
type CacheOptions struct {
	// MaxBytes bounds the cache (default 100 MB); the estimate of an entry is
	// its JSON size plus its id and some bookkeeping.
	MaxBytes int64
	// TTL is how long an entry answers Get (default 60 s).
	TTL time.Duration
}

// CacheStats counts what the cache did.
type CacheStats struct {
	Hits, Misses, Evictions, Expired int64
	Entries                          int
	Bytes                            int64
}

// HitRatio is hits / (hits + misses).
func (s CacheStats) HitRatio() float64 {
	if s.Hits+s.Misses == 0 {
		return 0
	}
	return float64(s.Hits) / float64(s.Hits+s.Misses)
}

type cacheEntry struct {
	id    string
	state State
	size  int64
	at    time.Time
}

type l1Cache struct {
	opts  CacheOptions
	mu    sync.Mutex
	lru   *list.List // front: most recent
	byID  map[string]*list.Element
	bytes int64
	stats CacheStats
	now   func() time.Time
}

const cacheEntryOverhead = 160

func newL1Cache(o CacheOptions) *l1Cache {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 100 << 20
	}
	if o.TTL <= 0 {
		o.TTL = 60 * time.Second
	}
	return &l1Cache{opts: o, lru: list.New(), byID: map[string]*list.Element{}, now: time.Now}
}

// EnableCache turns the L1 cache on for Get.
func (c *Client) EnableCache(o CacheOptions) { c.cache = newL1Cache(o) }

// CacheStats reports the cache's counters (zero without a cache).
func (c *Client) CacheStats() CacheStats {
	if c.cache == nil {
		return CacheStats{}
	}
	c.cache.mu.Lock()
	defer c.cache.mu.Unlock()
	s := c.cache.stats
	s.Entries, s.Bytes = c.cache.lru.Len(), c.cache.bytes
	return s
}

func (l *l1Cache) get(id string) (*State, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	el, ok := l.byID[id]
	if !ok {
		l.stats.Misses++
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if l.now().Sub(e.at) > l.opts.TTL {
		l.removeLocked(el)
		l.stats.Expired++
		l.stats.Misses++
		return nil, false
	}
	l.lru.MoveToFront(el)
	l.stats.Hits++
	st := e.state
	return &st, true
}

// put keeps st unless a newer version is held.
func (l *l1Cache) put(st State) {
	b, err := json.Marshal(st.Value)
	if err != nil {
		return
	}
	size := int64(len(b)+len(st.ID)) + cacheEntryOverhead
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.byID[st.ID]; ok {
		if el.Value.(*cacheEntry).state.Version > st.Version {
			return
		}
		l.removeLocked(el)
	}
	if size > l.opts.MaxBytes {
		return
	}
	l.byID[st.ID] = l.lru.PushFront(&cacheEntry{id: st.ID, state: st, size: size, at: l.now()})
	l.bytes += size
	for l.bytes > l.opts.MaxBytes {
		l.removeLocked(l.lru.Back())
		l.stats.Evictions++
	}
}

func (l *l1Cache) drop(id string) {
	l.mu.Lock()
	if el, ok := l.byID[id]; ok {
		l.removeLocked(el)
	}
	l.mu.Unlock()
}

func (l *l1Cache) removeLocked(el *list.Element) {
	e := el.Value.(*cacheEntry)
	l.lru.Remove(el)
	delete(l.byID, e.id)
	l.bytes -= e.size
}
