package broadcaster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken/authtokentest"
	"github.com/fedsync/fedsync/libs/kafkabus"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// memLog is an in-memory commit log standing in for statestore's ReadLog.
type memLog struct {
	mu      sync.Mutex
	changes []*fedsyncv1.Change
	first   uint64 // lowest retained seq
	reads   int    // ReadLog calls
	fail    error  // when set, ReadLog fails with it
	docs    map[string]*fedsyncv1.State
}

// commit applies set and removed to id's latest version the way statestore
// does and logs the change whole (ReadLog returns whole documents). It returns
// the record fedsync.committed carries: without the document when omit is set.
func (l *memLog) commit(t testing.TB, id, set string, removed []string, omit bool) (logged, published *fedsyncv1.Change) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.docs == nil {
		l.docs = map[string]*fedsyncv1.State{}
	}
	prev := l.docs[id]
	var setb []byte
	if set != "" {
		setb = []byte(set)
	}
	value, err := applyChange(prev.GetValue(), setb, removed)
	if err != nil {
		t.Fatal(err)
	}
	st := &fedsyncv1.State{Id: id, DataType: "note", Version: prev.GetVersion() + 1, Value: value, UpdatedBy: "ai-001", UpdatedAt: int64(len(l.changes)+1) * 1e9}
	l.docs[id] = st
	logged = &fedsyncv1.Change{Seq: uint64(len(l.changes) + 1), State: st, Set: setb, Removed: removed}
	l.changes = append(l.changes, logged)
	published = logged
	if omit {
		published = proto.Clone(logged).(*fedsyncv1.Change)
		published.State.Value, published.ValueOmitted = nil, true
	}
	return logged, published
}

func (l *memLog) readCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reads
}

func (l *memLog) add(id string, version int64) *fedsyncv1.Change {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := &fedsyncv1.Change{Seq: uint64(len(l.changes) + 1), State: &fedsyncv1.State{Id: id, DataType: "note", Version: version, Value: []byte(fmt.Sprintf(`{"v":%d}`, version))}}
	l.changes = append(l.changes, c)
	return c
}

func (l *memLog) ReadLog(_ context.Context, after uint64, limit int) (*fedsyncv1.ReadLogResponse, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads++
	if l.fail != nil {
		return nil, l.fail
	}
	head := uint64(len(l.changes))
	if after < head && after+1 < l.first {
		return nil, apierr.New(apierr.CursorExpired, "too old")
	}
	resp := &fedsyncv1.ReadLogResponse{HeadSeq: head}
	for _, c := range l.changes {
		if c.Seq > after && len(resp.Changes) < limit {
			resp.Changes = append(resp.Changes, c)
		}
	}
	return resp, nil
}

func next(t *testing.T, sub *Subscription) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev, ok := sub.Next(ctx)
	if !ok {
		t.Fatalf("no event within 5s (subscription error %v)", sub.Err())
	}
	return ev
}

// nothingMore fails if sub delivers anything within a moment.
func nothingMore(t *testing.T, sub *Subscription) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if ev, ok := sub.Next(ctx); ok {
		t.Fatalf("unexpected event %v", ev.Change)
	}
}

func limits(changes int) Options { return Options{Limits: Limits{Changes: changes}} }

func TestLiveSubscriptionFiltersAndDeduplicates(t *testing.T) {
	lg := &memLog{}
	svc := NewService(lg, limits(64))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, _ := svc.Subscribe(ctx, SubscribeRequest{Filter: Filter{IDPrefix: "ai-001:"}})
	c1 := lg.add("ai-001:a", 1)
	lg.add("ai-002:a", 1)
	c3 := lg.add("ai-001:a", 2)
	for _, c := range lg.changes {
		svc.Publish(ctx, c)
	}
	svc.Publish(ctx, c1) // republished by statestore after a restart
	if ev := next(t, sub); ev.Change != c1 {
		t.Fatalf("first event %v", ev.Change)
	}
	if ev := next(t, sub); ev.Change != c3 {
		t.Fatalf("second event %v", ev.Change)
	}
	nothingMore(t, sub)
}

// TestResumeFromCursorHasNoGapOrDuplicate publishes live changes while a resumed
// subscription is still catching up from the log.
func TestResumeFromCursorHasNoGapOrDuplicate(t *testing.T) {
	lg := &memLog{}
	svc := NewService(lg, limits(1024))
	for v := 1; v <= 300; v++ {
		svc.Publish(context.Background(), lg.add("doc", int64(v)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := svc.Subscribe(ctx, SubscribeRequest{FromCursor: "100"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for v := 301; v <= 400; v++ {
			svc.Publish(context.Background(), lg.add("doc", int64(v)))
		}
	}()
	for want := int64(101); want <= 400; want++ {
		ev := next(t, sub)
		if ev.Change.State.Version != want {
			t.Fatalf("got version %d, want %d", ev.Change.State.Version, want)
		}
	}
}

func TestExpiredCursorSaysSnapshotRequired(t *testing.T) {
	lg := &memLog{first: 50}
	for v := 1; v <= 60; v++ {
		lg.add("doc", int64(v))
	}
	svc := NewService(lg, limits(64))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, _ := svc.Subscribe(ctx, SubscribeRequest{FromCursor: "3"})
	if ev := next(t, sub); ev.Type != "snapshot_required" {
		t.Fatalf("got %s, want snapshot_required", ev.Type)
	}
	if _, err := svc.Subscribe(ctx, SubscribeRequest{FromCursor: "abc"}); apierr.As(err).Code != apierr.InvalidArgument {
		t.Fatalf("bad cursor: %v", err)
	}
}

func TestSlowSubscriberIsDropped(t *testing.T) {
	lg := &memLog{}
	svc := NewService(lg, limits(16))
	sub, _ := svc.Subscribe(context.Background(), SubscribeRequest{})
	for v := 1; v <= 20; v++ {
		svc.Publish(context.Background(), lg.add("doc", int64(v)))
	}
	select {
	case <-sub.Done():
	case <-time.After(time.Second):
		t.Fatal("slow subscriber not dropped")
	}
	if sub.Err() != ErrTooSlow || sub.Cursor() != 16 {
		t.Fatalf("err %v cursor %d", sub.Err(), sub.Cursor())
	}
}

func TestWebSocketStream(t *testing.T) {
	iss := authtokentest.New(t)
	lg := &memLog{}
	svc := NewService(lg, limits(64))
	reg := NewRegistry(svc, log.NewNopLogger())
	eps := MakeEndpoints(reg, func(string) endpoint.Middleware { return func(e endpoint.Endpoint) endpoint.Endpoint { return e } })
	srv := httptest.NewServer(NewHTTPHandler(svc, reg, eps, iss.Verifier, HTTPOptions{
		PingInterval: time.Second, PingTimeout: time.Second, Logger: log.NewNopLogger(), Connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "c"}),
	}))
	defer srv.Close()
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/stream"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, resp, err := websocket.Dial(ctx, wsURL, nil); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("dial without token: %v", err)
	}
	conn, _, err := websocket.Dial(ctx, wsURL+"?access_token="+iss.Token(t, "ai-002", "L2"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	wsjson.Write(ctx, conn, map[string]any{"type": "bogus"})
	var msg map[string]any
	wsjson.Read(ctx, conn, &msg)
	if msg["type"] != "error" {
		t.Fatalf("bogus message answered with %v", msg)
	}
	wsjson.Write(ctx, conn, map[string]any{"type": "subscribe", "id_prefix": "ai-001:"})
	wsjson.Read(ctx, conn, &msg)
	if msg["type"] != "subscribed" || msg["subscription_id"] == "" {
		t.Fatalf("subscribe answered with %v", msg)
	}
	svc.Publish(ctx, lg.add("ai-001:x", 1))
	svc.Publish(ctx, lg.add("ai-003:x", 1))
	svc.Publish(ctx, lg.add("ai-001:x", 2))
	for want := 1; want <= 2; want++ {
		var ch map[string]any
		if err := wsjson.Read(ctx, conn, &ch); err != nil {
			t.Fatal(err)
		}
		if ch["type"] != "change" || ch["id"] != "ai-001:x" || ch["version"] != float64(want) || ch["cursor"] == "" {
			t.Fatalf("change %d: %v", want, ch)
		}
		if v, _ := ch["value"].(map[string]any); v["v"] != float64(want) {
			t.Fatalf("value %v", ch["value"])
		}
	}
}

// TestGapsAreFilledFromCommitLog: changes Kafka did not deliver (a consumer that
// joined late) reach subscribers from the commit log, in order.
func TestGapsAreFilledFromCommitLog(t *testing.T) {
	lg := &memLog{}
	svc := NewService(lg, limits(64))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lg.add("doc", 1)
	if err := svc.Sync(ctx); err != nil { // start-up: head = 1
		t.Fatal(err)
	}
	sub, _ := svc.Subscribe(ctx, SubscribeRequest{})
	for v := 2; v <= 5; v++ {
		lg.add("doc", int64(v))
	}
	svc.Publish(ctx, lg.changes[4]) // Kafka delivers only version 5
	for want := int64(2); want <= 5; want++ {
		if ev := next(t, sub); ev.Change.State.Version != want {
			t.Fatalf("got version %d, want %d", ev.Change.State.Version, want)
		}
	}
	lg.add("doc", 6) // Kafka delivers nothing: the periodic sync finds it,
	// once Kafka has had an interval to bring it.
	if err := svc.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	nothingMore(t, sub)
	if err := svc.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, sub); ev.Change.State.Version != 6 {
		t.Fatalf("anti-entropy delivered version %d", ev.Change.State.Version)
	}
}

// TestSlowSubscriberIsDroppedAtTheByteBound: the queue is bounded by bytes as
// well as by changes; whichever comes first drops the subscriber, at the cursor
// of the last change queued.
func TestSlowSubscriberIsDroppedAtTheByteBound(t *testing.T) {
	lg := &memLog{}
	svc := NewService(lg, Options{Limits: Limits{Changes: 4096, Bytes: 64 << 10}})
	ctx := context.Background()
	sub, _ := svc.Subscribe(ctx, SubscribeRequest{})
	delta, _ := svc.Subscribe(ctx, SubscribeRequest{Events: EventsDelta})
	value := fmt.Sprintf(`{"blob":%q}`, strings.Repeat("b", 10<<10))
	for i := 1; i <= 20; i++ {
		_, c := lg.commit(t, "doc", fmt.Sprintf(`{"n":%d}`, i), nil, false)
		c.State.Value = []byte(value)
		svc.Publish(ctx, c)
	}
	select {
	case <-sub.Done():
	case <-time.After(time.Second):
		t.Fatal("slow full subscriber not dropped")
	}
	// ~10 KiB per change: 6 fit in 64 KiB.
	if sub.Err() != ErrTooSlow || sub.Cursor() != 6 {
		t.Fatalf("err %v cursor %d", sub.Err(), sub.Cursor())
	}
	// Its queued changes can still be taken, then it reports the end.
	for want := uint64(1); want <= 6; want++ {
		if ev := next(t, sub); ev.Change.GetSeq() != want {
			t.Fatalf("got seq %d, want %d", ev.Change.GetSeq(), want)
		}
	}
	if _, ok := sub.Next(ctx); ok {
		t.Fatal("event after the end")
	}
	// The delta subscriber's changes are small: it is still there.
	select {
	case <-delta.Done():
		t.Fatalf("delta subscriber dropped: %v", delta.Err())
	default:
	}
}

// TestBatchFromKafka: records of fedsync.committed are decoded per batch,
// undecodable ones skipped, repeats dropped and a gap in the middle of a batch
// filled from the commit log, all in log order.
func TestBatchFromKafka(t *testing.T) {
	lg := &memLog{}
	svc := NewService(lg, limits(64))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := svc.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	sub, _ := svc.Subscribe(ctx, SubscribeRequest{})
	record := func(c *fedsyncv1.Change) kafkabus.Message {
		payload, _ := proto.Marshal(c)
		env, _ := proto.Marshal(&fedsyncv1.SyncMessage{Type: fedsyncv1.MessageType_EVENT, Payload: payload})
		return kafkabus.Message{Value: env}
	}
	var cs []*fedsyncv1.Change
	for v := int64(1); v <= 6; v++ {
		cs = append(cs, lg.add("doc", v))
	}
	h := kafkaHandler(svc, log.NewNopLogger())
	// 3 and 4 never come from Kafka; 1 comes twice; one record is garbage.
	batch := []kafkabus.Message{record(cs[0]), record(cs[1]), {Value: []byte("garbage")}, record(cs[0]), record(cs[4]), record(cs[5])}
	if err := h(ctx, batch); err != nil {
		t.Fatal(err)
	}
	for want := int64(1); want <= 6; want++ {
		if ev := next(t, sub); ev.Change.GetState().GetVersion() != want {
			t.Fatalf("got version %d, want %d", ev.Change.GetState().GetVersion(), want)
		}
	}
	nothingMore(t, sub)
}

// TestWebhookDelta: a registered webhook subscription with events delta posts
// delta change messages carrying its subscription id.
func TestWebhookDelta(t *testing.T) {
	lg := &memLog{}
	svc := NewService(lg, Options{})
	got := make(chan map[string]any, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		json.NewDecoder(r.Body).Decode(&m)
		got <- m
	}))
	defer hook.Close()
	reg := NewRegistry(svc, log.NewNopLogger())
	reg.Policy = loopbackAllowed
	if _, err := reg.Create(context.Background(), CreateRequest{CallbackURL: hook.URL, Events: "partial"}); apierr.As(err).Code != apierr.InvalidArgument {
		t.Fatalf("events partial: %v", err)
	}
	resp, err := reg.Create(context.Background(), CreateRequest{IDPrefix: "doc", CallbackURL: hook.URL, Events: EventsDelta})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Delete(context.Background(), resp.SubscriptionID, "")
	_, c := lg.commit(t, "doc", `{"a":1}`, nil, false)
	svc.Publish(context.Background(), c)
	select {
	case m := <-got:
		if m["type"] != "change" || m["subscription_id"] != resp.SubscriptionID || m["set"] == nil || m["value"] != nil {
			t.Fatalf("webhook got %v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("webhook not called")
	}
}

// TestIndexMatchesLikeAScan: the prefix index finds exactly the subscriptions a
// look at every filter finds, while subscriptions come and go.
func TestIndexMatchesLikeAScan(t *testing.T) {
	x := newSubIndex()
	prefixes := []string{"", "a", "ab", "ab:", "b", "abc", "zz"}
	var live []*Subscription
	for i := range 300 {
		sub := &Subscription{ID: fmt.Sprint(i), Filter: Filter{IDPrefix: prefixes[i%len(prefixes)]}}
		if i%5 == 0 {
			sub.Filter.DataTypes = []string{"task"}
		}
		x.add(sub)
		live = append(live, sub)
		if i%3 == 0 { // remove an earlier one
			j := (i * 7) % len(live)
			x.remove(live[j])
			live = append(live[:j], live[j+1:]...)
		}
	}
	for _, id := range []string{"a", "ab", "ab:1", "abc", "b", "c", "zz", "z", ""} {
		for _, dt := range []string{"note", "task"} {
			st := &fedsyncv1.State{Id: id, DataType: dt}
			got := map[string]bool{}
			for _, sub := range x.match(st, nil) {
				if got[sub.ID] {
					t.Fatalf("%s matched twice", sub.ID)
				}
				got[sub.ID] = true
			}
			want := 0
			for _, sub := range live {
				if sub.Filter.match(st) {
					want++
					if !got[sub.ID] {
						t.Fatalf("id %q (%s): subscription %s (prefix %q) not found", id, dt, sub.ID, sub.Filter.IDPrefix)
					}
				}
			}
			if want != len(got) {
				t.Fatalf("id %q: %d matches, want %d", id, len(got), want)
			}
		}
	}
	for _, sub := range live {
		x.remove(sub)
	}
	if len(x.buckets) != 0 || len(x.sorted) != 0 {
		t.Fatalf("empty index keeps %d buckets, lengths %v", len(x.buckets), x.sorted)
	}
}
