package fedsync

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"time"
)

// Regional hub failover (seed 4.1, scenario 1). RunHeartbeats sends the
// agent's heartbeat to the edge in use every interval; after `threshold`
// consecutive failures of its hub (no connection, 502, 503, 504), the client
// switches to the first other edge whose hub answers a heartbeat. From then
// on every call goes there: subscriptions reconnect at once and resume from
// their cursor (the cursor is a position in the federation-wide log, valid at
// every hub), and a Push that was in flight is sent again under its message id,
// so it applies once. After the switch the client checks the new hub against
// the versions it had seen and reports the result.

// FailoverReport is what one failover did.
type FailoverReport struct {
	From, To string
	// At is when the switch happened; Detection how long the hub had been
	// failing (first failed heartbeat to the switch).
	At        time.Time
	Detection time.Duration
	// Checked documents were read at the new hub; Behind lists those whose
	// version there is older than one this client had already seen (the new
	// hub has not caught up yet: reads may be stale for a moment).
	Checked int
	Behind  []string
}

type failoverState struct {
	mu       sync.Mutex
	switched chan struct{} // closed and replaced at every switch
	seen     map[string]int64
	reports  []func(FailoverReport)
}

func (f *failoverState) init() {
	f.switched = make(chan struct{})
	f.seen = map[string]int64{}
}

// OnFailover registers fn to receive every failover's report.
func (c *Client) OnFailover(fn func(FailoverReport)) {
	c.fo.mu.Lock()
	c.fo.reports = append(c.fo.reports, fn)
	c.fo.mu.Unlock()
}

// switchedCh is closed at the next failover.
func (c *Client) switchedCh() <-chan struct{} {
	c.fo.mu.Lock()
	defer c.fo.mu.Unlock()
	return c.fo.switched
}

// saw records a version of id this client has observed (bounded: the
// consistency check reads at most the newest 1,000).
func (c *Client) saw(id string, version int64) {
	c.fo.mu.Lock()
	if version > c.fo.seen[id] {
		c.fo.seen[id] = version
	}
	if len(c.fo.seen) > 10_000 {
		for k := range c.fo.seen { // drop an arbitrary tenth
			delete(c.fo.seen, k)
			if len(c.fo.seen) <= 9_000 {
				break
			}
		}
	}
	c.fo.mu.Unlock()
}

// unreachable reports whether err means the hub behind the edge did not
// answer (as opposed to an answer of the API).
func unreachable(err error) bool {
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) {
		return true
	}
	var e *Error
	return errors.As(err, &e) && (e.Status == http.StatusBadGateway || e.Status == http.StatusGatewayTimeout)
}

// hubDown reports whether a heartbeat's err means the hub cannot serve: not
// reached, or unavailable (an edge answers 503 for a dead backend). A
// heartbeat refused for its rate (429) still had an answer.
func hubDown(err error) bool {
	return err != nil && (unreachable(err) || CodeOf(err) == CodeUnavailable)
}

// Heartbeat sends one heartbeat to the edge in use.
func (c *Client) Heartbeat(ctx context.Context) error {
	return c.call(ctx, "POST", "/api/v1/sync/heartbeat", nil, nil)
}

// RunHeartbeats sends heartbeats every interval until ctx ends and fails over
// after threshold consecutive failures to reach the hub (seed 4.1: 3).
func (c *Client) RunHeartbeats(ctx context.Context, interval time.Duration, threshold int) {
	if threshold < 1 {
		threshold = 3
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	failures := 0
	var firstFailure time.Time
	for {
		hctx, cancel := context.WithTimeout(ctx, max(interval, time.Second))
		err := c.Heartbeat(hctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case !hubDown(err):
			failures = 0
		default:
			if failures == 0 {
				firstFailure = time.Now()
			}
			failures++
			if failures >= threshold && c.failover(ctx, firstFailure) {
				failures = 0
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// failover switches to the first other edge whose hub answers a heartbeat.
func (c *Client) failover(ctx context.Context, since time.Time) bool {
	from := c.cur.Load()
	for i := 1; i < len(c.edges); i++ {
		cand := (int(from) + i) % len(c.edges)
		c.cur.Store(int32(cand))
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.Heartbeat(hctx)
		cancel()
		if !hubDown(err) {
			rep := FailoverReport{From: c.edges[from], To: c.edges[cand], At: time.Now(), Detection: time.Since(since)}
			c.fo.mu.Lock()
			close(c.fo.switched)
			c.fo.switched = make(chan struct{})
			c.fo.mu.Unlock()
			go c.checkAfterFailover(ctx, rep)
			return true
		}
	}
	c.cur.Store(from)
	return false
}

// checkAfterFailover reads the newest documents seen at the new hub and
// reports those it holds older versions of.
func (c *Client) checkAfterFailover(ctx context.Context, rep FailoverReport) {
	c.fo.mu.Lock()
	type seenDoc struct {
		id string
		v  int64
	}
	docs := make([]seenDoc, 0, len(c.fo.seen))
	for id, v := range c.fo.seen {
		docs = append(docs, seenDoc{id, v})
	}
	fns := append([]func(FailoverReport){}, c.fo.reports...)
	c.fo.mu.Unlock()
	sort.Slice(docs, func(i, j int) bool { return docs[i].id < docs[j].id })
	if len(docs) > 1000 {
		docs = docs[:1000]
	}
	for _, d := range docs {
		st, err := c.Get(ctx, d.id)
		if err != nil {
			if CodeOf(err) != CodeNotFound {
				continue
			}
			st = &State{}
		}
		rep.Checked++
		if st.Version < d.v {
			rep.Behind = append(rep.Behind, d.id)
		}
	}
	for _, fn := range fns {
		fn(rep)
	}
}
