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
