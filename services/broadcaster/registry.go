package broadcaster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/periodic"
	"github.com/fedsync/fedsync/libs/webhooksig"
)

// Registry holds the subscriptions created through the REST API
// (POST /api/v1/sync/subscribe). One with a callback_url is delivered by webhook;
// one without is a named filter and cursor that a WebSocket client attaches to by
// sending {"type":"subscribe","subscription_id":..}.
//
// Registrations are durable and shared: each is a record of the compacted topic
// fedsync.webhooks (RegLog), which every broadcaster replica reads whole, so a
// client may attach, list or delete through any of them. Each webhook is
// delivered by exactly one replica at a time: the one the consumer group
// fedsync-webhooks assigned its record's partition (SetOwned). The deliverer
// saves its cursor in the registration every SaveEvery, so the next owner (after
// a failover or a rollout) resumes there.
type Registry struct {
	svc    Service
	client *http.Client
	logger log.Logger
	// MaxPerClient bounds one client's registrations, webhooks and named
	// filters together (0: no bound).
	MaxPerClient int
	// Policy says which callback addresses may be called.
	Policy CallbackPolicy
	// DeadAfter is how long a callback may keep failing before its webhook is
	// marked dead and no longer tried.
	DeadAfter time.Duration
	// SaveEvery bounds how often a deliverer saves its cursor; 0 saves it
	// after every delivery, so a crash repeats at most the delivery in flight.
	SaveEvery time.Duration
	// Log is where registrations are kept; nil keeps them in this process
	// only, all delivered here (tests, a single hub).
	Log RegLog
	// Disabled, when set, says whether a client is disabled: its webhooks
	// hold their deliveries (and their place) until it is enabled again.
	Disabled func(client string) bool

	mu      sync.Mutex
	entries map[string]*regRecord
	owned   map[int32]bool // partitions this replica delivers; nil: all
	running map[string]*deliverer
}

// RegLog stores registration records: value nil deletes key.
type RegLog interface {
	Put(ctx context.Context, key string, value []byte) error
}

// regRecord is a registration as stored: its latest record is its state.
type regRecord struct {
	ID        string            `json:"id"`
	Owner     string            `json:"owner"`
	Reader    *authtoken.Claims `json:"reader,omitempty"`
	IDPrefix  string            `json:"id_prefix"`
	DataTypes []string          `json:"data_types,omitempty"`
	Events    string            `json:"events,omitempty"`
	Callback  string            `json:"callback_url,omitempty"`
	Secret    string            `json:"secret,omitempty"`
	// Cursor is where the subscription resumes: after the last change a
	// webhook delivered, or where a named filter was created.
	Cursor string `json:"cursor"`
	// Status is "active" or, for a webhook that failed for DeadAfter, "dead".
	Status       string    `json:"status"`
	LastError    string    `json:"last_error,omitempty"`
	FailingSince time.Time `json:"failing_since,omitzero"`
	Created      time.Time `json:"created"`

	partition int32 // where the log put it; -1 until read back
}

func (r *regRecord) filter() Filter {
	return Filter{IDPrefix: r.IDPrefix, DataTypes: r.DataTypes, Reader: r.Reader}
}

// Registration statuses.
const (
	StatusActive = "active"
	StatusDead   = "dead"
)

// NewRegistry returns an empty registry delivering through svc, with the
// default callback policy (public addresses only).
func NewRegistry(svc Service, logger log.Logger) *Registry {
	return &Registry{svc: svc, logger: logger, DeadAfter: time.Hour, SaveEvery: 0,
		entries: map[string]*regRecord{}, running: map[string]*deliverer{}}
}

func (r *Registry) httpClient() *http.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client == nil {
		r.client = r.Policy.Client(10 * time.Second)
	}
	return r.client
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
	// Secret signs the webhook's deliveries (webhooksig); it is shown
	// only here.
	Secret string `json:"secret,omitempty"`
}

// Create registers a subscription.
func (r *Registry) Create(ctx context.Context, req CreateRequest) (CreateResponse, error) {
	if req.CallbackURL != "" {
		if err := r.Policy.CheckURL(ctx, req.CallbackURL); err != nil {
			return CreateResponse{}, err
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
	rec := &regRecord{ID: ulid.Make().String(), Owner: req.Owner, Reader: req.Reader, IDPrefix: req.IDPrefix, DataTypes: req.DataTypes,
		Events: req.Events, Callback: req.CallbackURL, Cursor: cursor, Status: StatusActive, Created: time.Now().UTC(), partition: -1}
	if rec.Callback != "" {
		b := make([]byte, 32)
		rand.Read(b)
		rec.Secret = base64.RawURLEncoding.EncodeToString(b)
	}
	if err := r.save(ctx, rec); err != nil {
		return CreateResponse{}, err
	}
	r.apply(rec)
	return CreateResponse{SubscriptionID: rec.ID, Cursor: cursor, Secret: rec.Secret}, nil
}

// save writes rec to the log (a no-op without one).
func (r *Registry) save(ctx context.Context, rec *regRecord) error {
	if r.Log == nil {
		return nil
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := r.Log.Put(ctx, rec.ID, raw); err != nil {
		return apierr.New(apierr.Unavailable, "The subscription could not be stored: %v.", err).WithRetryAfter(time.Second)
	}
	return nil
}

// Load applies a record read from the log: a registration's new state, or
// (value nil) its deletion.
func (r *Registry) Load(key string, value []byte, partition int32) {
	if value == nil {
		r.remove(key)
		return
	}
	rec := &regRecord{}
	if err := json.Unmarshal(value, rec); err != nil || rec.ID != key {
		level.Warn(r.logger).Log("msg", "unreadable registration record skipped", "key", key, "err", err)
		return
	}
	rec.partition = partition
	r.apply(rec)
}

// apply makes rec the registration's state and starts or stops its delivery.
func (r *Registry) apply(rec *regRecord) {
	r.mu.Lock()
	if old, ok := r.entries[rec.ID]; ok {
		if rec.partition < 0 {
			rec.partition = old.partition
		}
		if d := r.running[rec.ID]; d != nil && rec.Status == StatusActive {
			// The deliverer's own cursor saves come back here: keep the
			// newer cursor it holds.
			rec.Cursor = d.cursorOr(rec.Cursor)
		}
	}
	r.entries[rec.ID] = rec
	r.mu.Unlock()
	r.reconcile(rec.ID)
}

func (r *Registry) remove(id string) {
	r.mu.Lock()
	delete(r.entries, id)
	r.mu.Unlock()
	r.reconcile(id)
}

// SetOwned says which partitions of the log this replica delivers (from the
// consumer group). A deliverer of a partition taken away has stopped, with
// its cursor saved, when SetOwned returns.
func (r *Registry) SetOwned(partitions []int32) {
	owned := map[int32]bool{}
	for _, p := range partitions {
		owned[p] = true
	}
	r.mu.Lock()
	r.owned = owned
	ids := make([]string, 0, len(r.entries)+len(r.running))
	for id := range r.entries {
		ids = append(ids, id)
	}
	for id := range r.running {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	r.reconcile(ids...)
}

// reconcile runs a deliverer for each of ids that is an active webhook this
// replica owns and stops the others, waiting until they are gone. A record
// read from the log touches only its own id; an ownership change, all.
func (r *Registry) reconcile(ids ...string) {
	r.mu.Lock()
	var stopping []*deliverer
	for _, id := range ids {
		rec, ok := r.entries[id]
		wanted := ok && rec.Callback != "" && rec.Status == StatusActive && r.ownsLocked(rec)
		d, running := r.running[id]
		switch {
		case running && !wanted:
			stopping = append(stopping, d)
			delete(r.running, id)
		case wanted && !running:
			d := newDeliverer(r, *rec)
			r.running[id] = d
			go d.run()
		}
	}
	r.mu.Unlock()
	for _, d := range stopping {
		d.stop()
	}
}

func (r *Registry) ownsLocked(rec *regRecord) bool {
	if r.Log == nil || r.owned == nil {
		return r.Log == nil // without a log every webhook is delivered here
	}
	return rec.partition >= 0 && r.owned[rec.partition]
}

func (r *Registry) count(owner string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.entries {
		if e.Owner == owner {
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
	if !ok || e.Owner != caller {
		return Filter{}, "", "", apierr.New(apierr.NotFound, "Subscription %s does not exist.", id)
	}
	return e.filter(), e.Cursor, e.Events, nil
}

// SubscriptionView is a registration as GET /api/v1/sync/subscribe shows it.
type SubscriptionView struct {
	SubscriptionID string    `json:"subscription_id"`
	IDPrefix       string    `json:"id_prefix"`
	DataTypes      []string  `json:"data_types,omitempty"`
	Events         string    `json:"events,omitempty"`
	CallbackURL    string    `json:"callback_url,omitempty"`
	Cursor         string    `json:"cursor"`
	Status         string    `json:"status"`
	LastError      string    `json:"last_error,omitempty"`
	FailingSince   time.Time `json:"failing_since,omitzero"`
	Created        time.Time `json:"created"`
}

// List returns the caller's registrations, oldest first.
func (r *Registry) List(_ context.Context, caller string) ([]SubscriptionView, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []SubscriptionView{}
	for _, e := range r.entries {
		if e.Owner != caller {
			continue
		}
		cursor := e.Cursor
		if d := r.running[e.ID]; d != nil {
			cursor = d.cursorOr(cursor)
		}
		out = append(out, SubscriptionView{SubscriptionID: e.ID, IDPrefix: e.IDPrefix, DataTypes: e.DataTypes, Events: e.Events, CallbackURL: e.Callback,
			Cursor: cursor, Status: e.Status, LastError: e.LastError, FailingSince: e.FailingSince, Created: e.Created})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SubscriptionID < out[j].SubscriptionID })
	return out, nil
}

// Delete removes a subscription the caller owns.
func (r *Registry) Delete(ctx context.Context, id, caller string) error {
	r.mu.Lock()
	e, ok := r.entries[id]
	r.mu.Unlock()
	if !ok || e.Owner != caller {
		return apierr.New(apierr.NotFound, "Subscription %s does not exist.", id)
	}
	if r.Log != nil {
		if err := r.Log.Put(ctx, id, nil); err != nil {
			return apierr.New(apierr.Unavailable, "The subscription could not be deleted: %v.", err).WithRetryAfter(time.Second)
		}
	}
	r.remove(id)
	return nil
}

// Close stops every deliverer, saving their cursors.
func (r *Registry) Close() {
	r.mu.Lock()
	running := r.running
	r.running = map[string]*deliverer{}
	r.mu.Unlock()
	for _, d := range running {
		d.stop()
	}
}

// deliverer POSTs one webhook's changes, one at a time and in order.
type deliverer struct {
	r      *Registry
	rec    regRecord
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	logger log.Logger

	mu     sync.Mutex
	cursor string
	saved  time.Time
	dead   bool
}

func newDeliverer(r *Registry, rec regRecord) *deliverer {
	ctx, cancel := context.WithCancel(context.Background())
	return &deliverer{r: r, rec: rec, ctx: ctx, cancel: cancel, done: make(chan struct{}), cursor: rec.Cursor,
		logger: log.With(r.logger, "subscription", rec.ID, "callback", rec.Callback)}
}

func (d *deliverer) cursorOr(fallback string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cursor != "" {
		return d.cursor
	}
	return fallback
}

// stop ends delivery and waits for it, its cursor saved.
func (d *deliverer) stop() {
	d.cancel()
	<-d.done
}

func (d *deliverer) run() {
	defer close(d.done)
	defer d.save(true, "", time.Time{})
	backoff := periodic.Backoff{Min: 200 * time.Millisecond, Max: 30 * time.Second}
	for d.ctx.Err() == nil {
		sub, err := d.r.svc.Subscribe(d.ctx, SubscribeRequest{Filter: d.rec.filter(), FromCursor: d.cursorOr(""), Subscriber: d.rec.Owner, Events: d.rec.Events})
		if err != nil {
			level.Warn(d.logger).Log("msg", "webhook subscription failed, retrying", "err", err)
			if !backoff.Wait(d.ctx) {
				return
			}
			continue
		}
		dead := d.pump(sub)
		d.r.svc.Unsubscribe(sub.ID)
		if dead {
			return
		}
		if d.ctx.Err() == nil {
			// Ended (too slow: the callback could not keep up): resume from
			// the last change delivered.
			level.Info(d.logger).Log("msg", "webhook subscription ended; resuming from its cursor", "err", sub.Err(), "cursor", d.cursorOr(""))
			if !backoff.Wait(d.ctx) {
				return
			}
		}
	}
}

// pump delivers sub's events until it ends or ctx does; it reports whether
// the webhook died (failed for DeadAfter).
func (d *deliverer) pump(sub *Subscription) bool {
	prefix := jsonChangePrefix(d.rec.ID)
	client := d.r.httpClient()
	for {
		ev, ok := sub.Next(d.ctx)
		if !ok {
			return false
		}
		head, rest := eventJSON(prefix, d.rec.ID, sub.Delta, ev)
		body := append(append(make([]byte, 0, len(head)+len(rest)), head...), rest...)
		backoff := periodic.Backoff{Min: 200 * time.Millisecond, Max: 30 * time.Second}
		var failingSince time.Time
		for d.r.Disabled != nil && d.r.Disabled(d.rec.Owner) {
			// A disabled client receives nothing; its webhook keeps its place.
			if !backoff.Wait(d.ctx) {
				return false
			}
		}
		backoff.Reset()
		end := traceFrame(ev, "webhook", d.rec.ID)
		for {
			err := d.post(client, body)
			if err == nil {
				end(nil)
				break
			}
			now := time.Now()
			if failingSince.IsZero() {
				failingSince = now
				d.save(true, err.Error(), failingSince) // visible while it fails
			}
			if now.Sub(failingSince) >= d.r.DeadAfter {
				level.Warn(d.logger).Log("msg", "webhook marked dead: its callback kept failing", "for", now.Sub(failingSince).Round(time.Second), "err", err)
				d.markDead(err.Error(), failingSince)
				end(err)
				return true
			}
			level.Warn(d.logger).Log("msg", "webhook delivery failed, retrying", "err", err, "backoff", backoff.Delay())
			if !backoff.Wait(d.ctx) {
				end(d.ctx.Err())
				return false
			}
		}
		if ev.Change != nil {
			d.mu.Lock()
			d.cursor = FormatCursor(ev.Change.GetSeq())
			d.mu.Unlock()
		}
		d.save(false, "", time.Time{})
	}
}

func (d *deliverer) post(client *http.Client, body []byte) error {
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.rec.Callback, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Fedsync-Subscription", d.rec.ID)
	req.Header.Set(webhooksig.Header, webhooksig.Sign(d.rec.Secret, time.Now(), body))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("callback answered %s", resp.Status)
	}
	return nil
}

// save writes the cursor (and the failure, when failing) to the log: at
// once when force, else at most every SaveEvery.
func (d *deliverer) save(force bool, lastError string, failingSince time.Time) {
	d.mu.Lock()
	if d.dead || (!force && time.Since(d.saved) < d.r.SaveEvery) {
		d.mu.Unlock()
		return
	}
	d.saved = time.Now()
	rec := d.rec
	rec.Cursor = d.cursor
	d.mu.Unlock()
	rec.LastError, rec.FailingSince = lastError, failingSince
	d.r.store(rec)
}

func (d *deliverer) markDead(lastError string, since time.Time) {
	d.mu.Lock()
	d.dead = true
	rec := d.rec
	rec.Cursor = d.cursor
	d.mu.Unlock()
	rec.Status, rec.LastError, rec.FailingSince = StatusDead, lastError, since
	d.r.store(rec)
	// Applied here at once, not only when read back.
	d.r.mu.Lock()
	if cur, ok := d.r.entries[rec.ID]; ok {
		rec.partition = cur.partition
		d.r.entries[rec.ID] = &rec
	}
	delete(d.r.running, rec.ID)
	d.r.mu.Unlock()
}

// store keeps rec's new state: in the log (read back by every replica), or
// in memory without one. A registration deleted meanwhile stays deleted.
func (r *Registry) store(rec regRecord) {
	r.mu.Lock()
	cur, ok := r.entries[rec.ID]
	if ok && r.Log == nil {
		cur.Cursor, cur.LastError, cur.FailingSince, cur.Status = rec.Cursor, rec.LastError, rec.FailingSince, rec.Status
	}
	r.mu.Unlock()
	if !ok || r.Log == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.save(ctx, &rec); err != nil {
		level.Warn(r.logger).Log("msg", "webhook state not saved", "subscription", rec.ID, "err", err)
	}
}
