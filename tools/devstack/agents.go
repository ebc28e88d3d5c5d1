package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// Token gets an access token for a client from an edge.
func Token(ctx context.Context, edge string, c Client) (string, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {c.ClientID}, "client_secret": {c.ClientSecret}}
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
		}
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			// Many agents on one machine share an address: wait as told.
			wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(time.Duration(max(wait, 1)) * time.Second):
			}
			continue
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("token for %s: %s %s", c.ClientID, resp.Status, body.Error)
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
	var token string
	for ctx.Err() == nil {
		var err error
		if token, err = Token(ctx, edge, c); err == nil {
			break
		}
		countErr(st, "token")
		sleep(ctx, time.Second)
	}
	go subscribe(ctx, edge, token, st)
	go func() {
		for ctx.Err() == nil {
			post(ctx, edge+"/api/v1/sync/heartbeat", token, nil)
			sleep(ctx, o.Heartbeat)
		}
	}()
	interval := time.Duration(float64(time.Second) / o.Rate)
	sleep(ctx, time.Duration(rand.Int64N(int64(interval))+1))
	beliefs := lastCounter(ctx, edge, token, c.ClientID)               // this agent's causal counter, continued across restarts
	taskVersion := taskVersion(ctx, edge, token, c.ClientID+":task-1") // version of its task document it last saw
	for seq := 1; ctx.Err() == nil; seq++ {
		now := time.Now().UnixNano()
		var req map[string]any
		switch {
		case seq%10 == 0: // strong: compare-and-set on the version last seen
			req = map[string]any{"id": c.ClientID + ":task-1", "data_type": "task", "expected_version": taskVersion,
				"patch": map[string]any{"title": "survey", "status": "running", "progress": seq % 101, "attempts": 1}}
		case seq%5 == 0: // causal: the agent's own beliefs, in order
			beliefs++
			req = map[string]any{"id": fmt.Sprintf("%s:belief-%d", c.ClientID, seq%3), "data_type": "belief",
				"vector_clock": map[string]int64{c.ClientID: beliefs},
				"patch":        map[string]any{"statement": fmt.Sprintf("claim %d", seq), "confidence": rand.Float64(), "evidence": []string{fmt.Sprintf("obs-%d", seq%7)}, "sent_at_ns": now}}
		case seq%4 == 0: // eventual with resolvers: sets, counters, maxima
			req = map[string]any{"id": c.ClientID + ":kg", "data_type": "knowledge_graph",
				"patch": map[string]any{"entities": []string{fmt.Sprintf("e%d", seq%11)}, "observations": 1, "confidence": rand.Float64(), "sent_at_ns": now}}
		default:
			req = map[string]any{"id": fmt.Sprintf("%s:note-%d", c.ClientID, seq%4), "data_type": "note",
				"patch": map[string]any{"seq": seq, "sent_at_ns": now, "by": c.ClientID}}
		}
		body, _ := json.Marshal(req)
		status, resp := post(ctx, edge+"/api/v1/sync/state", token, body)
		switch {
		case status == http.StatusAccepted || status == http.StatusOK:
			st.add(func(st *Stats) { st.accepted++ })
			if v, ok := resp["version"].(float64); ok {
				taskVersion = int64(v)
			}
		case status == http.StatusConflict:
			if e, ok := resp["error"].(map[string]any); ok {
				if d, ok := e["details"].(map[string]any); ok {
					if v, ok := d["current_version"].(float64); ok {
						taskVersion = int64(v)
					}
				}
			}
			countErr(st, "409 version_conflict")
		case ctx.Err() == nil:
			code := ""
			if e, ok := resp["error"].(map[string]any); ok {
				code, _ = e["code"].(string)
			}
			countErr(st, fmt.Sprintf("%d %s", status, code))
		}
		sleep(ctx, interval)
	}
}

// lastCounter returns the agent's settled causal counter (the federation's
// frontier for it), so a restarted agent continues its vector clock.
func lastCounter(ctx context.Context, edge, token, agent string) int64 {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, edge+"/api/v1/sync/clock/"+agent, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var body struct {
		Counter int64 `json:"counter"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	return body.Counter
}

// taskVersion returns the current version of a document (0 when it is new).
func taskVersion(ctx context.Context, edge, token, id string) int64 {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, edge+"/api/v1/sync/state/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var body struct {
		Version int64 `json:"version"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	return body.Version
}

func post(ctx context.Context, url, token string, body []byte) (int, map[string]any) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, map[string]any{"error": map[string]any{"code": "transport"}}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

// subscribe keeps a WebSocket subscription to every change open, resuming from
// the last cursor after a disconnect.
func subscribe(ctx context.Context, edge, token string, st *Stats) {
	wsURL := "ws" + strings.TrimPrefix(edge, "http") + "/stream"
	cursor := ""
	for ctx.Err() == nil {
		conn, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
		if err != nil {
			countErr(st, "ws_dial")
			sleep(ctx, time.Second)
			continue
		}
		conn.SetReadLimit(4 << 20)
		wsjson.Write(ctx, conn, map[string]any{"type": "subscribe", "from_cursor": cursor})
		for {
			var m struct {
				Type   string          `json:"type"`
				Cursor string          `json:"cursor"`
				Value  json.RawMessage `json:"value"`
			}
			if err := wsjson.Read(ctx, conn, &m); err != nil {
				if ctx.Err() == nil {
					countErr(st, "ws_read")
				}
				break
			}
			if m.Type == "subscribed" && cursor == "" {
				cursor = m.Cursor
			}
			if m.Type != "change" {
				continue
			}
			cursor = m.Cursor
			var v struct {
				SentAt int64 `json:"sent_at_ns"`
			}
			json.Unmarshal(m.Value, &v)
			st.add(func(st *Stats) {
				st.delivered++
				if v.SentAt > 0 {
					st.latencies = append(st.latencies, time.Since(time.Unix(0, v.SentAt)))
				}
			})
		}
		conn.CloseNow()
		sleep(ctx, 500*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
