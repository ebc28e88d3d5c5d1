package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/fedsync/fedsync/tools/devstack"
)

// agent is a test client of one edge.
type agent struct {
	t     *testing.T
	edge  string
	token string
}

func newAgent(t *testing.T, s *devstack.Stack, clientID, region string) *agent {
	t.Helper()
	for _, c := range s.Clients {
		if c.ClientID == clientID {
			tok, err := devstack.Token(context.Background(), s.EdgeURL(region), c)
			if err != nil {
				t.Fatal(err)
			}
			return &agent{t: t, edge: s.EdgeURL(region), token: tok}
		}
	}
	t.Fatalf("no client %s", clientID)
	return nil
}

// clientSecret returns the secret make run generated for a client.
func clientSecret(t *testing.T, s *devstack.Stack, clientID string) string {
	t.Helper()
	for _, c := range s.Clients {
		if c.ClientID == clientID {
			return c.ClientSecret
		}
	}
	t.Fatalf("no client %s", clientID)
	return ""
}

// do sends a request and returns status, decoded JSON body and headers.
func (a *agent) do(method, path string, body []byte, token string) (int, map[string]any, http.Header) {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.edge+path, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	json.Unmarshal(raw, &out)
	return resp.StatusCode, out, resp.Header
}

func (a *agent) push(body string) (int, map[string]any) {
	status, out, _ := a.do("POST", "/api/v1/sync/state", []byte(body), a.token)
	return status, out
}

// pushPatiently is push as a well-behaved agent does it: a 503 (back-pressure:
// nothing was accepted) is sent again after its Retry-After, for up to 30 s.
func (a *agent) pushPatiently(body string) (int, map[string]any) {
	a.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, out, h := a.do("POST", "/api/v1/sync/state", []byte(body), a.token)
		if status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return status, out
		}
		wait, _ := strconv.Atoi(h.Get("Retry-After"))
		time.Sleep(time.Duration(max(wait, 1)) * time.Second)
	}
}

func (a *agent) get(id string) (int, map[string]any) {
	status, out, _ := a.do("GET", "/api/v1/sync/state/"+id, nil, a.token)
	return status, out
}

// waitVersion polls GET until id reaches version.
func (a *agent) waitVersion(id string, version float64, timeout time.Duration) map[string]any {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]any
	for time.Now().Before(deadline) {
		status, body := a.get(id)
		if status == 200 {
			last = body
			if body["version"].(float64) >= version {
				return body
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.t.Fatalf("%s did not reach version %v in %s; last %v", id, version, timeout, last)
	return nil
}

// stream is a WebSocket subscription.
type stream struct {
	t    *testing.T
	conn *websocket.Conn
}

func (a *agent) subscribe(msg map[string]any) (*stream, map[string]any) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(a.edge, "http") + "/stream?access_token=" + a.token
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	conn.SetReadLimit(4 << 20)
	a.t.Cleanup(func() { conn.CloseNow() })
	msg["type"] = "subscribe"
	wsjson.Write(ctx, conn, msg)
	s := &stream{t: a.t, conn: conn}
	return s, s.next(10 * time.Second)
}

func (s *stream) next(timeout time.Duration) map[string]any {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var m map[string]any
	if err := wsjson.Read(ctx, s.conn, &m); err != nil {
		s.t.Fatalf("no message within %s: %v", timeout, err)
	}
	return m
}

// waitField polls GET until a numeric field of id's value reaches want.
func (a *agent) waitField(id, field string, want float64, timeout time.Duration) map[string]any {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]any
	for time.Now().Before(deadline) {
		if status, body := a.get(id); status == 200 {
			last = body
			if v, _ := body["value"].(map[string]any)[field].(float64); v >= want {
				return body
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.t.Fatalf("%s.%s did not reach %v in %s; last %v", id, field, want, timeout, last)
	return nil
}

func readJSON(s *stream, v any) error {
	return wsjson.Read(context.Background(), s.conn, v)
}

func readJSONCtx(ctx context.Context, s *stream, v any) error {
	return wsjson.Read(ctx, s.conn, v)
}
