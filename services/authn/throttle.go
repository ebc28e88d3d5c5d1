package authn

import (
	"sync"
	"time"
)

// throttle slows down guessing at the token endpoint, before any bcrypt work
// is spent on the guess:
//
//   - per source address, after FreeAddr consecutive failures each further
//     attempt must wait a delay that doubles from Base up to Max;
//   - per client id, the same after FreeID consecutive failures from any
//     address, except for an address that authenticated as that client
//     before (its owner keeps working while someone else guesses);
//   - a success resets the address's and the id's count;
//   - besides, each address may make Rate attempts per second (burst Burst),
//     failed or not: every attempt that gets through costs a bcrypt
//     comparison.
//
// An unknown client id is counted exactly as a known one, so throttling tells
// an attacker nothing about which ids exist.
type throttle struct {
	FreeAddr, FreeID int
	Base, Max        time.Duration
	Rate, Burst      float64

	mu      sync.Mutex
	addrs   map[string]*strikes
	ids     map[string]*strikes
	trusted map[string]trustedAddr // client id -> last address it succeeded from
}

type strikes struct {
	failures int
	until    time.Time // no attempt before this
	last     time.Time
	tokens   float64 // the address's rate bucket
	filled   time.Time
}

type trustedAddr struct {
	addr string
	at   time.Time
}

// trustFor is how long a successful address stays exempt from its client
// id's lock.
const trustFor = 24 * time.Hour

// maxEntries bounds each map; past it, entries idle for longer than Max are
// dropped.
const maxEntries = 100_000

func newThrottle() *throttle {
	return &throttle{FreeAddr: 10, FreeID: 5, Base: time.Second, Max: 5 * time.Minute, Rate: 10, Burst: 100,
		addrs: map[string]*strikes{}, ids: map[string]*strikes{}, trusted: map[string]trustedAddr{}}
}

// wait returns how long (addr, id) must wait before an attempt is examined;
// 0 lets it through.
func (t *throttle) wait(addr, id string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	var d time.Duration
	a := t.entry(t.addrs, addr, now)
	if now.Before(a.until) {
		d = a.until.Sub(now)
	}
	if s := t.ids[id]; s != nil && now.Before(s.until) && !t.isTrusted(id, addr, now) {
		d = max(d, s.until.Sub(now))
	}
	if d == 0 && t.Rate > 0 {
		a.tokens = min(t.Burst, a.tokens+now.Sub(a.filled).Seconds()*t.Rate)
		a.filled = now
		if a.tokens < 1 {
			return time.Duration((1 - a.tokens) / t.Rate * float64(time.Second))
		}
		a.tokens--
	}
	return d
}

// entry returns key's strikes, created with a full rate bucket.
func (t *throttle) entry(m map[string]*strikes, key string, now time.Time) *strikes {
	s := m[key]
	if s == nil {
		if len(m) >= maxEntries {
			for k, old := range m {
				if now.Sub(old.last) > t.Max {
					delete(m, k)
				}
			}
		}
		s = &strikes{tokens: t.Burst, filled: now, last: now}
		m[key] = s
	}
	return s
}

func (t *throttle) isTrusted(id, addr string, now time.Time) bool {
	tr, ok := t.trusted[id]
	return ok && tr.addr == addr && now.Sub(tr.at) < trustFor
}

// failed records a failed attempt.
func (t *throttle) failed(addr, id string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.strike(t.addrs, addr, t.FreeAddr, now)
	if !t.isTrusted(id, addr, now) {
		t.strike(t.ids, id, t.FreeID, now)
	}
}

func (t *throttle) strike(m map[string]*strikes, key string, free int, now time.Time) {
	s := t.entry(m, key, now)
	s.failures++
	s.last = now
	if over := s.failures - free; over > 0 {
		d := t.Base << min(over-1, 20)
		if d > t.Max || d <= 0 {
			d = t.Max
		}
		s.until = now.Add(d)
	}
}

// succeeded records a success: the address and id start over, and the
// address is trusted for the id.
func (t *throttle) succeeded(addr, id string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a := t.addrs[addr]; a != nil {
		a.failures, a.until = 0, time.Time{} // its rate bucket stays
	}
	delete(t.ids, id)
	if len(t.trusted) >= maxEntries {
		for k, tr := range t.trusted {
			if now.Sub(tr.at) > trustFor {
				delete(t.trusted, k)
			}
		}
	}
	t.trusted[id] = trustedAddr{addr: addr, at: now}
}
