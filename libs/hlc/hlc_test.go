package hlc

import (
	"testing"
	"time"
)

func TestNowIsMonotonicWhenWallClockStepsBack(t *testing.T) {
	wall := time.Unix(100, 0)
	c := New(func() time.Time { return wall })
	a := c.Now()
	wall = wall.Add(-time.Second)
	b := c.Now()
	if b <= a {
		t.Fatalf("stamp went backwards: %d then %d", a, b)
	}
}

func TestObserveOrdersAfterRemoteStamp(t *testing.T) {
	c := New(func() time.Time { return time.Unix(100, 0) })
	remote := time.Unix(200, 0).UnixNano()
	c.Observe(remote)
	if got := c.Now(); got <= remote {
		t.Fatalf("stamp %d not after observed %d", got, remote)
	}
}

func TestNowUniqueUnderConcurrency(t *testing.T) {
	c := New(nil)
	const n = 1000
	ch := make(chan int64, n)
	for i := 0; i < n; i++ {
		go func() { ch <- c.Now() }()
	}
	seen := map[int64]bool{}
	for i := 0; i < n; i++ {
		s := <-ch
		if seen[s] {
			t.Fatalf("duplicate stamp %d", s)
		}
		seen[s] = true
	}
}
