package broadcaster

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/endpoints"
	"github.com/fedsync/fedsync/libs/httpjson"
	"github.com/fedsync/fedsync/libs/telemetry"
)

// HTTPOptions tune the HTTP transport.
type HTTPOptions struct {
	PingInterval time.Duration
	PingTimeout  time.Duration
	Logger       log.Logger
	// Connections counts open WebSocket connections.
	Connections prometheus.Gauge
	// MaxPerSocket bounds the subscriptions open on one connection (0: no
	// bound).
	MaxPerSocket int
	// OriginPatterns are the browser origins (host patterns, path.Match
	// syntax, e.g. "*.example.com") allowed to open a stream besides the
	// edge's own host. Clients that send no Origin (agents, not browsers)
	// are not affected.
	OriginPatterns []string
	// FaultInjection, when set, is served at POST /debug/consistency/corrupt
	// (-consistency.fault-injection; tests only).
	FaultInjection http.Handler
}

// NewHTTPHandler serves GET /stream (WebSocket), POST /api/v1/sync/subscribe and
// DELETE /api/v1/sync/unsubscribe, all for authenticated callers.
func NewHTTPHandler(svc Service, reg *Registry, e Endpoints, v *authtoken.Verifier, o HTTPOptions) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		serveStream(w, r, svc, reg, v, o)
	})
	mux.HandleFunc("POST /api/v1/sync/subscribe", func(w http.ResponseWriter, r *http.Request) {
		var req CreateRequest
		if err := httpjson.Decode(w, r, 64<<10, &req); err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		c, _ := authtoken.FromContext(r.Context())
		req.Owner, req.Reader = c.Subject, c
		resp, err := endpoints.Call[CreateResponse](r.Context(), e.CreateSubscription, req)
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		httpjson.Write(w, http.StatusCreated, resp)
	})
	// The caller's registrations with their state (cursor, active or dead,
	// the last callback error); ?subscription_id= for one.
	mux.HandleFunc("GET /api/v1/sync/subscribe", func(w http.ResponseWriter, r *http.Request) {
		c, _ := authtoken.FromContext(r.Context())
		list, err := endpoints.Call[[]SubscriptionView](r.Context(), e.ListSubscriptions, c.Subject)
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		if id := r.URL.Query().Get("subscription_id"); id != "" {
			for _, s := range list {
				if s.SubscriptionID == id {
					httpjson.Write(w, http.StatusOK, s)
					return
				}
			}
			apierr.WriteHTTP(w, apierr.New(apierr.NotFound, "Subscription %s does not exist.", id))
			return
		}
		httpjson.Write(w, http.StatusOK, map[string]any{"subscriptions": list})
	})
	mux.HandleFunc("DELETE /api/v1/sync/unsubscribe", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("subscription_id")
		if id == "" {
			apierr.WriteHTTP(w, apierr.New(apierr.InvalidArgument, "Query parameter subscription_id is required."))
			return
		}
		c, _ := authtoken.FromContext(r.Context())
		if _, err := endpoints.Call[struct{}](r.Context(), e.DeleteSubscription, DeleteRequest{ID: id, Caller: c.Subject}); err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	if o.FaultInjection != nil {
		mux.Handle("POST /debug/consistency/corrupt", o.FaultInjection)
	}
	mux.HandleFunc("/", httpjson.NotFound)
	return v.HTTPMiddleware(telemetry.Routes(mux))
}

// serveStream runs one WebSocket connection with three goroutines whatever its
// number of subscriptions: the reader of client messages (this one), the
// writer and the pinger. The connection's subscriptions share one Notifier; the
// writer serves the ones that have events.
//
// The connection lives as long as its token is valid: expiry, revocation, a
// disabled client or a withdrawn key closes it with 1008 (policy violation)
// and the reason, within the verifier's revocation refresh.
func serveStream(w http.ResponseWriter, r *http.Request, svc Service, reg *Registry, v *authtoken.Verifier, o HTTPOptions) {
	claims, _ := authtoken.FromContext(r.Context())
	if err := checkOrigin(r, o.OriginPatterns); err != nil {
		apierr.WriteHTTP(w, err)
		return
	}
	// The origin is checked above, with the contract's error.
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	o.Connections.Inc()
	defer o.Connections.Dec()
	conn.SetReadLimit(64 << 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logger := log.With(o.Logger, "subscriber", claims.Subject)

	var closeOnce sync.Once
	closeWith := func(code websocket.StatusCode, reason string) {
		closeOnce.Do(func() {
			go func() {
				time.Sleep(2 * time.Second)
				conn.CloseNow()
			}()
			// The close frame goes out before ctx ends: ending a read's
			// context drops the connection without one.
			conn.Close(code, reason)
			cancel()
		})
	}
	watch, unwatch := v.Watch(ctx, claims)
	defer unwatch()
	context.AfterFunc(watch, func() {
		var authErr *apierr.Error
		if errors.As(context.Cause(watch), &authErr) && authErr.Code == apierr.Unauthenticated {
			level.Info(logger).Log("msg", "closing websocket: token no longer valid", "reason", authErr.Message)
			closeWith(websocket.StatusPolicyViolation, authErr.Message)
		}
	})
	sw := &streamWriter{conn: conn, ctx: ctx, closeWith: closeWith,
		notify: NewNotifier(), ctrl: make(chan streamControl, 64), subs: map[string]*attachedSub{}}
	send := func(c streamControl) bool {
		select {
		case sw.ctrl <- c:
			return true
		case <-ctx.Done():
			return false
		}
	}
	go sw.run()
	// Pinger: a connection that does not answer is closed.
	go func() {
		t := time.NewTicker(o.PingInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				pctx, pcancel := context.WithTimeout(ctx, o.PingTimeout)
				err := conn.Ping(pctx)
				pcancel()
				if err != nil {
					level.Info(logger).Log("msg", "closing unresponsive websocket", "err", err)
					closeWith(websocket.StatusPolicyViolation, "ping timeout")
					return
				}
			}
		}
	}()

	subs := map[string]*Subscription{}
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			closeWith(websocket.StatusNormalClosure, "")
			return
		}
		// As strict as REST bodies: valid UTF-8, exact field names, no
		// unknown fields, each refusal naming what is wrong.
		var m clientMessage
		if err := httpjson.Unmarshal(data, &m); err != nil {
			send(streamControl{msg: newErrorMessage(err, "")})
			continue
		}
		switch m.Type {
		case "subscribe":
			if o.MaxPerSocket > 0 && len(subs) >= o.MaxPerSocket {
				send(streamControl{msg: newErrorMessage(apierr.New(apierr.RateLimited, "This connection already has %d subscriptions, the limit; unsubscribe one or open another connection.", o.MaxPerSocket).
					WithDetail("limit", o.MaxPerSocket).WithDetail("reason", "subscriptions_per_socket"), "")})
				continue
			}
			req := SubscribeRequest{Filter: Filter{IDPrefix: m.IDPrefix, DataTypes: m.DataTypes, Reader: claims}, FromCursor: m.FromCursor,
				Subscriber: claims.Subject, Events: m.Events, Notify: sw.notify}
			if m.SubscriptionID != "" {
				f, cursor, events, err := reg.Lookup(m.SubscriptionID, claims.Subject)
				if err != nil {
					send(streamControl{msg: newErrorMessage(err, "")})
					continue
				}
				req.Filter = f
				req.Filter.Reader = claims
				if req.FromCursor == "" {
					req.FromCursor = cursor
				}
				if req.Events == "" {
					req.Events = events
				}
			}
			sub, err := svc.Subscribe(ctx, req)
			if err != nil {
				send(streamControl{msg: newErrorMessage(err, "")})
				continue
			}
			subs[sub.ID] = sub
			cursor := req.FromCursor
			if cursor == "" {
				cursor = FormatCursor(sub.Start)
			}
			// The writer sends "subscribed" before any change of sub.
			send(streamControl{msg: subscribedMessage{Type: "subscribed", SubscriptionID: sub.ID, Cursor: cursor}, attach: sub})
		case "unsubscribe":
			if sub, ok := subs[m.SubscriptionID]; ok {
				svc.Unsubscribe(sub.ID)
				delete(subs, sub.ID)
				send(streamControl{msg: noticeMessage{Type: "unsubscribed", SubscriptionID: sub.ID}, detach: sub.ID})
			} else {
				send(streamControl{msg: newErrorMessage(apierr.New(apierr.NotFound, "Subscription %s is not open on this connection.", m.SubscriptionID), "")})
			}
		default:
			send(streamControl{msg: newErrorMessage(apierr.New(apierr.InvalidArgument, "Field type must be subscribe or unsubscribe, not %q.", m.Type), "")})
		}
	}
}

// checkOrigin refuses a browser's handshake from an origin other than the
// host it connects to or one of patterns (cross-site WebSocket hijacking: a
// page elsewhere riding on a logged-in browser).
func checkOrigin(r *http.Request, patterns []string) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err == nil && u.Host != "" {
		if strings.EqualFold(u.Host, r.Host) {
			return nil
		}
		for _, p := range patterns {
			if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(u.Host)); ok {
				return nil
			}
		}
	}
	return apierr.New(apierr.PermissionDenied, "Origin %q may not open a stream here; allowed are this host and -ws.allowed-origins.", origin).
		WithDetail("reason", "origin_not_allowed")
}

// streamControl is a message from a connection's reader to its writer: a JSON
// message to send, then a subscription to start or stop writing.
type streamControl struct {
	msg    any
	attach *Subscription
	detach string
}

type attachedSub struct {
	sub    *Subscription
	prefix []byte // jsonChangePrefix(sub.ID)
	// sent is the log position of the last change written to the client: the
	// cursor it resumes from, reported when the subscription ends.
	sent uint64
}

// streamWriter is the only goroutine that writes data frames to a connection.
type streamWriter struct {
	conn      *websocket.Conn
	ctx       context.Context
	closeWith func(websocket.StatusCode, string)
	notify    *Notifier
	ctrl      chan streamControl
	subs      map[string]*attachedSub
	ready     []*Subscription
	events    []Event
	scratch   []byte
}

// takeMax is the most events the writer takes from one subscription before
// it turns to the next.
const takeMax = 64

// smallFrame is the largest message copied into one buffer and written as one
// frame; a larger change is written from its two parts.
const smallFrame = 32 << 10

func (w *streamWriter) run() {
	for {
		select {
		case <-w.ctx.Done():
			return
		case c := <-w.ctrl:
			if c.msg != nil && !w.writeJSON(c.msg) {
				return
			}
			if c.attach != nil {
				w.subs[c.attach.ID] = &attachedSub{sub: c.attach, prefix: jsonChangePrefix(c.attach.ID), sent: c.attach.Start}
				// It may have been listed ready before it was attached.
				w.notify.Requeue(c.attach)
			}
			if c.detach != "" {
				delete(w.subs, c.detach)
			}
		case <-w.notify.C:
			if !w.drain() {
				return
			}
		}
	}
}

// drain writes what the ready subscriptions queued. A subscription that
// ended is written out and detached; one that ended with an error (too slow)
// ends the connection with that error and its cursor.
func (w *streamWriter) drain() bool {
	w.ready = w.notify.Ready(w.ready[:0])
	for _, sub := range w.ready {
		a, ok := w.subs[sub.ID]
		if !ok || a.sub != sub {
			continue // not attached yet (it is requeued then), or detached
		}
		w.events = sub.Take(w.events[:0], takeMax)
		if !w.writeEvents(a) {
			return false
		}
		if len(w.events) == takeMax {
			w.notify.Requeue(sub) // more queued: after the others
			continue
		}
		select {
		case <-sub.Done():
		default:
			continue
		}
		// Ended: nothing is queued after the end, so what is left is all.
		for {
			w.events = sub.Take(w.events[:0], takeMax)
			if len(w.events) == 0 {
				break
			}
			if !w.writeEvents(a) {
				return false
			}
		}
		delete(w.subs, sub.ID)
		if err := sub.Err(); err != nil {
			w.writeJSON(newErrorMessage(apierr.New(apierr.Unavailable, "%v", err), FormatCursor(a.sent)))
			w.closeWith(websocket.StatusTryAgainLater, "subscriber too slow")
			return false
		}
	}
	clear(w.events)
	clear(w.ready)
	if cap(w.scratch) > 4<<10 {
		w.scratch = nil // an idle connection keeps no large buffer
	}
	return true
}

func (w *streamWriter) writeEvents(a *attachedSub) bool {
	for _, ev := range w.events {
		head, body := eventJSON(a.prefix, a.sub.ID, a.sub.Delta, ev)
		end := traceFrame(ev, "websocket", a.sub.ID)
		ok := w.write(head, body)
		end(nil)
		if !ok {
			return false
		}
		if ev.Change != nil {
			a.sent = ev.Change.GetSeq()
		}
	}
	return true
}

func (w *streamWriter) writeJSON(msg any) bool {
	b, err := json.Marshal(msg)
	if err != nil {
		return true
	}
	return w.write(nil, b)
}

// write sends head followed by body as one text message: small ones copied
// into one frame, large ones written from the shared bytes as they are.
func (w *streamWriter) write(head, body []byte) bool {
	wctx, wcancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer wcancel()
	var err error
	if len(head)+len(body) <= smallFrame {
		w.scratch = append(append(w.scratch[:0], head...), body...)
		err = w.conn.Write(wctx, websocket.MessageText, w.scratch)
	} else {
		var mw io.WriteCloser
		if mw, err = w.conn.Writer(wctx, websocket.MessageText); err == nil {
			if _, err = mw.Write(head); err == nil {
				_, err = mw.Write(body)
			}
			if cerr := mw.Close(); err == nil {
				err = cerr
			}
		}
	}
	if err != nil {
		w.closeWith(websocket.StatusGoingAway, "write failed")
		return false
	}
	return true
}
