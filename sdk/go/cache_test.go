package fedsync

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestCacheEvictsAtTheByteBoundExpiresAndKeepsTheNewestVersion(t *testing.T) {
	l := newL1Cache(CacheOptions{MaxBytes: 10 << 10, TTL: time.Minute})
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	big := strings.Repeat("x", 1000)
	for i := range 20 { // ~1.2 KB each: about 8 fit in 10 KiB
		l.put(State{ID: fmt.Sprintf("d%02d", i), Version: 1, Value: map[string]any{"s": big}})
	}
	s := l.stats
	if l.bytes > 10<<10 || l.lru.Len() != 8 || s.Evictions != 12 {
		t.Fatalf("bytes %d, entries %d, evictions %d; want at most 10 KiB, 8, 12", l.bytes, l.lru.Len(), s.Evictions)
	}
	if _, ok := l.get("d00"); ok {
		t.Fatal("the least recently used entry survived")
	}
	if _, ok := l.get("d19"); !ok {
		t.Fatal("the newest entry was evicted")
	}
	// An older version never replaces a newer one.
	l.put(State{ID: "d19", Version: 5, Value: map[string]any{"v": 5}})
	l.put(State{ID: "d19", Version: 3, Value: map[string]any{"v": 3}})
	if st, _ := l.get("d19"); st.Version != 5 {
		t.Fatalf("version %d cached; want 5", st.Version)
	}
	// Past the TTL an entry no longer answers.
	now = now.Add(61 * time.Second)
	if _, ok := l.get("d19"); ok || l.stats.Expired != 1 {
		t.Fatalf("an entry past its TTL answered (expired %d)", l.stats.Expired)
	}
	// A document larger than the whole cache is not kept.
	l.put(State{ID: "huge", Version: 1, Value: map[string]any{"s": strings.Repeat("y", 20<<10)}})
	if _, ok := l.get("huge"); ok {
		t.Fatal("a document larger than the cache was kept")
	}
}
