package authn

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
)

func TestThrottleDelaysDoubleAndReset(t *testing.T) {
	th := newThrottle()
	th.FreeAddr, th.FreeID, th.Rate = 3, 100, 0
	now := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if d := th.wait("1.2.3.4", "x", now); d != 0 {
			t.Fatalf("free attempt %d waits %s", i, d)
		}
		th.failed("1.2.3.4", "x", now)
	}
	if d := th.wait("1.2.3.4", "y", now); d != 0 {
		t.Fatalf("3 free failures: the next attempt may still go, waits %s", d)
	}
	th.failed("1.2.3.4", "y", now)
	if d := th.wait("1.2.3.4", "z", now); d != time.Second {
		t.Fatalf("after 4 failures wait %s, want 1s", d)
	}
	now = now.Add(time.Second)
	th.failed("1.2.3.4", "z", now)
	if d := th.wait("1.2.3.4", "z", now); d != 2*time.Second {
		t.Fatalf("after 5 failures wait %s, want 2s", d)
	}
	if d := th.wait("5.6.7.8", "z", now); d != 0 {
		t.Fatalf("another address waits %s", d)
	}
	now = now.Add(2 * time.Second)
	th.succeeded("1.2.3.4", "z", now)
	if d := th.wait("1.2.3.4", "z", now); d != 0 {
		t.Fatalf("after a success wait %s", d)
	}
	for i := 0; i < 40; i++ {
		th.failed("9.9.9.9", "q", now)
	}
	if d := th.wait("9.9.9.9", "q", now); d != th.Max {
		t.Fatalf("delay capped at %s, got %s", th.Max, d)
	}
}

func TestThrottleClientLockSparesItsOwnAddress(t *testing.T) {
	th := newThrottle()
	th.FreeAddr, th.FreeID, th.Rate = 1000, 2, 0
	now := time.Unix(1000, 0)
	th.succeeded("10.0.0.1", "ai-001", now) // the owner's agent
	for i := 0; i < 10; i++ {
		th.failed("6.6.6.6", "ai-001", now) // someone guessing its secret
	}
	if d := th.wait("7.7.7.7", "ai-001", now); d == 0 {
		t.Fatal("guesses for a locked client id from a new address are let through")
	}
	if d := th.wait("10.0.0.1", "ai-001", now); d != 0 {
		t.Fatalf("the owner's own address waits %s", d)
	}
	// Unknown ids are locked the same way: nothing tells them apart.
	for i := 0; i < 10; i++ {
		th.failed("6.6.6.6", "no-such-client", now)
	}
	if d1, d2 := th.wait("7.7.7.7", "no-such-client", now), th.wait("7.7.7.7", "ai-001", now); d1 != d2 {
		t.Fatalf("unknown id waits %s, known id %s", d1, d2)
	}
}

func TestThrottleRatePerAddress(t *testing.T) {
	th := newThrottle()
	th.Rate, th.Burst = 2, 3
	now := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if d := th.wait("1.1.1.1", "a", now); d != 0 {
			t.Fatalf("burst attempt %d waits %s", i, d)
		}
	}
	if d := th.wait("1.1.1.1", "a", now); d != 500*time.Millisecond {
		t.Fatalf("past the burst wait %s, want 500ms", d)
	}
	if d := th.wait("1.1.1.1", "a", now.Add(500*time.Millisecond)); d != 0 {
		t.Fatalf("after refill wait %s", d)
	}
}

// TestTokenEndpointUnderGuessing: wrong secrets from one address are refused
// with 429 and Retry-After without costing bcrypt work, while the client
// itself, from its own address, still gets tokens at once.
func TestTokenEndpointUnderGuessing(t *testing.T) {
	f := newFixture(t)
	eps := MakeEndpoints(f.svc, func(string) endpoint.Middleware { return func(e endpoint.Endpoint) endpoint.Endpoint { return e } })
	srv := httptest.NewServer(NewHTTPHandler(eps, f.svc.verifier, HTTPOptions{Throttle: newThrottle(), ProxyHops: 1}))
	defer srv.Close()
	post := func(from, id, secret string) *http.Response {
		req, _ := http.NewRequest("POST", srv.URL+"/oauth2/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		// A forged entry first, then the one the edge appended.
		req.Header.Set("X-Forwarded-For", "1.1.1.1, "+from)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := post("10.0.0.1", "ai-001", "s3cret"); r.StatusCode != 200 {
		t.Fatalf("owner: %d", r.StatusCode)
	}
	limited := 0
	start := time.Now()
	for i := 0; i < 200; i++ {
		r := post("6.6.6.6", "ai-001", "guess")
		if r.StatusCode == 429 {
			limited++
			if r.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
		} else if r.StatusCode != 401 {
			t.Fatalf("guess %d: %d", i, r.StatusCode)
		}
	}
	if limited < 180 {
		t.Fatalf("only %d of 200 guesses throttled", limited)
	}
	t.Logf("200 guesses answered in %s, %d throttled", time.Since(start).Round(time.Millisecond), limited)
	if r := post("7.7.7.7", "ai-001", "s3cret"); r.StatusCode != 429 {
		t.Fatalf("a new address for the locked id: %d, want 429", r.StatusCode)
	}
	if r := post("10.0.0.1", "ai-001", "s3cret"); r.StatusCode != 200 {
		t.Fatalf("owner during the guessing: %d", r.StatusCode)
	}
}

// TestUnknownClientCostsAsMuchAsWrongSecret: the timing of a refusal does not
// tell known client ids from unknown ones.
func TestUnknownClientCostsAsMuchAsWrongSecret(t *testing.T) {
	st, err := openStore(t.TempDir(), 10)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	if _, err := st.importClients(context.Background(), []ClientEntry{{ClientID: "known", ClientSecret: "right", Role: "observer", Level: "L1"}}); err != nil {
		t.Fatal(err)
	}
	median := func(id string) time.Duration {
		var ds []time.Duration
		for i := 0; i < 7; i++ {
			start := time.Now()
			if c, _, _ := st.authenticate(context.Background(), id, "wrong"); c != nil {
				t.Fatal("authenticated")
			}
			ds = append(ds, time.Since(start))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[3]
	}
	known, unknown := median("known"), median("unknown")
	t.Logf("wrong secret %s, unknown id %s", known, unknown)
	if ratio := float64(known) / float64(unknown); ratio > 2 || ratio < 0.5 {
		t.Fatalf("wrong secret %s against unknown id %s: distinguishable", known, unknown)
	}
}
