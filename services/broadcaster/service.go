// Package broadcaster is the regional hub's fan-out (seed 3.2 step 6, 2.2): it
// follows Kafka's fedsync.committed and delivers every committed change to the
// subscriptions that match it, over WebSocket (/stream), a gRPC server stream, or
// a webhook. A subscriber that reconnects with a cursor first catches up from
// statestore's commit log, then continues live, without gaps or duplicates.
package broadcaster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/periodic"
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
	// PublishBatch fans committed changes out in the order given (log order).
	PublishBatch(ctx context.Context, cs []*fedsyncv1.Change) error
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
	// Events is "full" (or empty: the whole document with every change) or
	// "delta" (the fields each change set and removed).
	Events string
	// Notify, when not nil, serves the subscription through a notifier that
	// one connection's subscriptions share, instead of its own Ready channel.
	Notify *Notifier
}

// CommitLog reads statestore's committed-change log.
type CommitLog interface {
	ReadLog(ctx context.Context, afterSeq uint64, limit int) (*fedsyncv1.ReadLogResponse, error)
}

// Options tune the hub.
type Options struct {
	// Limits bound what may wait for one subscriber.
	Limits Limits
	// DocCacheBytes bounds the cache of latest documents that rebuilds
	// documents left out of large changes for full subscriptions.
	DocCacheBytes int64
	// ValueReadTimeout bounds a read of a left-out document from the log.
	ValueReadTimeout time.Duration
	// MaxPerClient bounds the open subscriptions of one client, over all its
	// sockets, streams and webhooks (0: no bound).
	MaxPerClient int
	// NoView turns off the view of the committed state that consistency
	// verification compares with statestore (view.go).
	NoView bool
}

// DefaultOptions are the hub's defaults (the flags' defaults).
func DefaultOptions() Options {
	return Options{Limits: Limits{Changes: 4096, Bytes: 64 << 20}, DocCacheBytes: 64 << 20, ValueReadTimeout: 5 * time.Second}
}

type service struct {
	log  CommitLog
	opts Options
	docs *docCache

	// pubMu serializes fan-out, so changes go out in log order.
	pubMu sync.Mutex
	// synced is set once head is known from statestore; from then on the hub
	// fills any gap in what Kafka delivers from the commit log.
	synced bool
	// prevLogHead is the log's head at the previous Sync: what Kafka has had
	// an interval to deliver.
	prevLogHead uint64
	// matched is fan-out's reused slice (under pubMu).
	matched []*Subscription

	mu    sync.RWMutex
	subs  map[string]*Subscription
	index *subIndex
	head  uint64
	// perClient counts open subscriptions by subscriber (under mu).
	perClient map[string]int

	// view is the hub's view of the committed state (under pubMu); nil
	// with Options.NoView.
	view *regionView

	// valueRebuilds counts documents rebuilt from the cache.
	valueRebuilds atomic.Int64
}

// NewService returns a broadcaster reading history from log.
func NewService(log CommitLog, o Options) *service {
	d := DefaultOptions()
	if o.Limits.Changes <= 0 {
		o.Limits.Changes = d.Limits.Changes
	}
	if o.Limits.Bytes <= 0 {
		o.Limits.Bytes = d.Limits.Bytes
	}
	if o.DocCacheBytes <= 0 {
		o.DocCacheBytes = d.DocCacheBytes
	}
	if o.ValueReadTimeout <= 0 {
		o.ValueReadTimeout = d.ValueReadTimeout
	}
	s := &service{log: log, opts: o, docs: newDocCache(o.DocCacheBytes), subs: map[string]*Subscription{}, index: newSubIndex()}
	if !o.NoView {
		s.view = newRegionView()
	}
	return s
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
	delta, err := parseEvents(req.Events)
	if err != nil {
		return nil, err
	}
	var from uint64
	resume := req.FromCursor != ""
	if resume {
		if from, err = ParseCursor(req.FromCursor); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	if max := s.opts.MaxPerClient; max > 0 && s.perClient[req.Subscriber] >= max {
		s.mu.Unlock()
		return nil, apierr.New(apierr.RateLimited, "Client %s already has %d open subscriptions, the limit; close one first.", req.Subscriber, max).
			WithDetail("limit", max).WithDetail("reason", "subscriptions_per_client")
	}
	if s.perClient == nil {
		s.perClient = map[string]int{}
	}
	s.perClient[req.Subscriber]++
	sub := newSubscription(ulid.Make().String(), req.Filter, req.Subscriber, delta, s.opts.Limits, req.Notify, resume, s.head)
	if resume {
		sub.lastSeq, sub.Start = from, from
	}
	// No goroutine per subscription: the end of ctx removes it. Set before the
	// subscription is published, so remove always sees stop.
	sub.stop = context.AfterFunc(ctx, func() { s.remove(sub) })
	s.subs[sub.ID] = sub
	s.index.add(sub)
	s.mu.Unlock()
	if resume {
		go s.catchUp(ctx, sub, from)
	}
	return sub, nil
}

// catchUp replays the log after `from`, then hands over to live delivery. The
// replay builds its frames by the same rules as live fan-out, so a resumed
// subscriber receives the same messages a live one did.
func (s *service) catchUp(ctx context.Context, sub *Subscription, from uint64) {
	after := from
	backoff := periodic.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for ctx.Err() == nil {
		resp, err := s.log.ReadLog(ctx, after, 500)
		if apierr.As(err).Code == apierr.CursorExpired && err != nil {
			if !sub.deliver(ctx, Event{Type: "snapshot_required"}) {
				return
			}
			sub.setLastSeq(s.Head())
			break
		}
		if err != nil {
			if !backoff.Wait(ctx) {
				return
			}
			continue
		}
		for _, c := range resp.GetChanges() {
			if c.GetState() != nil && sub.Filter.match(c.GetState()) {
				f := s.newFrame(ctx, c, !sub.Delta, sub.Delta, false)
				if f.valueErr != nil && !sub.Delta {
					sub.end(f.valueErr)
					s.remove(sub)
					return
				}
				if !sub.deliver(ctx, Event{Type: "change", Change: c, frame: f}) {
					return
				}
			}
			after = c.GetSeq()
		}
		if len(resp.GetChanges()) == 0 || after >= resp.GetHeadSeq() {
			break
		}
	}
	sub.setLastSeq(after)
	sub.goLive(ctx)
}

func (s *service) remove(sub *Subscription) {
	s.mu.Lock()
	if s.subs[sub.ID] == sub {
		delete(s.subs, sub.ID)
		s.index.remove(sub)
		if s.perClient[sub.Subscriber]--; s.perClient[sub.Subscriber] <= 0 {
			delete(s.perClient, sub.Subscriber)
		}
	}
	s.mu.Unlock()
	if sub.stop != nil {
		sub.stop()
	}
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
	return s.PublishBatch(ctx, []*fedsyncv1.Change{c})
}

// PublishBatch fans out a batch in log order under one hold of the fan-out
// lock. Changes Kafka skipped are taken from the commit log first, in order.
func (s *service) PublishBatch(ctx context.Context, cs []*fedsyncv1.Change) error {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	run := make([]*fedsyncv1.Change, 0, len(cs))
	last := s.Head()
	for _, c := range cs {
		if c.GetState() == nil {
			continue
		}
		if s.synced && c.GetSeq() > last+1 {
			// Kafka skipped changes (this consumer joined late, or the topic
			// lost records): take them from the commit log first, in order.
			s.fanOut(ctx, run)
			run = run[:0]
			if err := s.fillLocked(ctx, c.GetSeq()-1); err != nil {
				return err
			}
			last = s.Head()
		}
		run = append(run, c)
		last = max(last, c.GetSeq())
	}
	s.fanOut(ctx, run)
	return nil
}

// Sync sets the head from statestore's commit log at start-up and from then on
// fills gaps: the seed's periodic anti-entropy. Call it every so often; each
// call fills what was committed before the previous one (what Kafka had an
// interval to deliver and did not).
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
		s.prevLogHead = resp.GetHeadSeq()
		return nil
	}
	if resp.GetHeadSeq() < s.Head() {
		// The commit log is behind what Kafka brought: statestore lost its data
		// (or was replaced), so its positions restarted. It is the system of
		// record: follow it.
		s.mu.Lock()
		s.head = resp.GetHeadSeq()
		s.mu.Unlock()
		s.prevLogHead = resp.GetHeadSeq()
		// Versions restarted with the log: cached documents are of the old one.
		s.docs.clear()
		if s.view != nil {
			s.view.reset()
		}
		return nil
	}
	// Fill only what was committed by the previous sync: changes newer than
	// one interval are Kafka's to bring (with their traces), so the log is
	// read only for what Kafka really missed.
	upTo := s.prevLogHead
	s.prevLogHead = resp.GetHeadSeq()
	return s.fillLocked(ctx, upTo)
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
		page := resp.GetChanges()
		for i, c := range page {
			if c.GetSeq() > upTo {
				page = page[:i]
				break
			}
		}
		s.fanOut(ctx, page)
		if len(page) < len(resp.GetChanges()) {
			return nil
		}
	}
}

// fanOut hands each change to every matching subscription, once per log
// position: one frame per change, shared by all of them.
func (s *service) fanOut(ctx context.Context, cs []*fedsyncv1.Change) {
	var ended []*Subscription
	for _, c := range cs {
		st := c.GetState()
		if st == nil {
			continue
		}
		// Under one lock: drop what was already fanned out (republished after
		// a statestore restart), move the head past it, and find the
		// subscriptions it matches. One created from now on starts after it.
		s.mu.Lock()
		if c.GetSeq() <= s.head {
			s.mu.Unlock()
			continue
		}
		s.head = c.GetSeq()
		matched := s.index.match(st, s.matched[:0])
		s.mu.Unlock()
		s.matched = matched
		if s.view != nil {
			s.view.observe(c)
		}
		if len(matched) == 0 {
			s.docs.drop(st.GetId())
			continue
		}
		needFull, needDelta := false, false
		for _, sub := range matched {
			needFull = needFull || !sub.Delta
			needDelta = needDelta || sub.Delta
		}
		span := startFanOut(ctx, c, len(matched))
		f := s.newFrame(ctx, c, needFull, needDelta, true)
		if span != nil {
			f.sc = span.SpanContext()
		}
		for _, sub := range matched {
			if !sub.offer(f) {
				ended = append(ended, sub)
			}
		}
		if span != nil {
			span.End()
		}
	}
	clear(s.matched[:cap(s.matched)])
	for _, sub := range ended {
		s.remove(sub)
	}
}

// newFrame builds the frame of c with the forms asked for. live fan-out keeps
// the document cache current: the latest version of each document a full
// subscription follows.
func (s *service) newFrame(ctx context.Context, c *fedsyncv1.Change, full, delta, live bool) *frame {
	f := &frame{change: c}
	if c.GetChangeOmitted() {
		// Too large for a record even without its document: the change
		// itself comes from the log.
		whole, err := s.logChange(ctx, c)
		if err != nil {
			f.valueErr, f.changeErr = err, true
			if live {
				s.docs.drop(c.GetState().GetId())
			}
			return f
		}
		c, f.change = whole, whole
	}
	st := c.GetState()
	if delta {
		// Before the cache moves on: a change without set and removed is
		// diffed against the previous version.
		f.set, f.removed = s.deltaOf(c)
	}
	if full {
		f.value, f.valueErr = s.wholeValue(ctx, c)
	}
	if live {
		if full && f.valueErr == nil {
			s.docs.put(st.GetId(), st.GetVersion(), f.value)
		} else {
			s.docs.drop(st.GetId())
		}
	}
	return f
}

// ErrValueUnavailable ends a full subscription when a change came without its
// document and the document could not be read from the commit log.
var ErrValueUnavailable = errors.New("the changed document could not be read from the commit log; resume from the last cursor received")

// wholeValue returns the document as of c. A change that left its document out
// (value_omitted, a large document) is applied to the cached previous version;
// without that, the document is read from the commit log, which keeps whole
// documents (ReadLog after seq-1 returns the change at seq).
func (s *service) wholeValue(ctx context.Context, c *fedsyncv1.Change) ([]byte, error) {
	st := c.GetState()
	if !c.GetValueOmitted() {
		return st.GetValue(), nil
	}
	if prev, ok := s.docs.get(st.GetId(), st.GetVersion()-1); ok {
		if v, err := applyChange(prev, c.GetSet(), c.GetRemoved()); err == nil {
			s.valueRebuilds.Add(1)
			return v, nil
		}
	}
	got, err := s.logChange(ctx, c)
	if err != nil {
		return nil, err
	}
	return got.GetState().GetValue(), nil
}

// logChange reads c whole (document, set and removed) from the commit log,
// which keeps whole changes (ReadLog after seq-1 returns the change at seq).
func (s *service) logChange(ctx context.Context, c *fedsyncv1.Change) (*fedsyncv1.Change, error) {
	rctx, cancel := context.WithTimeout(ctx, s.opts.ValueReadTimeout)
	defer cancel()
	resp, err := s.log.ReadLog(rctx, c.GetSeq()-1, 1)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrValueUnavailable, err)
	}
	if len(resp.GetChanges()) == 0 {
		return nil, ErrValueUnavailable
	}
	got := resp.GetChanges()[0]
	if got.GetSeq() != c.GetSeq() || got.GetValueOmitted() || got.GetState().GetId() != c.GetState().GetId() {
		return nil, ErrValueUnavailable
	}
	return got, nil
}

// deltaOf returns what c set and removed. A change committed before statestore
// recorded that (no set, no removed, the whole document) is diffed against the
// previous version when the cache holds it; otherwise its set is the whole
// document (and removed is empty).
func (s *service) deltaOf(c *fedsyncv1.Change) ([]byte, []string) {
	if len(c.GetSet()) > 0 || len(c.GetRemoved()) > 0 || c.GetValueOmitted() {
		return c.GetSet(), c.GetRemoved()
	}
	st := c.GetState()
	if prev, ok := s.docs.get(st.GetId(), st.GetVersion()-1); ok {
		if set, removed, err := diffDocs(prev, st.GetValue()); err == nil {
			return set, removed
		}
	}
	return st.GetValue(), nil
}
