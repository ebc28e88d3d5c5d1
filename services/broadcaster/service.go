// Package broadcaster is the regional hub's fan-out (seed 3.2 step 6, 2.2): it
// follows Kafka's fedsync.committed and delivers every committed change to the
// subscriptions that match it, over WebSocket (/stream), a gRPC server stream, or
// a webhook. A subscriber that reconnects with a cursor first catches up from
// statestore's commit log, then continues live, without gaps or duplicates.
package broadcaster

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/fedsync/fedsync/libs/apierr"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Service is the broadcaster's business logic. Streams do not fit go-kit's
// request/response endpoints, so transports use Subscribe directly.
type Service interface {
	// Subscribe starts a subscription; with a cursor it first replays the changes
	// after it. The subscription ends when ctx ends.
	Subscribe(ctx context.Context, req SubscribeRequest) (*Subscription, error)
	// Unsubscribe ends a live subscription.
	Unsubscribe(id string)
	// Publish fans a committed change out to the subscriptions.
	Publish(ctx context.Context, c *fedsyncv1.Change) error
	// Head is the log position of the newest change seen: the cursor of "now".
	Head() uint64
	// Sync reconciles the hub with statestore's commit log (start-up head, then
	// gaps); call it periodically.
	Sync(ctx context.Context) error
}

// SubscribeRequest asks for a subscription.
type SubscribeRequest struct {
	Filter     Filter
	FromCursor string
	Subscriber string
}

// CommitLog reads statestore's committed-change log.
type CommitLog interface {
	ReadLog(ctx context.Context, afterSeq uint64, limit int) (*fedsyncv1.ReadLogResponse, error)
}

type service struct {
	log    CommitLog
	buffer int

	// pubMu serializes fan-out, so changes go out in log order.
	pubMu sync.Mutex
	// synced is set once head is known from statestore; from then on the hub
	// fills any gap in what Kafka delivers from the commit log.
	synced bool

	mu   sync.RWMutex
	subs map[string]*Subscription
	head uint64
}

// NewService returns a broadcaster reading history from log.
func NewService(log CommitLog, buffer int) *service {
	return &service{log: log, buffer: buffer, subs: map[string]*Subscription{}}
}

// ParseCursor decodes a cursor given to clients.
func ParseCursor(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, apierr.New(apierr.InvalidArgument, "Field from_cursor is not a cursor this API returned.")
	}
	return v, nil
}

// FormatCursor encodes a log position for clients.
func FormatCursor(seq uint64) string { return strconv.FormatUint(seq, 10) }

func (s *service) Head() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.head
}

// raiseHead moves the head forward to seq.
func (s *service) raiseHead(seq uint64) {
	s.mu.Lock()
	s.head = max(s.head, seq)
	s.mu.Unlock()
}

func (s *service) Subscribe(ctx context.Context, req SubscribeRequest) (*Subscription, error) {
	var from uint64
	resume := req.FromCursor != ""
	if resume {
		var err error
		if from, err = ParseCursor(req.FromCursor); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	sub := newSubscription(ulid.Make().String(), req.Filter, req.Subscriber, s.buffer, resume, s.head)
	if resume {
		sub.lastSeq = from
	}
	s.subs[sub.ID] = sub
	s.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-sub.done:
		}
		s.remove(sub)
	}()
	if resume {
		go s.catchUp(ctx, sub, from)
	}
	return sub, nil
}

// catchUp replays the log after `from`, then hands over to live delivery.
func (s *service) catchUp(ctx context.Context, sub *Subscription, from uint64) {
	after := from
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		resp, err := s.log.ReadLog(ctx, after, 500)
		if apierr.As(err).Code == apierr.CursorExpired && err != nil {
			if !sub.deliver(ctx, Event{Type: "snapshot_required"}) {
				return
			}
			sub.mu.Lock()
			sub.lastSeq = max(sub.lastSeq, s.Head())
			sub.mu.Unlock()
			break
		}
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		for _, c := range resp.GetChanges() {
			if sub.Filter.match(c.GetState()) && !sub.deliver(ctx, Event{Type: "change", Change: c}) {
				return
			}
			after = c.GetSeq()
		}
		if len(resp.GetChanges()) == 0 || after >= resp.GetHeadSeq() {
			break
		}
	}
	sub.mu.Lock()
	sub.lastSeq = max(sub.lastSeq, after)
	sub.mu.Unlock()
	sub.goLive(ctx)
}

func (s *service) remove(sub *Subscription) {
	s.mu.Lock()
	delete(s.subs, sub.ID)
	s.mu.Unlock()
	sub.end(nil)
}

func (s *service) Unsubscribe(id string) {
	s.mu.RLock()
	sub := s.subs[id]
	s.mu.RUnlock()
	if sub != nil {
		s.remove(sub)
	}
}

func (s *service) Publish(ctx context.Context, c *fedsyncv1.Change) error {
	if c.GetState() == nil {
		return fmt.Errorf("change %d has no state", c.GetSeq())
	}
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if s.synced && c.GetSeq() > s.Head()+1 {
		// Kafka skipped changes (this consumer joined late, or the topic lost
		// records): take them from the commit log first, in order.
		if err := s.fillLocked(ctx, c.GetSeq()-1); err != nil {
			return err
		}
	}
	s.fanOut(c)
	return nil
}

// Sync sets the head from statestore's commit log at start-up and from then on
// fills gaps: the seed's periodic anti-entropy. Call it every so often.
func (s *service) Sync(ctx context.Context) error {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	resp, err := s.log.ReadLog(ctx, 1<<62, 1)
	if err != nil {
		return err
	}
	if !s.synced {
		s.raiseHead(resp.GetHeadSeq())
		s.synced = true
		return nil
	}
	if resp.GetHeadSeq() < s.Head() {
		// The commit log is behind what Kafka brought: statestore lost its data
		// (or was replaced), so its positions restarted. It is the system of
		// record: follow it.
		s.mu.Lock()
		s.head = resp.GetHeadSeq()
		s.mu.Unlock()
		return nil
	}
	return s.fillLocked(ctx, 1<<62)
}

// fillLocked publishes log changes after the head up to upTo.
func (s *service) fillLocked(ctx context.Context, upTo uint64) error {
	for {
		head := s.Head()
		if head >= upTo {
			return nil
		}
		resp, err := s.log.ReadLog(ctx, head, 500)
		if apierr.As(err).Code == apierr.CursorExpired && err != nil {
			// The gap is older than the retained log: nothing left to fill.
			latest, err := s.log.ReadLog(ctx, 1<<62, 1)
			if err != nil {
				return err
			}
			s.raiseHead(min(upTo, latest.GetHeadSeq()))
			return nil
		}
		if err != nil {
			return fmt.Errorf("fill changes after %d: %w", head, err)
		}
		if len(resp.GetChanges()) == 0 {
			return nil
		}
		for _, c := range resp.GetChanges() {
			if c.GetSeq() > upTo {
				return nil
			}
			s.fanOut(c)
		}
	}
}

// fanOut hands c to every matching subscription, once per log position.
func (s *service) fanOut(c *fedsyncv1.Change) {
	s.mu.Lock()
	if c.GetSeq() <= s.head {
		s.mu.Unlock()
		return // republished after a statestore restart: already fanned out
	}
	s.head = c.GetSeq()
	subs := make([]*Subscription, 0, len(s.subs))
	for _, sub := range s.subs {
		subs = append(subs, sub)
	}
	s.mu.Unlock()
	for _, sub := range subs {
		if sub.Filter.match(c.GetState()) {
			sub.offer(c)
		}
	}
}
