package fedsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"
)

// Delta is a change to one document (POST /api/v1/sync/state).
type Delta struct {
	ID       string `json:"id"`
	DataType string `json:"data_type"`
	// Patch holds the top-level fields to set; a nil value deletes the field.
	Patch map[string]any `json:"patch"`
	// Consistency is "eventual" (default), "causal" or "strong".
	Consistency string `json:"consistency,omitempty"`
	// ExpectedVersion (strong only): the version the change is based on; 0
	// creates only.
	ExpectedVersion *int64           `json:"expected_version,omitempty"`
	BaseVersion     *int64           `json:"base_version,omitempty"`
	VectorClock     map[string]int64 `json:"vector_clock,omitempty"`
	// MessageID makes the push idempotent: the same id is applied once.
	// Push fills in a random one when it is empty, so a retry is safe.
	MessageID string `json:"message_id,omitempty"`
	Priority  *int   `json:"priority,omitempty"`
}

// PushResult is the answer to a push: "accepted" (eventual and causal: durably
// in the log) or "committed" with the new version (strong).
type PushResult struct {
	MessageID string `json:"message_id"`
	Status    string `json:"status"`
	Version   int64  `json:"version,omitempty"`
}

// State is a stored document.
type State struct {
	ID          string           `json:"id"`
	DataType    string           `json:"data_type"`
	Value       map[string]any   `json:"value"`
	Version     int64            `json:"version"`
	VectorClock map[string]int64 `json:"vector_clock,omitempty"`
	UpdatedAt   time.Time        `json:"updated_at"`
	UpdatedBy   string           `json:"updated_by"`
}

// PushOnce sends one delta once: a refusal (rate_limited, unavailable:
// nothing was accepted) is returned as it is.
func (c *Client) PushOnce(ctx context.Context, d Delta) (*PushResult, error) {
	if d.MessageID == "" {
		d.MessageID = newID()
	}
	var out PushResult
	if err := c.call(ctx, "POST", "/api/v1/sync/state", d, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Push sends one delta. A delta refused with rate_limited or unavailable
// (nothing was accepted) is sent again after the server's Retry-After, under
// the same message id, until ctx ends; so is one whose hub could not be
// reached, when the client has other edges to fail over to.
func (c *Client) Push(ctx context.Context, d Delta) (*PushResult, error) {
	if d.MessageID == "" {
		d.MessageID = newID()
	}
	for {
		out, err := c.PushOnce(ctx, d)
		if err == nil {
			if out.Version > 0 {
				c.saw(d.ID, out.Version)
			}
			if c.cache != nil {
				c.cache.drop(d.ID) // the cached copy is older than this write
			}
			return out, nil
		}
		if !Temporary(err) && !(unreachable(err) && len(c.edges) > 1) {
			return nil, err
		}
		// Unreachable with other edges to fail over to: the same message
		// id again (at the next edge once heartbeats switch), applied once.
		wait := time.Second
		var e *Error
		if errors.As(err, &e) && e.RetryAfter > 0 {
			wait = e.RetryAfter
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last answer: %v)", ctx.Err(), err)
		case <-time.After(wait):
		case <-c.switchedCh():
		}
	}
}

// PushBatch sends deltas with up to `parallel` requests in flight (at least
// 1) and returns a result or an error per delta, in order. Deltas to the same
// id keep their order only with parallel 1 (or for strong writes, through
// ExpectedVersion).
func (c *Client) PushBatch(ctx context.Context, ds []Delta, parallel int) ([]*PushResult, []error) {
	res, errs := make([]*PushResult, len(ds)), make([]error, len(ds))
	sem := make(chan struct{}, max(parallel, 1))
	var wg sync.WaitGroup
	for i := range ds {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			res[i], errs[i] = c.Push(ctx, ds[i])
		}()
	}
	wg.Wait()
	return res, errs
}

// Get reads a document, from the L1 cache while it holds a fresh copy; a
// missing one is an *Error with CodeNotFound.
func (c *Client) Get(ctx context.Context, id string) (*State, error) {
	if c.cache != nil {
		if st, ok := c.cache.get(id); ok {
			return st, nil
		}
	}
	return c.GetFresh(ctx, id)
}

// GetFresh reads a document from the hub, bypassing the cache (and
// refreshing it).
func (c *Client) GetFresh(ctx context.Context, id string) (*State, error) {
	var out State
	if err := c.call(ctx, "GET", "/api/v1/sync/state/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	if c.cache != nil {
		c.cache.put(out)
	}
	return &out, nil
}

// Query selects documents by id prefix and data type, a page at a time.
type Query struct {
	IDPrefix  string `json:"id_prefix,omitempty"`
	DataType  string `json:"data_type,omitempty"`
	Limit     int    `json:"limit,omitempty"`
	PageToken string `json:"page_token,omitempty"`
}

// Page is one page of a query.
type Page struct {
	Items         []State `json:"items"`
	NextPageToken string  `json:"next_page_token"`
}

// Query returns one page.
func (c *Client) Query(ctx context.Context, q Query) (*Page, error) {
	var out Page
	if err := c.call(ctx, "POST", "/api/v1/sync/query", q, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// QueryAll follows the pages of q, calling page after each.
func (c *Client) QueryAll(ctx context.Context, q Query, page func(*Page) error) error {
	for {
		p, err := c.Query(ctx, q)
		if err != nil {
			return err
		}
		if err := page(p); err != nil {
			return err
		}
		if p.NextPageToken == "" {
			return nil
		}
		q.PageToken = p.NextPageToken
	}
}

// ErrTooManyConflicts ends an Update that kept losing the race.
var ErrTooManyConflicts = errors.New("fedsync: too many version conflicts")

// Update is a compare-and-set loop for strong writes: it reads id, asks fn
// for the patch to apply to that version, and writes it with
// expected_version, trying again on version_conflict up to attempts times.
// fn receives nil for a document that does not exist yet (it is then
// created, expected_version 0). It returns the committed version.
func (c *Client) Update(ctx context.Context, id, dataType string, attempts int, fn func(cur *State) (map[string]any, error)) (int64, error) {
	for i := 0; i < max(attempts, 1); i++ {
		cur, err := c.GetFresh(ctx, id)
		if err != nil && CodeOf(err) != CodeNotFound {
			return 0, err
		}
		var version int64
		if cur != nil {
			version = cur.Version
		}
		patch, err := fn(cur)
		if err != nil {
			return 0, err
		}
		res, err := c.Push(ctx, Delta{ID: id, DataType: dataType, Patch: patch, Consistency: "strong", ExpectedVersion: &version})
		if CodeOf(err) == CodeVersionConflict {
			continue
		}
		if err != nil {
			return 0, err
		}
		return res.Version, nil
	}
	return 0, fmt.Errorf("%w: %s after %d attempts", ErrTooManyConflicts, id, max(attempts, 1))
}

// RawJSON renders v indented, for printing.
func RawJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// Clock returns the causal counter the federation has settled for agent (GET
// /api/v1/sync/clock/{agent}): where a restarted agent continues its vector
// clock.
func (c *Client) Clock(ctx context.Context, agent string) (int64, error) {
	var out struct {
		Counter int64 `json:"counter"`
	}
	err := c.call(ctx, "GET", "/api/v1/sync/clock/"+url.PathEscape(agent), nil, &out)
	return out.Counter, err
}
