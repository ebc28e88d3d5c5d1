package broadcaster

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/fedsync/fedsync/libs/access"
	"github.com/fedsync/fedsync/libs/apierr"
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

// The values of the subscribe option "events".
const (
	// EventsFull (the default): every change carries the whole document.
	EventsFull = "full"
	// EventsDelta: every change carries the fields it set and removed.
	EventsDelta = "delta"
)

// parseEvents checks a subscribe request's events option; it reports whether
// the subscription receives deltas.
func parseEvents(events string) (delta bool, err error) {
	switch events {
	case "", EventsFull:
		return false, nil
	case EventsDelta:
		return true, nil
	}
	return false, apierr.New(apierr.InvalidArgument, "Field events must be %q or %q, not %q.", EventsFull, EventsDelta, events)
}

// Event is what a subscription delivers: a change, or word that the cursor it
// resumed from is too old ("snapshot_required").
type Event struct {
	Type   string
	Change *fedsyncv1.Change
	// frame is the change as delivered, shared by every subscription it went
	// to and encoded once per form and wire format; nil for other events.
	frame *frame
}

// size is what ev counts against a subscriber's byte bound.
func (ev Event) size(delta bool) int64 {
	if ev.frame == nil {
		return noticeSize
	}
	return ev.frame.size(delta)
}

// noticeSize is what an event other than a change counts as.
const noticeSize = 64

// Limits bound what may wait for one subscriber. A live subscriber that would
// go beyond either is dropped as too slow (it resumes from its cursor); one
// catching up from the log waits instead.
type Limits struct {
	// Changes is the most events queued.
	Changes int
	// Bytes is the most bytes queued, counted as the size of the changes in the
	// subscriber's form (whole documents, or set and removed). A single change
	// larger than Bytes is still taken when nothing else waits.
	Bytes int64
}

// ErrTooSlow ends a subscription whose subscriber does not keep up.
var ErrTooSlow = errors.New("the subscriber fell behind; resume from the last cursor it received")

// Subscription is one live subscription. Changes to one id arrive in version
// order, each once, because they arrive in commit-log order and are deduplicated
// by their log position.
//
// Its queue is allocated lazily and freed when drained, so an idle subscription
// holds no buffer; it is bounded by Limits.
type Subscription struct {
	ID         string
	Filter     Filter
	Subscriber string
	// Delta is set for events "delta": changes are delivered as the fields
	// they set and removed instead of the whole document.
	Delta bool
	// Start is the log position the subscription starts after: its resume
	// cursor until a change has been delivered.
	Start uint64

	limits Limits
	// ready is signalled (without blocking) when an event is queued or the
	// subscription ends, unless a notifier is told instead.
	ready    chan struct{}
	notifier *Notifier
	done     chan struct{}
	// stop detaches the end-with-ctx hook.
	stop func() bool

	mu     sync.Mutex
	queue  []Event
	first  int // index of the oldest queued event in queue
	queued int64
	// space, when not nil, is closed as soon as events are taken: a catch-up
	// waiting for room sleeps on it.
	space      chan struct{}
	catchingUp bool
	pending    []*frame
	pendingB   int64
	lastSeq    uint64
	closed     bool
	err        error
	// listed is set while the subscription is on its notifier's ready list
	// (or being served from it).
	listed bool

	// indexPos is its place in the hub's index (under the hub's lock).
	indexPos int
}

func newSubscription(id string, f Filter, subscriber string, delta bool, limits Limits, n *Notifier, catchingUp bool, lastSeq uint64) *Subscription {
	s := &Subscription{ID: id, Filter: f, Subscriber: subscriber, Delta: delta, limits: limits, notifier: n,
		done: make(chan struct{}), catchingUp: catchingUp, lastSeq: lastSeq, Start: lastSeq}
	if n == nil {
		s.ready = make(chan struct{}, 1)
	}
	return s
}

// Notifier serves many subscriptions of one consumer (a WebSocket connection)
// without a goroutine or a scan of all of them per event: a subscription that
// has events queued, or ended, puts itself on the ready list once and signals
// C; the consumer takes the list and Takes from each subscription on it.
type Notifier struct {
	// C is signalled (it has a buffer of 1) when the ready list is not empty.
	C chan struct{}

	mu    sync.Mutex
	ready []*Subscription
}

// NewNotifier returns a notifier with an empty ready list.
func NewNotifier() *Notifier { return &Notifier{C: make(chan struct{}, 1)} }

// Ready appends the subscriptions on the ready list to buf and empties it. A
// subscription stays off the list until Take empties its queue; one served
// only in part must be handed back with Requeue.
func (n *Notifier) Ready(buf []*Subscription) []*Subscription {
	n.mu.Lock()
	defer n.mu.Unlock()
	buf = append(buf, n.ready...)
	clear(n.ready)
	n.ready = n.ready[:0]
	if cap(n.ready) > 1024 {
		n.ready = nil
	}
	return buf
}

// Requeue puts s back on the ready list: its queue was not emptied, or it
// was on the list before its consumer was ready to serve it.
func (n *Notifier) Requeue(s *Subscription) {
	n.mu.Lock()
	n.ready = append(n.ready, s)
	n.mu.Unlock()
	select {
	case n.C <- struct{}{}:
	default:
	}
}

// Ready is signalled when events are queued or the subscription ended; Take
// them then. Nil for a subscription served through a Notifier.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Done is closed when the subscription ended; Err says why. Events queued
// before it ended can still be taken.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err is why the subscription ended, nil while it runs or after Unsubscribe.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Cursor is the log position of the last change queued for the subscriber.
func (s *Subscription) Cursor() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSeq
}

// Take appends up to max queued events to buf, oldest first.
func (s *Subscription) Take(buf []Event, max int) []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(max, len(s.queue)-s.first)
	for range n {
		ev := s.queue[s.first]
		s.queue[s.first] = Event{}
		s.first++
		s.queued -= ev.size(s.Delta)
		buf = append(buf, ev)
	}
	switch {
	case s.first == len(s.queue):
		s.listed = false
		// Drained: an idle subscriber keeps no buffer beyond a small one.
		if cap(s.queue) > 64 {
			s.queue = nil
		} else {
			s.queue = s.queue[:0]
		}
		s.first = 0
	case s.first > 64 && s.first > len(s.queue)/2:
		s.queue = s.queue[:copy(s.queue, s.queue[s.first:])]
		s.first = 0
	}
	if n > 0 && s.space != nil {
		close(s.space)
		s.space = nil
	}
	return buf
}

// Next waits for the next event. After the subscription ended it still returns
// the events queued before; then ok is false (and Err says why), as it is when
// ctx ends. Not for a subscription served through a Notifier.
func (s *Subscription) Next(ctx context.Context) (ev Event, ok bool) {
	var one [1]Event
	for {
		if evs := s.Take(one[:0], 1); len(evs) == 1 {
			return evs[0], true
		}
		select {
		case <-s.done:
			if evs := s.Take(one[:0], 1); len(evs) == 1 {
				return evs[0], true
			}
			return Event{}, false
		case <-ctx.Done():
			return Event{}, false
		case <-s.ready:
		}
	}
}

// roomLocked reports whether an event of size bytes fits in the queue.
func (s *Subscription) roomLocked(size int64) bool {
	n := len(s.queue) - s.first
	return n == 0 || (n < s.limits.Changes && s.queued+size <= s.limits.Bytes)
}

func (s *Subscription) pushLocked(ev Event, size int64) {
	s.queue = append(s.queue, ev)
	s.queued += size
	s.signal()
}

func (s *Subscription) signal() {
	if s.notifier != nil {
		if !s.listed {
			s.listed = true
			s.notifier.Requeue(s)
		}
		return
	}
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// offer hands a live change to the subscription without ever blocking the hub.
// It reports false when the subscription has ended.
func (s *Subscription) offer(f *frame) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if (!s.Delta || f.changeErr) && f.valueErr != nil {
		// The whole document could not be had: end, so that the subscriber
		// resumes from its cursor (the replay reads whole documents).
		s.endLocked(f.valueErr)
		return false
	}
	size := f.size(s.Delta)
	if s.catchingUp {
		s.pending = append(s.pending, f)
		s.pendingB += size
		if len(s.pending) > 4*s.limits.Changes || s.pendingB > 4*s.limits.Bytes {
			s.endLocked(ErrTooSlow)
			return false
		}
		return true
	}
	seq := f.change.GetSeq()
	if seq <= s.lastSeq {
		return true
	}
	if !s.roomLocked(size) {
		s.endLocked(ErrTooSlow)
		return false
	}
	s.pushLocked(Event{Type: "change", Change: f.change, frame: f}, size)
	s.lastSeq = seq
	return true
}

// deliver queues an event during catch-up, waiting for room.
func (s *Subscription) deliver(ctx context.Context, ev Event) bool {
	size := ev.size(s.Delta)
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return false
		}
		if ev.Change != nil && ev.Change.GetSeq() <= s.lastSeq {
			s.mu.Unlock()
			return true
		}
		if s.roomLocked(size) {
			s.pushLocked(ev, size)
			if ev.Change != nil {
				s.lastSeq = ev.Change.GetSeq()
			}
			s.mu.Unlock()
			return true
		}
		if s.space == nil {
			s.space = make(chan struct{})
		}
		space := s.space
		s.mu.Unlock()
		select {
		case <-space:
		case <-s.done:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// goLive delivers the changes that arrived during catch-up and switches to live
// delivery.
func (s *Subscription) goLive(ctx context.Context) {
	for {
		s.mu.Lock()
		batch := s.pending
		s.pending, s.pendingB = nil, 0
		if len(batch) == 0 {
			s.catchingUp = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		for _, f := range batch {
			if !s.deliver(ctx, Event{Type: "change", Change: f.change, frame: f}) {
				return
			}
		}
	}
}

// setLastSeq moves the cursor forward to at least seq.
func (s *Subscription) setLastSeq(seq uint64) {
	s.mu.Lock()
	s.lastSeq = max(s.lastSeq, seq)
	s.mu.Unlock()
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
	s.pending = nil
	close(s.done)
	if s.space != nil {
		close(s.space)
		s.space = nil
	}
	s.signal()
}
