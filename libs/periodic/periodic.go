// Package periodic runs a function now and then at a fixed interval until its
// context ends: the one loop behind every refresh, poll and sweep in fedsync.
package periodic

import (
	"context"
	"time"
)

// Run calls fn at once and then every interval until ctx ends. It always
// returns nil, so it fits as a background worker.
func Run(ctx context.Context, interval time.Duration, fn func(ctx context.Context)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		fn(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Backoff is a retry delay that starts at Min and doubles after every wait, up
// to Max: the one retry loop behind broker, peer and webhook retries.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Delay is how long the next Wait sleeps.
func (b *Backoff) Delay() time.Duration {
	if b.cur == 0 {
		b.cur = b.Min
	}
	return b.cur
}

// Wait sleeps the current delay, then doubles it (up to Max). It reports false
// when ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool {
	t := time.NewTimer(b.Delay())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	}
	b.cur = min(2*b.cur, b.Max)
	return true
}

// Reset starts the delays again from Min, after a success.
func (b *Backoff) Reset() { b.cur = b.Min }
