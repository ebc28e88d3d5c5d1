package broadcaster

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/fedsync/fedsync/libs/access"
	"github.com/fedsync/fedsync/libs/authtoken"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Filter selects the changes a subscription receives.
type Filter struct {
	IDPrefix  string   `json:"id_prefix"`
	DataTypes []string `json:"data_types"`
	// Reader is the subscriber: only what it may read is delivered. Nil means an
	// internal subscription that reads everything.
	Reader *authtoken.Claims `json:"-"`
}

func (f Filter) match(st *fedsyncv1.State) bool {
	if !strings.HasPrefix(st.GetId(), f.IDPrefix) {
		return false
	}
	if f.Reader != nil && !access.CanRead(f.Reader, st.GetId()) {
		return false
	}
	return len(f.DataTypes) == 0 || slices.Contains(f.DataTypes, st.GetDataType())
}

// Event is what a subscription delivers: a change, or word that the cursor it
// resumed from is too old ("snapshot_required").
type Event struct {
	Type   string
	Change *fedsyncv1.Change
}

// ErrTooSlow ends a subscription whose subscriber does not keep up.
var ErrTooSlow = errors.New("the subscriber fell behind; resume from the last cursor it received")

// Subscription is one live subscription. Changes to one id arrive in version
// order, each once, because they arrive in commit-log order and are deduplicated
// by their log position.
type Subscription struct {
	ID         string
	Filter     Filter
	Subscriber string

	ch   chan Event
	done chan struct{}

	mu         sync.Mutex
	catchingUp bool
	pending    []*fedsyncv1.Change
	lastSeq    uint64
	closed     bool
	err        error
}

func newSubscription(id string, f Filter, subscriber string, buffer int, catchingUp bool, lastSeq uint64) *Subscription {
	return &Subscription{ID: id, Filter: f, Subscriber: subscriber, ch: make(chan Event, buffer), done: make(chan struct{}),
		catchingUp: catchingUp, lastSeq: lastSeq}
}

// Events delivers the subscription's events.
func (s *Subscription) Events() <-chan Event { return s.ch }

// Done is closed when the subscription ended; Err says why.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err is why the subscription ended, nil while it runs or after Unsubscribe.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Cursor is the log position of the last change delivered into Events.
func (s *Subscription) Cursor() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSeq
}

// offer hands a live change to the subscription without ever blocking the hub.
func (s *Subscription) offer(c *fedsyncv1.Change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.catchingUp {
		s.pending = append(s.pending, c)
		if len(s.pending) > 4*cap(s.ch) {
			s.endLocked(ErrTooSlow)
		}
		return
	}
	if c.GetSeq() <= s.lastSeq {
		return
	}
	select {
	case s.ch <- Event{Type: "change", Change: c}:
		s.lastSeq = c.GetSeq()
	default:
		s.endLocked(ErrTooSlow)
	}
}

// deliver sends an event during catch-up, waiting for room.
func (s *Subscription) deliver(ctx context.Context, ev Event) bool {
	if ev.Change != nil {
		s.mu.Lock()
		skip := ev.Change.GetSeq() <= s.lastSeq
		s.mu.Unlock()
		if skip {
			return true
		}
	}
	select {
	case s.ch <- ev:
		if ev.Change != nil {
			s.mu.Lock()
			s.lastSeq = max(s.lastSeq, ev.Change.GetSeq())
			s.mu.Unlock()
		}
		return true
	case <-s.done:
	case <-ctx.Done():
	}
	return false
}

// goLive delivers the changes that arrived during catch-up and switches to live
// delivery.
func (s *Subscription) goLive(ctx context.Context) {
	for {
		s.mu.Lock()
		batch := s.pending
		s.pending = nil
		if len(batch) == 0 {
			s.catchingUp = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		for _, c := range batch {
			if s.Filter.match(c.GetState()) && !s.deliver(ctx, Event{Type: "change", Change: c}) {
				return
			}
		}
	}
}

func (s *Subscription) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endLocked(err)
}

func (s *Subscription) endLocked(err error) {
	if s.closed {
		return
	}
	s.closed, s.err = true, err
	close(s.done)
}
