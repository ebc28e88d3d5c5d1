package broadcaster

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/endpoints"
	"github.com/fedsync/fedsync/libs/httpjson"
)

// HTTPOptions tune the HTTP transport.
type HTTPOptions struct {
	PingInterval time.Duration
	PingTimeout  time.Duration
	Logger       log.Logger
	// Connections counts open WebSocket connections.
	Connections prometheus.Gauge
}

// NewHTTPHandler serves GET /stream (WebSocket), POST /api/v1/sync/subscribe and
// DELETE /api/v1/sync/unsubscribe, all for authenticated callers.
func NewHTTPHandler(svc Service, reg *Registry, e Endpoints, v *authtoken.Verifier, o HTTPOptions) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		serveStream(w, r, svc, reg, o)
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
	mux.HandleFunc("/", httpjson.NotFound)
	return v.HTTPMiddleware(mux)
}

// serveStream runs one WebSocket connection: a reader for client messages, one
// writer, a forwarder per subscription and a pinger.
func serveStream(w http.ResponseWriter, r *http.Request, svc Service, reg *Registry, o HTTPOptions) {
	claims, _ := authtoken.FromContext(r.Context())
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

	out := make(chan any, 1024)
	var closeOnce sync.Once
	closeWith := func(code websocket.StatusCode, reason string) {
		closeOnce.Do(func() {
			cancel()
			go func() {
				time.Sleep(2 * time.Second)
				conn.CloseNow()
			}()
			conn.Close(code, reason)
		})
	}
	send := func(msg any) bool {
		select {
		case out <- msg:
			return true
		case <-ctx.Done():
			return false
		}
	}
	// Writer: the only goroutine that writes data frames.
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case msg := <-out:
				wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
				err := wsjson.Write(wctx, conn, msg)
				wcancel()
				if err != nil {
					closeWith(websocket.StatusGoingAway, "write failed")
					return
				}
			}
		}
	}()
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
	forward := func(sub *Subscription) {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-sub.Events():
				if !send(eventMessage(sub.ID, ev)) {
					return
				}
			case <-sub.Done():
				// Deliver what was already queued, then report why it ended.
				for {
					select {
					case ev := <-sub.Events():
						if !send(eventMessage(sub.ID, ev)) {
							return
						}
						continue
					default:
					}
					break
				}
				if err := sub.Err(); err != nil {
					send(newErrorMessage(apierr.New(apierr.Unavailable, "%v", err), FormatCursor(sub.Cursor())))
					time.Sleep(100 * time.Millisecond)
					closeWith(websocket.StatusTryAgainLater, "subscriber too slow")
				}
				return
			}
		}
	}
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			closeWith(websocket.StatusNormalClosure, "")
			return
		}
		var m clientMessage
		if err := json.Unmarshal(data, &m); err != nil {
			send(newErrorMessage(apierr.New(apierr.InvalidArgument, "The message is not valid JSON."), ""))
			continue
		}
		switch m.Type {
		case "subscribe":
			req := SubscribeRequest{Filter: Filter{IDPrefix: m.IDPrefix, DataTypes: m.DataTypes, Reader: claims}, FromCursor: m.FromCursor, Subscriber: claims.Subject}
			if m.SubscriptionID != "" {
				f, cursor, err := reg.Lookup(m.SubscriptionID, claims.Subject)
				if err != nil {
					send(newErrorMessage(err, ""))
					continue
				}
				req.Filter = f
				req.Filter.Reader = claims
				if req.FromCursor == "" {
					req.FromCursor = cursor
				}
			}
			sub, err := svc.Subscribe(ctx, req)
			if err != nil {
				send(newErrorMessage(err, ""))
				continue
			}
			subs[sub.ID] = sub
			cursor := req.FromCursor
			if cursor == "" {
				cursor = FormatCursor(sub.Cursor())
			}
			send(subscribedMessage{Type: "subscribed", SubscriptionID: sub.ID, Cursor: cursor})
			go forward(sub)
		case "unsubscribe":
			if sub, ok := subs[m.SubscriptionID]; ok {
				svc.Unsubscribe(sub.ID)
				delete(subs, sub.ID)
				send(noticeMessage{Type: "unsubscribed", SubscriptionID: sub.ID})
			} else {
				send(newErrorMessage(apierr.New(apierr.NotFound, "Subscription %s is not open on this connection.", m.SubscriptionID), ""))
			}
		default:
			send(newErrorMessage(apierr.New(apierr.InvalidArgument, "Field type must be subscribe or unsubscribe, not %q.", m.Type), ""))
		}
	}
}
