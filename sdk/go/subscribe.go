package fedsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Filter selects the changes of a subscription; empty fields match all.
type Filter struct {
	IDPrefix  string
	DataTypes []string
}

// Change is a committed change as a subscription delivers it.
type Change struct {
	ID        string         `json:"id"`
	DataType  string         `json:"data_type"`
	Version   int64          `json:"version"`
	Value     map[string]any `json:"value"`
	UpdatedBy string         `json:"updated_by"`
	UpdatedAt time.Time      `json:"updated_at"`
	Cursor    string         `json:"cursor"`
}

// Event types a Subscription delivers.
const (
	// EventChange carries a committed change (Change).
	EventChange = "change"
	// EventSnapshot carries a document read after snapshot_required
	// (Change, without Cursor): the server could not replay from the
	// cursor, so the subscription subscribed again from now and re-read
	// the documents that match. Changes follow; one may repeat a version a
	// snapshot event already carried.
	EventSnapshot = "snapshot"
	// EventConnected: the stream is (again) open; Cursor is where it
	// resumed.
	EventConnected = "connected"
	// EventReconnecting: the stream broke (Err says why); it is opened
	// again after Delay, from the last cursor.
	EventReconnecting = "reconnecting"
)

// Event is what a Subscription delivers.
type Event struct {
	Type   string
	Change *Change
	Cursor string
	Err    error
	Delay  time.Duration
}

// SubscribeOptions tune a subscription.
type SubscribeOptions struct {
	// FromCursor resumes after a cursor a previous subscription reported.
	FromCursor string
	// MinBackoff and MaxBackoff bound the reconnect delay, which doubles
	// after every failure and is jittered (default 250 ms and 30 s).
	MinBackoff, MaxBackoff time.Duration
	// Buffer is how many events may wait for the reader (default 1024).
	Buffer int
}

// Subscription is a live subscription over WebSocket /stream that
// reconnects by itself and resumes from the last cursor, so no change is
// missed or repeated across reconnects.
type Subscription struct {
	events chan Event
	mu     sync.Mutex
	cursor string
	done   chan struct{}
	err    error
}

// Events delivers the subscription's events; it is closed when the
// subscription ends (its context ended, or an error that reconnecting
// cannot fix: see Err).
func (s *Subscription) Events() <-chan Event { return s.events }

// Cursor is the position of the last change delivered.
func (s *Subscription) Cursor() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursor
}

// Err is why the subscription ended (nil while it runs or when its
// context ended).
func (s *Subscription) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Subscribe opens a subscription; it runs until ctx ends.
func (c *Client) Subscribe(ctx context.Context, f Filter, o SubscribeOptions) *Subscription {
	if o.MinBackoff <= 0 {
		o.MinBackoff = 250 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.Buffer <= 0 {
		o.Buffer = 1024
	}
	s := &Subscription{events: make(chan Event, o.Buffer), cursor: o.FromCursor, done: make(chan struct{})}
	go s.run(ctx, c, f, o)
	return s
}

// errPermanent marks failures reconnecting cannot fix.
type errPermanent struct{ error }

func (s *Subscription) run(ctx context.Context, c *Client, f Filter, o SubscribeOptions) {
	defer close(s.events)
	defer close(s.done)
	delay := o.MinBackoff
	for ctx.Err() == nil {
		connected, err := s.stream(ctx, c, f)
		if ctx.Err() != nil {
			return
		}
		var perm errPermanent
		if errors.As(err, &perm) {
			s.err = perm.error
			return
		}
		if connected {
			delay = o.MinBackoff
		}
		// Full jitter over the current step, at least the minimum.
		wait := o.MinBackoff + time.Duration(rand.Int64N(int64(delay)))
		if !s.emit(ctx, Event{Type: EventReconnecting, Err: err, Delay: wait, Cursor: s.Cursor()}) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-c.switchedCh(): // failed over: reconnect to the new hub now
		}
		delay = min(delay*2, o.MaxBackoff)
	}
}

func (s *Subscription) emit(ctx context.Context, ev Event) bool {
	select {
	case s.events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

type serverMessage struct {
	Type  string `json:"type"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Cursor string `json:"cursor"`
	Change
}

// stream runs one connection until it breaks; connected reports whether it
// got as far as "subscribed".
func (s *Subscription) stream(ctx context.Context, c *Client, f Filter) (connected bool, err error) {
	tok, _, err := c.Token(ctx)
	if err != nil {
		if CodeOf(err) == CodeInvalidClient {
			return false, errPermanent{err}
		}
		return false, err
	}
	u := "ws" + strings.TrimPrefix(c.BaseURL(), "http") + "/stream"
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: c.http, HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			c.forgetToken(tok)
		}
		if resp != nil && resp.StatusCode == http.StatusForbidden {
			return false, errPermanent{fmt.Errorf("fedsync: open /stream: %w", err)}
		}
		return false, fmt.Errorf("fedsync: open /stream: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(64 << 20)
	sub := map[string]any{"type": "subscribe"}
	if f.IDPrefix != "" {
		sub["id_prefix"] = f.IDPrefix
	}
	if len(f.DataTypes) > 0 {
		sub["data_types"] = f.DataTypes
	}
	if cur := s.Cursor(); cur != "" {
		sub["from_cursor"] = cur
	}
	msg, _ := json.Marshal(sub)
	if err := conn.Write(ctx, websocket.MessageText, msg); err != nil {
		return false, err
	}
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusPolicyViolation {
				c.forgetToken(tok) // the token ended: the next connection takes a new one
			}
			return connected, err
		}
		var m serverMessage
		if err := json.Unmarshal(data, &m); err != nil {
			return connected, fmt.Errorf("fedsync: undecodable message: %w", err)
		}
		switch m.Type {
		case "subscribed":
			connected = true
			s.setCursor(m.Cursor)
			if !s.emit(ctx, Event{Type: EventConnected, Cursor: m.Cursor}) {
				return connected, ctx.Err()
			}
		case "change":
			ch := m.Change
			ch.Cursor = m.Cursor // the outer field takes "cursor" when decoding
			s.setCursor(ch.Cursor)
			c.saw(ch.ID, ch.Version)
			if c.cache != nil && ch.Value != nil {
				// Before the reader sees the event: a Get after it is never older.
				c.cache.put(State{ID: ch.ID, DataType: ch.DataType, Value: ch.Value, Version: ch.Version, UpdatedBy: ch.UpdatedBy, UpdatedAt: ch.UpdatedAt})
			}
			if !s.emit(ctx, Event{Type: EventChange, Change: &ch, Cursor: ch.Cursor}) {
				return connected, ctx.Err()
			}
		case "snapshot_required":
			// The cursor is older than the retained log: subscribe again
			// from now on this connection (the server queues what comes
			// meanwhile), then re-read what matches. A change may repeat a
			// version the re-read already returned; versions order them.
			delete(sub, "from_cursor")
			msg, _ := json.Marshal(sub)
			if err := conn.Write(ctx, websocket.MessageText, msg); err != nil {
				return connected, err
			}
			if err := s.snapshot(ctx, c, f); err != nil {
				return connected, err
			}
		case "error":
			if m.Error != nil {
				if m.Error.Code == CodeInvalidArgument || m.Error.Code == CodePermissionDenied {
					return connected, errPermanent{&Error{Code: m.Error.Code, Message: m.Error.Message}}
				}
				return connected, &Error{Code: m.Error.Code, Message: m.Error.Message}
			}
		}
	}
}

func (s *Subscription) setCursor(cur string) {
	s.mu.Lock()
	s.cursor = cur
	s.mu.Unlock()
}

// snapshot emits the documents that match f as EventSnapshot.
func (s *Subscription) snapshot(ctx context.Context, c *Client, f Filter) error {
	types := f.DataTypes
	if len(types) == 0 {
		types = []string{""}
	}
	for _, dt := range types {
		err := c.QueryAll(ctx, Query{IDPrefix: f.IDPrefix, DataType: dt, Limit: 500}, func(p *Page) error {
			for _, st := range p.Items {
				ch := &Change{ID: st.ID, DataType: st.DataType, Version: st.Version, Value: st.Value, UpdatedBy: st.UpdatedBy, UpdatedAt: st.UpdatedAt}
				if !s.emit(ctx, Event{Type: EventSnapshot, Change: ch}) {
					return ctx.Err()
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
