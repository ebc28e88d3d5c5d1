// Package hlc is a hybrid logical clock: timestamps that follow wall time but never
// go backwards and order causally related events even across machines whose clocks
// differ a little. A stamp is nanoseconds since the Unix epoch whose low bits count
// events within one nanosecond tick of wall time.
package hlc

import (
	"sync"
	"time"
)

// Clock issues stamps. The zero value is not usable; call New.
type Clock struct {
	mu   sync.Mutex
	now  func() time.Time
	last int64
}

// New returns a clock reading wall time from now (time.Now when nil).
func New(now func() time.Time) *Clock {
	if now == nil {
		now = time.Now
	}
	return &Clock{now: now}
}

// Now returns a stamp greater than every stamp this clock issued or observed.
func (c *Clock) Now() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	wall := c.now().UnixNano()
	if wall > c.last {
		c.last = wall
	} else {
		c.last++
	}
	return c.last
}

// Observe moves the clock past a stamp seen from elsewhere, so the next stamp
// orders after it.
func (c *Clock) Observe(stamp int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if stamp > c.last {
		c.last = stamp
	}
}
