package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// TestRegionalHubDownAlert: with an Alertmanager-format sink that the test
// runs, killing region eu's hub (its validation and broadcaster) for longer
// than the rule's window gives exactly one regional_hub_down firing
// notification, and one resolved notification follows when the hub returns.
// The window is 2 s here (the seed's 30 s is the default).
func TestRegionalHubDownAlert(t *testing.T) {
	sink := newAlertSink(t)
	t.Setenv("FEDSYNC_ALERTS_HUB_DOWN_FOR", "2s")
	t.Setenv("FEDSYNC_ALERTS_INTERVAL", "250ms")
	s := startStack(t)
	hubDown := func(resolved bool) int { return sink.count("regional_hub_down", "eu", resolved) }
	wait := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: sink got %v", what, sink.all())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	time.Sleep(3 * time.Second) // the probes have seen the hub up
	for _, name := range []string{"validation-eu", "broadcaster-eu"} {
		if err := s.Kill(name); err != nil {
			t.Fatal(err)
		}
	}
	wait("firing", func() bool { return hubDown(false) >= 1 })
	time.Sleep(3 * time.Second) // still down: no second notification
	if n := hubDown(false); n != 1 {
		t.Fatalf("%d firing notifications for one outage", n)
	}
	for _, name := range []string{"validation-eu", "broadcaster-eu"} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := s.Restart(ctx, name)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	wait("resolved", func() bool { return hubDown(true) == 1 })
}

// alertSink is an Alertmanager-format webhook sink the test runs; it sets
// FEDSYNC_ALERTS_WEBHOOKS for the stack the test starts next.
type alertSink struct {
	mu  sync.Mutex
	got []map[string]any
}

func newAlertSink(t *testing.T) *alertSink {
	s := &alertSink{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var alerts []map[string]any
		if err := json.Unmarshal(b, &alerts); err != nil {
			t.Errorf("sink got %s", b)
		}
		s.mu.Lock()
		s.got = append(s.got, alerts...)
		s.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	t.Setenv("FEDSYNC_ALERTS_WEBHOOKS", "alertmanager="+srv.URL)
	return s
}

// count is how many notifications of alert for region arrived, firing or
// resolved (resolved ones carry endsAt).
func (s *alertSink) count(alert, region string, resolved bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.got {
		l, _ := a["labels"].(map[string]any)
		if l["alertname"] == alert && l["region"] == region && (a["endsAt"] != nil) == resolved {
			n++
		}
	}
	return n
}

func (s *alertSink) all() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.got...)
}
