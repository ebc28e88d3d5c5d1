package bytelru

import "testing"

func TestEvictsLeastRecentlyUsedByBytes(t *testing.T) {
	c := New[string](30)
	c.Put("a", "A", 10)
	c.Put("b", "B", 10)
	c.Put("c", "C", 10)
	c.Get("a") // b is now the least recently used
	c.Put("d", "D", 10)
	if _, ok := c.Get("b"); ok {
		t.Fatal("b survived although it was least recently used")
	}
	for _, k := range []string{"a", "c", "d"} {
		if !c.Has(k) {
			t.Fatalf("%s was evicted", k)
		}
	}
	if c.Bytes() != 30 {
		t.Fatalf("size %d", c.Bytes())
	}
	c.Put("big", "X", 31)
	if c.Has("big") || c.Bytes() != 30 {
		t.Fatal("a value larger than the cache was kept")
	}
	c.Put("a", "A2", 5)
	if v, _ := c.Get("a"); v != "A2" || c.Bytes() != 25 {
		t.Fatalf("replace: %q, %d bytes", v, c.Bytes())
	}
	c.Remove("c")
	c.Clear()
	if c.Has("a") || c.Bytes() != 0 {
		t.Fatal("Clear kept entries")
	}
	off := New[int](0)
	off.Put("x", 1, 1)
	if off.Has("x") {
		t.Fatal("a cache of 0 bytes kept a value")
	}
}
