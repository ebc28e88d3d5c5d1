package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	fedsync "github.com/fedsync/fedsync/sdk/go"
	"github.com/fedsync/fedsync/tools/devstack"
)

// TestSDKSubscriptionResumesAcrossHubRestart: a Go SDK subscription keeps
// every change, in order, without duplicates, while its regional hub is
// killed and restarted in the middle of a stream of writes: it reconnects by
// itself with backoff and resumes from its last cursor.
func TestSDKSubscriptionResumesAcrossHubRestart(t *testing.T) {
	s := startStack(t)
	secret := clientSecret(t, s, "ai-007")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := fedsync.New(fedsync.Config{BaseURL: s.EdgeURL("na"), ClientID: "ai-007", ClientSecret: secret})
	sub := c.Subscribe(ctx, fedsync.Filter{IDPrefix: "ai-007:sdk"}, fedsync.SubscribeOptions{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	waitType := func(want string) fedsync.Event {
		t.Helper()
		for ev := range sub.Events() {
			if ev.Type == want {
				return ev
			}
		}
		t.Fatalf("subscription ended before %s: %v", want, sub.Err())
		return fedsync.Event{}
	}
	waitType(fedsync.EventConnected)

	const n = 30
	push := func(i int) {
		if _, err := c.Push(ctx, fedsync.Delta{ID: "ai-007:sdk", DataType: "note", Patch: map[string]any{"i": i}, MessageID: fmt.Sprintf("sdk-%d", i)}); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	for i := 1; i <= n/2; i++ {
		push(i)
	}
	// Wait for a few before the hub goes.
	for got := 0; got < 3; {
		if waitType(fedsync.EventChange).Change != nil {
			got++
		}
	}
	if err := s.Kill("broadcaster-na"); err != nil {
		t.Fatal(err)
	}
	for i := n/2 + 1; i <= n; i++ {
		push(i) // validation is up: writes go on while the hub is down
	}
	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	if err := s.Restart(rctx, "broadcaster-na"); err != nil {
		t.Fatal(err)
	}
	rcancel()

	// Versions 4..n arrive exactly once, in order, across the reconnect.
	want, reconnects := int64(4), 0
	for want <= n {
		select {
		case ev, ok := <-sub.Events():
			if !ok {
				t.Fatalf("subscription ended: %v", sub.Err())
			}
			switch ev.Type {
			case fedsync.EventReconnecting:
				reconnects++
				t.Logf("reconnecting after %v in %s from %s", ev.Err, ev.Delay, ev.Cursor)
			case fedsync.EventConnected:
				t.Logf("connected at cursor %s", ev.Cursor)
			case fedsync.EventChange:
				if ev.Change.Version != want {
					t.Fatalf("got version %d, want %d (a gap or a duplicate across the reconnect)", ev.Change.Version, want)
				}
				want++
			}
		case <-ctx.Done():
			t.Fatalf("stuck at version %d", want)
		}
	}
	if reconnects == 0 {
		t.Fatal("the hub was restarted but the subscription never reconnected")
	}
	t.Logf("all %d versions, in order, after %d reconnect attempts", n, reconnects)
}

// TestSDKCacheHitRatioAndFreshness: a read-heavy agent with the L1 cache on
// reads 10 documents 2,000 times while it changes one of them every 100 reads.
// Its subscription keeps the cache fresh: after each change is delivered, Get
// returns that version (never an older one). Reports the hit ratio.
func TestSDKCacheHitRatioAndFreshness(t *testing.T) {
	s := startStack(t)
	secret := clientSecret(t, s, "ai-011")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := fedsync.New(fedsync.Config{BaseURL: s.EdgeURL("na"), ClientID: "ai-011", ClientSecret: secret})
	c.EnableCache(fedsync.CacheOptions{})
	sub := c.Subscribe(ctx, fedsync.Filter{IDPrefix: "ai-011:c"}, fedsync.SubscribeOptions{})
	next := func(id string, version int64) {
		t.Helper()
		for ev := range sub.Events() {
			if ev.Type == fedsync.EventChange && ev.Change.ID == id && ev.Change.Version >= version {
				return
			}
		}
		t.Fatalf("subscription ended: %v", sub.Err())
	}
	for ev := range sub.Events() {
		if ev.Type == fedsync.EventConnected {
			break
		}
	}
	versions := map[string]int64{}
	write := func(id string) {
		if _, err := c.Push(ctx, fedsync.Delta{ID: id, DataType: "note", Patch: map[string]any{"v": versions[id] + 1}}); err != nil {
			t.Fatal(err)
		}
		versions[id]++
		next(id, versions[id])
	}
	for i := range 10 {
		write(fmt.Sprintf("ai-011:c%d", i))
	}
	for r := range 2000 {
		id := fmt.Sprintf("ai-011:c%d", r%10)
		if r%100 == 99 {
			write(id)
		}
		st, err := c.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.Version < versions[id] {
			t.Fatalf("read %s at version %d after version %d was delivered", id, st.Version, versions[id])
		}
	}
	stats := c.CacheStats()
	t.Logf("L1 cache over 2,000 reads of 10 documents with 20 writes: hit ratio %.3f (%d hits, %d misses, %d entries, %d bytes)",
		stats.HitRatio(), stats.Hits, stats.Misses, stats.Entries, stats.Bytes)
	if stats.HitRatio() < 0.9 {
		t.Errorf("hit ratio %.3f", stats.HitRatio())
	}
}

// TestSimulatedAgentsOverTheSDK: make run's simulated agents (devstack
// RunAgents, built on the Go SDK) write every consistency mode, subscribe and
// heartbeat; over a few seconds they get their writes accepted and changes
// delivered, with no error but the strong writes' expected version conflicts.
func TestSimulatedAgentsOverTheSDK(t *testing.T) {
	s := startStack(t)
	ctx, cancel := context.WithCancel(context.Background())
	var st devstack.Stats
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.RunAgents(ctx, devstack.AgentOptions{Count: 6, Rate: 10, Heartbeat: time.Second}, &st)
	}()
	time.Sleep(8 * time.Second)
	accepted, delivered, p99, errs := st.Window()
	cancel()
	<-done
	t.Logf("6 agents, 8 s: %d accepted, %d delivered, p99 %s, errors %v", accepted, delivered, p99, errs)
	if accepted < 100 || delivered < accepted {
		t.Fatalf("%d accepted, %d delivered", accepted, delivered)
	}
	for code, n := range errs {
		if code != "409 version_conflict" {
			t.Errorf("%d errors %s", n, code)
		}
	}
}
