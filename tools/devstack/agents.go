package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	fedsync "github.com/fedsync/fedsync/sdk/go"
)

// Token gets an access token for a client from an edge.
func Token(ctx context.Context, edge string, c Client) (string, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {c.ClientID}, "client_secret": {c.ClientSecret}}
	unavailable := 0
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, edge+"/oauth2/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		var body struct {
			AccessToken string `json:"access_token"`
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests || (resp.StatusCode == http.StatusServiceUnavailable && unavailable < 15) {
			// Many agents on one machine share an address, or the authn
			// replica cannot reach its group yet: wait as told.
			if resp.StatusCode == http.StatusServiceUnavailable {
				unavailable++
			}
			wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(time.Duration(max(wait, 1)) * time.Second):
			}
			continue
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("token for %s: %s %s %s", c.ClientID, resp.Status, body.Error, body.Description)
		}
		return body.AccessToken, nil
	}
}

// Stats are the simulated federation's counters.
type Stats struct {
	mu        sync.Mutex
	accepted  int
	delivered int
	errors    map[string]int
	latencies []time.Duration
}

func (st *Stats) add(fn func(st *Stats)) {
	st.mu.Lock()
	fn(st)
	st.mu.Unlock()
}

// Window returns and resets the counters of the last window.
func (st *Stats) Window() (accepted, delivered int, p99 time.Duration, errs map[string]int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	accepted, delivered, errs = st.accepted, st.delivered, st.errors
	if n := len(st.latencies); n > 0 {
		sort.Slice(st.latencies, func(i, j int) bool { return st.latencies[i] < st.latencies[j] })
		p99 = st.latencies[min(n-1, n*99/100)]
	}
	st.accepted, st.delivered, st.errors, st.latencies = 0, 0, map[string]int{}, st.latencies[:0]
	return accepted, delivered, p99, errs
}

// AgentOptions shape the simulated agents.
type AgentOptions struct {
	// Count of agents, taken from the clients ai-001 upwards.
	Count int
	// Rate is deltas per second per agent.
	Rate float64
	// Heartbeat is the interval between an agent's heartbeats.
	Heartbeat time.Duration
}

// RunAgents runs simulated agents against the stack until ctx ends: each gets a
// token from its region's edge, subscribes over WebSocket to every change, pushes
// note deltas to ids under its own prefix, and sends heartbeats.
func (s *Stack) RunAgents(ctx context.Context, o AgentOptions, st *Stats) error {
	st.add(func(st *Stats) { st.errors = map[string]int{} })
	var wg sync.WaitGroup
	n := 0
	for _, c := range s.Clients {
		if !strings.HasPrefix(c.ClientID, "ai-") || n >= o.Count {
			continue
		}
		n++
		edge, ok := s.opts.Edges[c.Region]
		if !ok {
			edge = s.opts.Edges[s.opts.Regions()[0]]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			runAgent(ctx, "http://"+edge, c, o, st)
		}()
	}
	wg.Wait()
	return nil
}

func countErr(st *Stats, code string) { st.add(func(st *Stats) { st.errors[code]++ }) }

func runAgent(ctx context.Context, edge string, c Client, o AgentOptions, st *Stats) {
	cl := fedsync.New(fedsync.Config{BaseURL: edge, ClientID: c.ClientID, ClientSecret: c.ClientSecret})
	for ctx.Err() == nil {
		_, _, err := cl.Token(ctx)
		if err == nil {
			break
		}
		var e *fedsync.Error
		if errors.As(err, &e) && e.RetryAfter > 0 {
			// Many agents on one machine share an address: wait as told.
			sleep(ctx, e.RetryAfter)
			continue
		}
		countErr(st, "token")
		sleep(ctx, time.Second)
	}
	go subscribe(ctx, cl, st)
	go func() {
		for ctx.Err() == nil {
			cl.Heartbeat(ctx)
			sleep(ctx, o.Heartbeat)
		}
	}()
	interval := time.Duration(float64(time.Second) / o.Rate)
	sleep(ctx, time.Duration(rand.Int64N(int64(interval))+1))
	beliefs, _ := cl.Clock(ctx, c.ClientID) // this agent's causal counter, continued across restarts
	var taskVersion int64                   // version of its task document it last saw
	if t, err := cl.GetFresh(ctx, c.ClientID+":task-1"); err == nil {
		taskVersion = t.Version
	}
	for seq := 1; ctx.Err() == nil; seq++ {
		now := time.Now().UnixNano()
		var d fedsync.Delta
		switch {
		case seq%10 == 0: // strong: compare-and-set on the version last seen
			v := taskVersion
			d = fedsync.Delta{ID: c.ClientID + ":task-1", DataType: "task", Consistency: "strong", ExpectedVersion: &v,
				Patch: map[string]any{"title": "survey", "status": "running", "progress": seq % 101, "attempts": 1}}
		case seq%5 == 0: // causal: the agent's own beliefs, in order
			beliefs++
			d = fedsync.Delta{ID: fmt.Sprintf("%s:belief-%d", c.ClientID, seq%3), DataType: "belief",
				VectorClock: map[string]int64{c.ClientID: beliefs},
				Patch:       map[string]any{"statement": fmt.Sprintf("claim %d", seq), "confidence": rand.Float64(), "evidence": []string{fmt.Sprintf("obs-%d", seq%7)}, "sent_at_ns": now}}
		case seq%4 == 0: // eventual with resolvers: sets, counters, maxima
			d = fedsync.Delta{ID: c.ClientID + ":kg", DataType: "knowledge_graph",
				Patch: map[string]any{"entities": []string{fmt.Sprintf("e%d", seq%11)}, "observations": 1, "confidence": rand.Float64(), "sent_at_ns": now}}
		default:
			d = fedsync.Delta{ID: fmt.Sprintf("%s:note-%d", c.ClientID, seq%4), DataType: "note",
				Patch: map[string]any{"seq": seq, "sent_at_ns": now, "by": c.ClientID}}
		}
		res, err := cl.PushOnce(ctx, d)
		var e *fedsync.Error
		switch {
		case err == nil:
			st.add(func(st *Stats) { st.accepted++ })
			if res.Version > 0 {
				taskVersion = res.Version
			}
		case fedsync.CodeOf(err) == fedsync.CodeVersionConflict:
			if errors.As(err, &e) {
				if v, ok := e.Details["current_version"].(float64); ok {
					taskVersion = int64(v)
				}
			}
			countErr(st, "409 version_conflict")
		case ctx.Err() == nil:
			if errors.As(err, &e) {
				countErr(st, fmt.Sprintf("%d %s", e.Status, e.Code))
			} else {
				countErr(st, "0 transport")
			}
		}
		sleep(ctx, interval)
	}
}

// subscribe keeps a subscription to every change open (the SDK reconnects
// and resumes from the last cursor) and counts deliveries and latencies.
func subscribe(ctx context.Context, cl *fedsync.Client, st *Stats) {
	sub := cl.Subscribe(ctx, fedsync.Filter{}, fedsync.SubscribeOptions{MinBackoff: 500 * time.Millisecond})
	for ev := range sub.Events() {
		switch ev.Type {
		case fedsync.EventReconnecting:
			if ctx.Err() == nil {
				countErr(st, "ws_read")
			}
		case fedsync.EventChange:
			sent, _ := ev.Change.Value["sent_at_ns"].(float64)
			st.add(func(st *Stats) {
				st.delivered++
				if sent > 0 {
					st.latencies = append(st.latencies, time.Since(time.Unix(0, int64(sent))))
				}
			})
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
