// Package groupsync makes the embedded Kafka-protocol broker (kfake) durable
// with group commit: many produce requests share one flush of the filesystem
// instead of paying their own fsyncs one after another.
//
// kfake runs without its SyncWrites option, so a produced batch is written to
// the page cache before the broker answers. Listen wraps the broker's listener:
// each connection notes the correlation ids of produce requests that expect an
// answer with acks=all and holds their responses until a sync that started after
// the response was ready has completed. At most one sync runs at a time; every
// response that became ready before it started is released by it, and responses
// that become ready while it runs wait for the next one. Responses leave a
// connection in the order the broker wrote them, so a held produce response also
// holds the responses behind it on that connection; other connections' traffic
// is not delayed.
package groupsync

import (
	"fmt"
	"log"
	"sync"
	"sync/atomic"
)

// Committer runs group commits: callers ask for a sync with Request and share
// one call of the sync function with everyone who asked before it started.
type Committer struct {
	sync func() error
	logf func(format string, args ...any)

	mu      sync.Mutex
	next    *Ticket // the round collecting requests; nil when nobody waits
	running bool    // a goroutine is running rounds

	syncs    atomic.Uint64
	failures atomic.Uint64
	requests atomic.Uint64
	released atomic.Uint64
}

// Ticket is one caller's claim on a sync round.
type Ticket struct {
	done chan struct{}
	err  error
}

// Done is closed when the round's sync has returned.
func (t *Ticket) Done() <-chan struct{} { return t.done }

// Err is the round's sync error; valid once Done is closed.
func (t *Ticket) Err() error {
	<-t.done
	return t.err
}

// NewCommitter returns a Committer around sync (for example FS.Sync). Failed
// syncs are reported through logf; nil uses the standard logger.
func NewCommitter(sync func() error, logf func(format string, args ...any)) *Committer {
	if logf == nil {
		logf = log.Printf
	}
	return &Committer{sync: sync, logf: logf}
}

// Request asks for a sync that starts after this call and returns the ticket
// that is done when that sync has returned. If a sync is running, the ticket
// belongs to the next one.
func (c *Committer) Request() *Ticket {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests.Add(1) // under the lock: counted requests have joined a round
	if c.next == nil {
		c.next = &Ticket{done: make(chan struct{})}
	}
	t := c.next
	if !c.running {
		c.running = true
		go c.run()
	}
	return t
}

// Wait requests a sync and waits for it.
func (c *Committer) Wait() error { return c.Request().Err() }

// run performs rounds until no request is waiting. Taking c.next under the lock
// closes the round before its sync starts, so every ticket of a round was
// requested before the sync that completes it began.
func (c *Committer) run() {
	for {
		c.mu.Lock()
		t := c.next
		c.next = nil
		if t == nil {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		t.err = c.sync()
		if t.err != nil {
			c.failures.Add(1)
			c.logf("groupsync: sync failed, failing the waiting produce responses' connections: %v", t.err)
		} else {
			c.syncs.Add(1)
		}
		close(t.done)
	}
}

// Stats counts a Committer's work.
type Stats struct {
	Syncs    uint64 // syncs that succeeded
	Failures uint64 // syncs that failed
	Requests uint64 // tickets handed out
	Released uint64 // produce responses released after a successful sync (Listen)
}

func (s Stats) String() string {
	if s.Failures > 0 {
		return fmt.Sprintf("%d produce responses shared %d syncs (%d syncs failed)", s.Released, s.Syncs, s.Failures)
	}
	return fmt.Sprintf("%d produce responses shared %d syncs", s.Released, s.Syncs)
}

// Stats returns the counters so far.
func (c *Committer) Stats() Stats {
	return Stats{Syncs: c.syncs.Load(), Failures: c.failures.Load(), Requests: c.requests.Load(), Released: c.released.Load()}
}
