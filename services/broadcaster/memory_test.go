package broadcaster

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/coder/websocket/wsjson"

	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// heapAndStacks is the memory in use after a full collection.
func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// TestIdleSubscriptionsHoldNoBuffers measures 10,000 idle subscriptions. Each
// used to preallocate a 4,096-slot channel and run a goroutine: 101,568 bytes
// per subscription, about 1 GB for 10,000 (same measurement on the code before
// lazy queues). Now a subscription's queue exists only while changes wait.
func TestIdleSubscriptionsHoldNoBuffers(t *testing.T) {
	if raceEnabled {
		t.Skip("measures memory")
	}
	const n = 10_000
	svc := NewService(&memLog{}, DefaultOptions())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	before := heapAndStacks()
	subs := make([]*Subscription, 0, n)
	for i := range n {
		sub, err := svc.Subscribe(ctx, SubscribeRequest{Filter: Filter{IDPrefix: fmt.Sprintf("ai-%05d:", i)}})
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	after := heapAndStacks()
	each := int64(after-before) / n
	t.Logf("%d idle subscriptions: %d bytes, %d bytes each", n, after-before, each)
	if each > 2048 {
		t.Fatalf("an idle subscription holds %d bytes", each)
	}

	// A burst queues changes; once taken, the queues are freed again.
	for v := int64(1); v <= 200; v++ {
		svc.Publish(ctx, &fedsyncv1.Change{Seq: uint64(v), State: &fedsyncv1.State{Id: "ai-00007:doc", Version: v, Value: []byte(`{"a":1}`)}})
	}
	var buf []Event
	for len(buf) < 200 {
		buf = subs[7].Take(buf, 1000)
	}
	if subs[7].queue != nil {
		t.Fatalf("drained queue keeps %d slots", cap(subs[7].queue))
	}
	runtime.KeepAlive(subs)
}

// TestIdleWebSocketSubscriptionsHoldNoGoroutines measures 10,000 idle
// subscriptions on one WebSocket connection: no goroutine and no buffer per
// subscription on the server. Before lazy queues the same measurement gave
// 106,539 bytes and two goroutines per subscription.
func TestIdleWebSocketSubscriptionsHoldNoGoroutines(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("opens 10,000 subscriptions; measures memory")
	}
	const n = 10_000
	ts := newTestStream(t, &memLog{}, DefaultOptions())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, _ := ts.subscribe(t, ctx, map[string]any{"id_prefix": "warm-up"})
	goroutines := runtime.NumGoroutine()
	before := heapAndStacks()
	for i := 0; i < n; i += 50 {
		for j := i; j < i+50; j++ {
			if err := wsjson.Write(ctx, conn, map[string]any{"type": "subscribe", "id_prefix": fmt.Sprintf("ai-%05d:", j)}); err != nil {
				t.Fatal(err)
			}
		}
		for range 50 {
			if _, m := readFrame(t, ctx, conn); m["type"] != "subscribed" {
				t.Fatalf("got %v", m)
			}
		}
	}
	after := heapAndStacks()
	each := int64(after-before) / n
	extra := runtime.NumGoroutine() - goroutines
	t.Logf("%d idle WebSocket subscriptions on one connection: %d bytes, %d bytes each (server and client), %d more goroutines", n, after-before, each, extra)
	if extra > 10 {
		t.Fatalf("%d goroutines for %d subscriptions", extra, n)
	}
	if each > 4096 {
		t.Fatalf("an idle WebSocket subscription holds %d bytes", each)
	}
}

// TestIdleWebhooksMemory measures 1,000 idle webhooks: each holds its
// registration, a subscription and one delivering goroutine.
func TestIdleWebhooksMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("measures memory")
	}
	const n = 1000
	svc := NewService(&memLog{}, DefaultOptions())
	reg := NewRegistry(svc, log.NewNopLogger())
	reg.Policy = loopbackAllowed
	defer reg.Close()
	rc := newReceiver(t)
	ctx := context.Background()
	reg.Create(ctx, CreateRequest{IDPrefix: "warm-up", CallbackURL: rc.srv.URL, Owner: "o"})
	time.Sleep(50 * time.Millisecond)
	before := heapAndStacks()
	for i := range n {
		if _, err := reg.Create(ctx, CreateRequest{IDPrefix: fmt.Sprintf("ai-%05d:", i), CallbackURL: rc.srv.URL, Owner: "o"}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // the deliverers have subscribed
	after := heapAndStacks()
	each := int64(after-before) / n
	t.Logf("%d idle webhooks: %d bytes, %d bytes each", n, after-before, each)
	if each > 32<<10 {
		t.Fatalf("an idle webhook holds %d bytes", each)
	}
}
