package broadcaster

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/periodic"
)

// Registry holds the subscriptions created through the REST API
// (POST /api/v1/sync/subscribe). One with a callback_url is delivered by webhook;
// one without is a named filter and cursor that a WebSocket client attaches to by
// sending {"type":"subscribe","subscription_id":..}.
type Registry struct {
	svc    Service
	client *http.Client
	logger log.Logger

	// MaxPerClient bounds one client's registrations, webhooks and named
	// filters together (0: no bound).
	MaxPerClient int

	mu      sync.Mutex
	entries map[string]*registered
}

type registered struct {
	owner    string
	filter   Filter
	cursor   string
	events   string
	callback string
	cancel   context.CancelFunc
}

// NewRegistry returns an empty registry delivering through svc.
func NewRegistry(svc Service, logger log.Logger) *Registry {
	return &Registry{svc: svc, client: &http.Client{Timeout: 10 * time.Second}, logger: logger, entries: map[string]*registered{}}
}

// CreateRequest is the body of POST /api/v1/sync/subscribe.
type CreateRequest struct {
	IDPrefix    string   `json:"id_prefix"`
	DataTypes   []string `json:"data_types"`
	FromCursor  string   `json:"from_cursor"`
	CallbackURL string   `json:"callback_url"`
	// Events is "full" (default) or "delta", as on WebSocket.
	Events string `json:"events"`
	Owner  string `json:"-"`
	// Reader is the owner's identity: a webhook delivers only what it may read.
	Reader *authtoken.Claims `json:"-"`
}

// CreateResponse is its 201 answer.
type CreateResponse struct {
	SubscriptionID string `json:"subscription_id"`
	Cursor         string `json:"cursor"`
}

// Create registers a subscription.
func (r *Registry) Create(_ context.Context, req CreateRequest) (CreateResponse, error) {
	if req.CallbackURL != "" {
		u, err := url.Parse(req.CallbackURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return CreateResponse{}, apierr.New(apierr.InvalidArgument, "Field callback_url must be an absolute http or https URL.")
		}
	}
	if _, err := parseEvents(req.Events); err != nil {
		return CreateResponse{}, err
	}
	cursor := req.FromCursor
	if cursor == "" {
		cursor = FormatCursor(r.svc.Head())
	} else if _, err := ParseCursor(cursor); err != nil {
		return CreateResponse{}, err
	}
	if r.MaxPerClient > 0 && r.count(req.Owner) >= r.MaxPerClient {
		return CreateResponse{}, apierr.New(apierr.RateLimited, "Client %s already has %d registered subscriptions, the limit; delete one first.", req.Owner, r.MaxPerClient).
			WithDetail("limit", r.MaxPerClient).WithDetail("reason", "registrations_per_client")
	}
	id := ulid.Make().String()
	e := &registered{owner: req.Owner, filter: Filter{IDPrefix: req.IDPrefix, DataTypes: req.DataTypes, Reader: req.Reader}, cursor: cursor, events: req.Events, callback: req.CallbackURL}
	if e.callback != "" {
		ctx, cancel := context.WithCancel(context.Background())
		e.cancel = cancel
		sub, err := r.svc.Subscribe(ctx, SubscribeRequest{Filter: e.filter, FromCursor: cursor, Subscriber: req.Owner, Events: req.Events})
		if err != nil {
			cancel()
			return CreateResponse{}, err
		}
		go r.deliver(ctx, id, e, sub)
	}
	r.mu.Lock()
	r.entries[id] = e
	r.mu.Unlock()
	return CreateResponse{SubscriptionID: id, Cursor: cursor}, nil
}

func (r *Registry) count(owner string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.entries {
		if e.owner == owner {
			n++
		}
	}
	return n
}

// Lookup returns the filter, cursor and events option of a registered
// subscription the caller owns.
func (r *Registry) Lookup(id, caller string) (f Filter, cursor, events string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[id]
	if !ok || e.owner != caller {
		return Filter{}, "", "", apierr.New(apierr.NotFound, "Subscription %s does not exist.", id)
	}
	return e.filter, e.cursor, e.events, nil
}

// Delete removes a subscription the caller owns.
func (r *Registry) Delete(_ context.Context, id, caller string) error {
	r.mu.Lock()
	e, ok := r.entries[id]
	if ok && e.owner == caller {
		delete(r.entries, id)
	}
	r.mu.Unlock()
	if !ok || e.owner != caller {
		return apierr.New(apierr.NotFound, "Subscription %s does not exist.", id)
	}
	if e.cancel != nil {
		e.cancel()
	}
	return nil
}

// deliver POSTs each event to the callback, retrying a failing callback with
// backoff; the subscription keeps its place meanwhile.
func (r *Registry) deliver(ctx context.Context, id string, e *registered, sub *Subscription) {
	logger := log.With(r.logger, "subscription", id, "callback", e.callback)
	prefix := jsonChangePrefix(id)
	for {
		ev, ok := sub.Next(ctx)
		if !ok {
			if ctx.Err() == nil {
				level.Warn(logger).Log("msg", "webhook subscription ended", "err", sub.Err())
			}
			return
		}
		head, rest := eventJSON(prefix, id, sub.Delta, ev)
		body := append(append(make([]byte, 0, len(head)+len(rest)), head...), rest...)
		backoff := periodic.Backoff{Min: 200 * time.Millisecond, Max: 30 * time.Second}
		for {
			err := r.post(ctx, e.callback, body)
			if err == nil {
				break
			}
			level.Warn(logger).Log("msg", "webhook delivery failed, retrying", "err", err)
			if !backoff.Wait(ctx) {
				return
			}
		}
	}
}

func (r *Registry) post(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("callback answered %s", resp.Status)
	}
	return nil
}
