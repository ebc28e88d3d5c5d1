package validation

import (
	"sync"
	"time"
)

// beatLimiter admits one heartbeat per agent per interval: the health monitor
// needs one every few seconds (an agent is unhealthy after 30 s of silence),
// and a flood of them would only load the heartbeat topic.
type beatLimiter struct {
	every time.Duration

	mu   sync.Mutex
	last map[string]time.Time
}

// maxTracked bounds the agents remembered; past it, entries older than the
// interval are dropped (they would be admitted anyway).
const maxTracked = 100_000

// allow records a heartbeat of agent at now, or returns how long the agent
// must wait before the next one is admitted.
func (b *beatLimiter) allow(agent string, now time.Time) time.Duration {
	if b.every <= 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if last, ok := b.last[agent]; ok && now.Sub(last) < b.every {
		return b.every - now.Sub(last)
	}
	if b.last == nil {
		b.last = map[string]time.Time{}
	}
	if len(b.last) >= maxTracked {
		for a, t := range b.last {
			if now.Sub(t) >= b.every {
				delete(b.last, a)
			}
		}
	}
	b.last[agent] = now
	return 0
}
