package fedsync

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// The mesh is exercised end to end in tests/e2e (fedctl and the SDK against
// real processes); these check the client's own rules against a stand-in.

func TestErrorsCarryTheContractCode(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/oauth2/token":
			w.WriteHeader(401)
			fmt.Fprint(w, `{"error":"invalid_client"}`)
		case "/api/v1/sync/state/x":
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(503)
			fmt.Fprint(w, `{"error":{"code":"unavailable","message":"The log is unreachable.","details":{"reason":"kafka"}}}`)
		default:
			w.WriteHeader(502)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	_, _, err := New(Config{BaseURL: srv.URL, ClientID: "a", ClientSecret: "b"}).Token(ctx)
	if CodeOf(err) != CodeInvalidClient {
		t.Fatalf("bad credentials: %v", err)
	}
	c := New(Config{BaseURL: srv.URL, Token: "t"})
	_, err = c.Get(ctx, "x")
	e, ok := err.(*Error)
	if !ok || e.Code != CodeUnavailable || e.RetryAfter != 3*time.Second || e.Details["reason"] != "kafka" || !Temporary(err) {
		t.Fatalf("503: %#v", err)
	}
	if _, err := c.Get(ctx, "other"); CodeOf(err) != CodeInternal {
		t.Fatalf("a 502 without a body: %v", err)
	}
}

func TestTokenIsRefreshedBeforeExpiryAndAfterARefusal(t *testing.T) {
	var issued, refused atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/oauth2/token" {
			n := issued.Add(1)
			fmt.Fprintf(w, `{"access_token":"tok-%d","token_type":"Bearer","expires_in":3600}`, n)
			return
		}
		// The first token is refused once (revoked): the client takes a new one.
		if r.Header.Get("Authorization") == "Bearer tok-1" {
			refused.Add(1)
			w.WriteHeader(401)
			fmt.Fprint(w, `{"error":{"code":"unauthenticated","message":"revoked"}}`)
			return
		}
		fmt.Fprint(w, `{"id":"x","version":1,"value":{}}`)
	}))
	defer srv.Close()
	c := New(Config{BaseURL: srv.URL, ClientID: "a", ClientSecret: "b", RefreshBefore: 3599 * time.Second})
	if _, err := c.Get(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	if refused.Load() != 1 || issued.Load() != 2 {
		t.Fatalf("refused %d, issued %d; want 1 and 2", refused.Load(), issued.Load())
	}
	// Within RefreshBefore of expiry: a new token for the next call.
	c.mu.Lock()
	c.expires = time.Now().Add(time.Second)
	c.mu.Unlock()
	if _, err := c.Get(context.Background(), "x"); err != nil || issued.Load() != 3 {
		t.Fatalf("err %v, issued %d; want a refresh", err, issued.Load())
	}
}

func TestUpdateRetriesVersionConflicts(t *testing.T) {
	var version, conflicts atomic.Int64
	version.Store(1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "GET" {
			fmt.Fprintf(w, `{"id":"x","version":%d,"value":{"n":%d}}`, version.Load(), version.Load())
			return
		}
		// Another writer wins the first two races.
		if conflicts.Add(1) <= 2 {
			version.Add(1)
			w.WriteHeader(409)
			fmt.Fprint(w, `{"error":{"code":"version_conflict","message":"moved"}}`)
			return
		}
		version.Add(1)
		fmt.Fprintf(w, `{"message_id":"m","status":"committed","version":%d}`, version.Load())
	}))
	defer srv.Close()
	c := New(Config{BaseURL: srv.URL, Token: "t"})
	v, err := c.Update(context.Background(), "x", "note", 5, func(cur *State) (map[string]any, error) {
		return map[string]any{"n": cur.Value["n"].(float64) + 1}, nil
	})
	if err != nil || v != 4 {
		t.Fatalf("version %d, err %v; want 4 after two conflicts", v, err)
	}
	if _, err := c.Update(context.Background(), "x", "note", 0, func(*State) (map[string]any, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
}
