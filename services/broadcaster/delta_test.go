package broadcaster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken/authtokentest"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// testStream serves the broadcaster's HTTP API over a test server.
type testStream struct {
	svc *service
	lg  *memLog
	iss *authtokentest.Issuer
	url string
}

func newTestStream(t *testing.T, lg *memLog, o Options) *testStream {
	return newTestStreamWith(t, lg, o, nil)
}

// newTestStreamWith is newTestStream with the HTTP options changed by tune.
func newTestStreamWith(t *testing.T, lg *memLog, o Options, tune func(*HTTPOptions)) *testStream {
	t.Helper()
	iss := authtokentest.New(t)
	svc := NewService(lg, o)
	reg := NewRegistry(svc, log.NewNopLogger())
	eps := MakeEndpoints(reg, func(string) endpoint.Middleware { return func(e endpoint.Endpoint) endpoint.Endpoint { return e } })
	ho := HTTPOptions{
		PingInterval: 20 * time.Second, PingTimeout: 20 * time.Second, Logger: log.NewNopLogger(), Connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "c"}),
	}
	if tune != nil {
		tune(&ho)
	}
	srv := httptest.NewServer(NewHTTPHandler(svc, reg, eps, iss.Verifier, ho))
	t.Cleanup(srv.Close)
	return &testStream{svc: svc, lg: lg, iss: iss, url: srv.URL}
}

// wsURL is the stream's address with a token of subject at level.
func (ts *testStream) wsURL(t *testing.T, subject, level string) string {
	return "ws" + strings.TrimPrefix(ts.url, "http") + "/stream?access_token=" + ts.iss.Token(t, subject, level)
}

// grpcClient serves svc's BroadcasterService as the service does (shared-frame
// codec, token interceptor) over an in-memory listener and returns a client.
func grpcClient(t *testing.T, svc Service, iss *authtokentest.Issuer) fedsyncv1.BroadcasterServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(append(GRPCServerOptions(), grpc.ChainStreamInterceptor(iss.Verifier.StreamServerInterceptor()))...)
	fedsyncv1.RegisterBroadcasterServiceServer(srv, NewGRPCServer(svc, iss.Verifier, prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return fedsyncv1.NewBroadcasterServiceClient(cc)
}

// subscribe opens a connection as an L3 reader (reads everything) and sends msg;
// it returns the connection after the "subscribed" answer.
func (ts *testStream) subscribe(t *testing.T, ctx context.Context, msg map[string]any) (*websocket.Conn, map[string]any) {
	t.Helper()
	wsURL := "ws" + strings.TrimPrefix(ts.url, "http") + "/stream?access_token=" + ts.iss.Token(t, "coordinator", "L3")
	conn, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadLimit(16 << 20)
	t.Cleanup(func() { conn.CloseNow() })
	msg["type"] = "subscribe"
	if err := wsjson.Write(ctx, conn, msg); err != nil {
		t.Fatal(err)
	}
	_, m := readFrame(t, ctx, conn)
	if m["type"] != "subscribed" {
		t.Fatalf("subscribe %v answered with %v", msg, m)
	}
	return conn, m
}

func readFrame(t *testing.T, ctx context.Context, conn *websocket.Conn) ([]byte, map[string]any) {
	t.Helper()
	_, data, err := conn.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("frame %q: %v", data, err)
	}
	return data, m
}

// withoutSubscriptionID is a change frame minus its subscription's own part:
// what every subscription of the same form shares.
func withoutSubscriptionID(t *testing.T, frame []byte) []byte {
	t.Helper()
	i := bytes.Index(frame, []byte(`"id":`))
	if i < 0 {
		t.Fatalf("frame without id: %s", frame)
	}
	return frame[i:]
}

func TestDeltaEventsOverWebSocket(t *testing.T) {
	lg := &memLog{}
	ts := newTestStream(t, lg, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// An events value other than full or delta is the contract's invalid_argument.
	conn, _ := ts.subscribe(t, ctx, map[string]any{"id_prefix": "ai-009:"})
	wsjson.Write(ctx, conn, map[string]any{"type": "subscribe", "events": "patch"})
	if _, m := readFrame(t, ctx, conn); m["type"] != "error" || m["error"].(map[string]any)["code"] != "invalid_argument" ||
		!strings.Contains(m["error"].(map[string]any)["message"].(string), "events") {
		t.Fatalf("events patch answered with %v", m)
	}

	delta, sub := ts.subscribe(t, ctx, map[string]any{"id_prefix": "ai-001:", "events": "delta"})
	full, _ := ts.subscribe(t, ctx, map[string]any{"id_prefix": "ai-001:", "events": "full"})
	_, c1 := lg.commit(t, "ai-001:doc", `{"a":1,"b":"x"}`, nil, false)
	_, c2 := lg.commit(t, "ai-001:doc", `{"c":true}`, []string{"a"}, false)
	ts.svc.PublishBatch(ctx, []*fedsyncv1.Change{c1, c2})

	want := []struct{ set, removed, value string }{
		{`{"a":1,"b":"x"}`, `[]`, `{"a":1,"b":"x"}`},
		{`{"c":true}`, `["a"]`, `{"b":"x","c":true}`},
	}
	for i, w := range want {
		raw, m := readFrame(t, ctx, delta)
		if m["type"] != "change" || m["subscription_id"] != sub["subscription_id"] || m["id"] != "ai-001:doc" || m["version"] != float64(i+1) ||
			m["data_type"] != "note" || m["updated_by"] != "ai-001" || m["cursor"] != FormatCursor(uint64(i+1)) || m["updated_at"] == nil {
			t.Fatalf("delta change %d: %s", i+1, raw)
		}
		if _, ok := m["value"]; ok {
			t.Fatalf("delta change carries value: %s", raw)
		}
		if s, _ := json.Marshal(m["set"]); string(s) != w.set {
			t.Fatalf("delta change %d set %s, want %s", i+1, s, w.set)
		}
		if r, _ := json.Marshal(m["removed"]); string(r) != w.removed {
			t.Fatalf("delta change %d removed %s, want %s", i+1, r, w.removed)
		}
		raw, m = readFrame(t, ctx, full)
		if v, _ := json.Marshal(m["value"]); string(v) != w.value {
			t.Fatalf("full change %d value %s, want %s", i+1, v, w.value)
		}
		if _, ok := m["set"]; ok {
			t.Fatalf("full change carries set: %s", raw)
		}
	}
}

// TestLargeDocumentPatchCostsDeltaSubscriberThePatch: a 1 MiB document changed
// by ~100-byte patches whose records leave the document out. A delta subscriber
// gets ~100 bytes of message per change, and the hub neither reads the document
// nor allocates anything near its size for it; a full subscriber gets the whole
// document, rebuilt from the cache after one read of the log.
func TestLargeDocumentPatchCostsDeltaSubscriberThePatch(t *testing.T) {
	lg := &memLog{}
	ts := newTestStream(t, lg, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	blob := strings.Repeat("x", 1<<20)
	lg.commit(t, "ai-001:big", fmt.Sprintf(`{"blob":%q}`, blob), nil, false)
	patch := func(i int) string { return fmt.Sprintf(`{"note":"patch %03d %s"}`, i, strings.Repeat("p", 80)) }
	if n := len(patch(0)); n < 95 || n > 105 {
		t.Fatalf("patch of %d bytes", n)
	}

	// Delta subscriber alone: no read of the log, ~patch-sized frames, and
	// allocations far below the document's size.
	delta, _ := ts.subscribe(t, ctx, map[string]any{"id_prefix": "ai-001:", "events": "delta"})
	const n = 20
	published := make([]*fedsyncv1.Change, n)
	for i := range published {
		_, published[i] = lg.commit(t, "ai-001:big", patch(i), nil, true)
	}
	reads := lg.readCount()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, c := range published {
		ts.svc.Publish(ctx, c)
	}
	total := 0
	for i := range n {
		raw, m := readFrame(t, ctx, delta)
		total += len(raw)
		if s, _ := json.Marshal(m["set"]); string(s) != patch(i) {
			t.Fatalf("change %d set %s", i, s)
		}
	}
	runtime.ReadMemStats(&after)
	perChange := total / n
	allocPerChange := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("1 MiB document, %d-byte patch: delta subscriber receives %d bytes per change; hub and connection allocate %d bytes per change",
		len(patch(0)), perChange, allocPerChange)
	if perChange > 400 {
		t.Fatalf("delta subscriber receives %d bytes per change of a %d-byte patch", perChange, len(patch(0)))
	}
	if allocPerChange > 64<<10 {
		t.Fatalf("%d bytes allocated per change for a delta subscriber", allocPerChange)
	}
	if got := lg.readCount(); got != reads {
		t.Fatalf("%d log reads for a delta subscriber", got-reads)
	}

	// A full subscriber joins: the first change without a cached previous
	// version reads the document from the log, the next ones rebuild it.
	full, _ := ts.subscribe(t, ctx, map[string]any{"id_prefix": "ai-001:"})
	for i := n; i < n+3; i++ {
		logged, pub := lg.commit(t, "ai-001:big", patch(i), nil, true)
		ts.svc.Publish(ctx, pub)
		raw, m := readFrame(t, ctx, full)
		v, _ := json.Marshal(m["value"])
		if !bytes.Equal(v, logged.GetState().GetValue()) {
			t.Fatalf("full change %d: value of %d bytes differs from the stored document (%d bytes)", i, len(v), len(logged.GetState().GetValue()))
		}
		if len(raw) < 1<<20 {
			t.Fatalf("full frame of %d bytes", len(raw))
		}
		if _, m := readFrame(t, ctx, delta); m["version"] != float64(logged.GetState().GetVersion()) {
			t.Fatalf("delta subscriber got %v", m)
		}
	}
	if got := lg.readCount() - reads; got != 1 {
		t.Fatalf("%d log reads for 3 changes, want 1 (then rebuilt from the cache)", got)
	}
	if ts.svc.valueRebuilds.Load() != 2 {
		t.Fatalf("%d documents rebuilt, want 2", ts.svc.valueRebuilds.Load())
	}
}

// TestResumeReplaysTheFramesLiveDelivered: a subscriber that resumes from a
// cursor (replay from the log, whole documents) receives byte for byte the
// change messages a live subscriber of the same form received (records that
// left the document out), for both forms.
func TestResumeReplaysTheFramesLiveDelivered(t *testing.T) {
	lg := &memLog{}
	ts := newTestStream(t, lg, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	liveFull, _ := ts.subscribe(t, ctx, map[string]any{"id_prefix": "ai-001:"})
	liveDelta, _ := ts.subscribe(t, ctx, map[string]any{"id_prefix": "ai-001:", "events": "delta"})
	var published []*fedsyncv1.Change
	big := strings.Repeat("y", 300<<10)
	steps := []struct {
		id, set string
		removed []string
		omit    bool
	}{
		{"ai-001:a", `{"x":1,"y":[1,2]}`, nil, false},
		{"ai-001:big", fmt.Sprintf(`{"blob":%q,"k":1}`, big), nil, true},
		{"ai-001:a", `{"z":"<&>"}`, []string{"x"}, false},
		{"ai-001:big", `{"k":2}`, nil, true},
		{"ai-001:big", "", []string{"k"}, true},
		{"ai-002:other", `{"q":1}`, nil, false},
		{"ai-001:big", `{"k":3,"m":{"n":null}}`, nil, true},
	}
	for _, s := range steps {
		_, p := lg.commit(t, s.id, s.set, s.removed, s.omit)
		published = append(published, p)
	}
	ts.svc.PublishBatch(ctx, published)
	const matching = 6
	read := func(conn *websocket.Conn) [][]byte {
		var out [][]byte
		for range matching {
			raw, _ := readFrame(t, ctx, conn)
			out = append(out, withoutSubscriptionID(t, raw))
		}
		return out
	}
	wantFull, wantDelta := read(liveFull), read(liveDelta)
	resumedFull, _ := ts.subscribe(t, ctx, map[string]any{"id_prefix": "ai-001:", "from_cursor": "0"})
	resumedDelta, _ := ts.subscribe(t, ctx, map[string]any{"id_prefix": "ai-001:", "from_cursor": "0", "events": "delta"})
	for form, pair := range map[string][2][][]byte{"full": {wantFull, read(resumedFull)}, "delta": {wantDelta, read(resumedDelta)}} {
		for i := range pair[0] {
			if !bytes.Equal(pair[0][i], pair[1][i]) {
				t.Errorf("%s change %d: live %.200s, replayed %.200s", form, i+1, pair[0][i], pair[1][i])
			}
		}
	}
}

// TestChangeWithoutSetOrRemoved: a change committed before statestore recorded
// set and removed (whole document only) reaches a delta subscriber as the diff
// against the previous version when the hub caches it (the document has a full
// subscriber), else as set = the whole document.
func TestChangeWithoutSetOrRemoved(t *testing.T) {
	lg := &memLog{}
	svc := NewService(lg, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	old := func(seq uint64, id string, version int64, value string) *fedsyncv1.Change {
		return &fedsyncv1.Change{Seq: seq, State: &fedsyncv1.State{Id: id, DataType: "note", Version: version, Value: []byte(value)}}
	}
	delta, _ := svc.Subscribe(ctx, SubscribeRequest{Events: EventsDelta})
	full, _ := svc.Subscribe(ctx, SubscribeRequest{Filter: Filter{IDPrefix: "followed"}})
	svc.PublishBatch(ctx, []*fedsyncv1.Change{
		old(1, "followed", 1, `{"a":1,"b":2}`),
		old(2, "followed", 2, `{"a":1,"c":3}`),
		old(3, "alone", 1, `{"a":1}`),
		old(4, "alone", 2, `{"a":2}`),
	})
	want := []string{
		`"set":{"a":1,"b":2},"removed":[]`,
		`"set":{"c":3},"removed":["b"]`,
		`"set":{"a":1},"removed":[]`,
		`"set":{"a":2},"removed":[]`,
	}
	for i, w := range want {
		ev := next(t, delta)
		if got := string(ev.frame.json(true)); !strings.Contains(got, w) {
			t.Fatalf("change %d: %s, want %s", i+1, got, w)
		}
	}
	next(t, full)
	next(t, full)
}

// TestFrameEncodedOnceForAllSubscribers: subscriptions of one form share the
// frame and its encoded bytes (the same memory), in both wire formats.
func TestFrameEncodedOnceForAllSubscribers(t *testing.T) {
	lg := &memLog{}
	svc := NewService(lg, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var fulls, deltas []*Subscription
	for range 3 {
		s, _ := svc.Subscribe(ctx, SubscribeRequest{})
		fulls = append(fulls, s)
		d, _ := svc.Subscribe(ctx, SubscribeRequest{Events: EventsDelta})
		deltas = append(deltas, d)
	}
	_, c := lg.commit(t, "doc", `{"a":1}`, nil, false)
	svc.Publish(ctx, c)
	check := func(subs []*Subscription, delta bool) {
		var first Event
		for i, s := range subs {
			ev := next(t, s)
			if i == 0 {
				first = ev
				continue
			}
			if ev.frame != first.frame || &ev.frame.json(delta)[0] != &first.frame.json(delta)[0] || &ev.frame.proto(delta)[0] != &first.frame.proto(delta)[0] {
				t.Fatalf("subscription %d got its own frame or encoding", i)
			}
		}
	}
	check(fulls, false)
	check(deltas, true)
}

// TestUnreadableDocumentEndsFullSubscribersOnly: when a change comes without
// its document, the cache cannot rebuild it and the log cannot be read, full
// subscribers end with unavailable and their cursor (they resume later); delta
// subscribers carry on.
func TestUnreadableDocumentEndsFullSubscribersOnly(t *testing.T) {
	lg := &memLog{}
	svc := NewService(lg, Options{ValueReadTimeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, c1 := lg.commit(t, "doc", `{"a":1}`, nil, false)
	_, c2 := lg.commit(t, "doc", `{"b":1}`, nil, true)
	_, c3 := lg.commit(t, "doc", `{"c":1}`, nil, true)
	svc.Publish(ctx, c1)
	full, _ := svc.Subscribe(ctx, SubscribeRequest{})
	delta, _ := svc.Subscribe(ctx, SubscribeRequest{Events: EventsDelta})
	lg.mu.Lock()
	lg.fail = apierr.New(apierr.Unavailable, "statestore down")
	lg.mu.Unlock()
	svc.Publish(ctx, c3) // version 2 never arrived: no cached version 2
	svc.Publish(ctx, c2) // (already past: dropped as a repeat)
	select {
	case <-full.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("full subscriber not ended")
	}
	if !errors.Is(full.Err(), ErrValueUnavailable) || full.Cursor() != 1 {
		t.Fatalf("full subscriber ended with %v at cursor %d", full.Err(), full.Cursor())
	}
	if ev := next(t, delta); ev.Change.GetSeq() != 3 {
		t.Fatalf("delta subscriber got seq %d", ev.Change.GetSeq())
	}
}

func TestDocCacheEvictsLeastRecentlyUsedByBytes(t *testing.T) {
	c := newDocCache(3 * (100 + cachedDocOverhead + 1))
	v := bytes.Repeat([]byte("v"), 100)
	c.put("a", 1, v)
	c.put("b", 1, v)
	c.put("c", 1, v)
	if _, ok := c.get("a", 1); !ok { // a is now the most recently used
		t.Fatal("a not cached")
	}
	c.put("d", 1, v) // evicts b
	if _, ok := c.get("b", 1); ok {
		t.Fatal("b not evicted")
	}
	for _, id := range []string{"a", "c", "d"} {
		if _, ok := c.get(id, 1); !ok {
			t.Fatalf("%s evicted", id)
		}
	}
	if _, ok := c.get("a", 2); ok {
		t.Fatal("wrong version returned")
	}
	c.put("huge", 1, bytes.Repeat([]byte("h"), 10_000))
	if _, ok := c.get("huge", 1); ok || c.bytes() > c.max {
		t.Fatalf("a document larger than the cache was kept (%d bytes held)", c.bytes())
	}
	c.drop("a")
	if _, ok := c.get("a", 1); ok {
		t.Fatal("dropped document still cached")
	}
}

// TestSlowWebSocketSubscriberGetsCursorAndClose keeps the policy for a
// subscriber that falls behind: the changes queued before are written, then an
// unavailable error with the cursor of the last of them, then close 1013.
func TestSlowWebSocketSubscriberGetsCursorAndClose(t *testing.T) {
	lg := &memLog{}
	ts := newTestStream(t, lg, Options{Limits: Limits{Changes: 16, Bytes: 1 << 20}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, _ := ts.subscribe(t, ctx, map[string]any{"id_prefix": "ai-001:"})
	value := fmt.Sprintf(`{"blob":%q}`, strings.Repeat("s", 64<<10))
	// The client reads nothing while ~25 MiB are published: the socket's
	// buffers fill, the writer blocks, the queue overflows.
	for i := 0; i < 400; i++ {
		_, c := lg.commit(t, "ai-001:doc", `{"n":1}`, nil, false)
		c.State.Value = []byte(value)
		ts.svc.Publish(ctx, c)
	}
	last := ""
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusTryAgainLater {
				t.Fatalf("closed with %v, want 1013", err)
			}
			t.Fatal("closed without the error message")
		}
		var m map[string]any
		json.Unmarshal(data, &m)
		if m["type"] == "change" {
			last = m["cursor"].(string)
			continue
		}
		e, _ := m["error"].(map[string]any)
		if m["type"] != "error" || e["code"] != "unavailable" || e["cursor"] != last || last == "" || last == "400" {
			t.Fatalf("after cursor %s got %v", last, m)
		}
		break
	}
	_, _, err := conn.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusTryAgainLater {
		t.Fatalf("closed with %v, want 1013", err)
	}
}

// TestFullChangeMessageKeepsItsShape: the spliced message of a full
// subscription is byte for byte what marshalling the whole message gives, in
// the field order contract v1's clients have always received.
func TestFullChangeMessageKeepsItsShape(t *testing.T) {
	type changeMessage struct {
		Type           string          `json:"type"`
		SubscriptionID string          `json:"subscription_id,omitempty"`
		ID             string          `json:"id"`
		DataType       string          `json:"data_type"`
		Version        int64           `json:"version"`
		Value          json.RawMessage `json:"value"`
		UpdatedBy      string          `json:"updated_by"`
		UpdatedAt      string          `json:"updated_at"`
		Cursor         string          `json:"cursor"`
	}
	c := &fedsyncv1.Change{Seq: 42, State: &fedsyncv1.State{Id: "ai-001:x", DataType: "note", Version: 3, Value: []byte(`{"a":"<b>","n":[1,2]}`),
		UpdatedBy: "ai-001", UpdatedAt: 1_700_000_000_123_456_789}}
	f := &frame{change: c, value: c.State.Value}
	for _, subID := range []string{"01JSUBSCRIPTION", ""} {
		want, _ := json.Marshal(changeMessage{Type: "change", SubscriptionID: subID, ID: "ai-001:x", DataType: "note", Version: 3,
			Value: c.State.Value, UpdatedBy: "ai-001", UpdatedAt: "2023-11-14T22:13:20.123456789Z", Cursor: "42"})
		head, body := eventJSON(jsonChangePrefix(subID), subID, false, Event{Type: "change", Change: c, frame: f})
		if got := string(head) + string(body); got != string(want) {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	}
}

// TestChangeOmittedIsReadFromTheLog: a change too large for a record even
// without its document arrives with neither (change_omitted); full and delta
// subscribers both get it whole from the log. When the log cannot be read
// either, both kinds end with their cursor instead of receiving an empty change.
func TestChangeOmittedIsReadFromTheLog(t *testing.T) {
	lg := &memLog{}
	svc := NewService(lg, Options{ValueReadTimeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	full, _ := svc.Subscribe(ctx, SubscribeRequest{})
	delta, _ := svc.Subscribe(ctx, SubscribeRequest{Events: EventsDelta})
	omit := func(c *fedsyncv1.Change) *fedsyncv1.Change {
		c.State.Value, c.ValueOmitted, c.Set, c.Removed, c.ChangeOmitted = nil, true, nil, nil, true
		return c
	}
	_, c1 := lg.commit(t, "doc", `{"a":1,"b":2}`, nil, true)
	svc.Publish(ctx, omit(c1))
	if ev := next(t, full); !strings.Contains(string(ev.frame.json(false)), `"value":{"a":1,"b":2}`) {
		t.Fatalf("full subscriber got %s", ev.frame.json(false))
	}
	if ev := next(t, delta); !strings.Contains(string(ev.frame.json(true)), `"set":{"a":1,"b":2}`) {
		t.Fatalf("delta subscriber got %s", ev.frame.json(true))
	}
	lg.mu.Lock()
	lg.fail = apierr.New(apierr.Unavailable, "statestore down")
	lg.mu.Unlock()
	_, c2 := lg.commit(t, "doc", `{"c":3}`, nil, true)
	svc.Publish(ctx, omit(c2))
	for _, sub := range []*Subscription{full, delta} {
		select {
		case <-sub.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("subscriber not ended")
		}
		if !errors.Is(sub.Err(), ErrValueUnavailable) || sub.Cursor() != 1 {
			t.Fatalf("ended with %v at cursor %d", sub.Err(), sub.Cursor())
		}
	}
}

// TestSplicedLargeDocumentIsTheSameMessage: a large canonical document or set
// spliced into the message gives exactly the bytes encoding/json gives, also
// with an id that spells the spliced field's key.
func TestSplicedLargeDocumentIsTheSameMessage(t *testing.T) {
	big := `{"a":"` + strings.Repeat("x", 5000) + `","b":[1,2,3],"c":{"d":"e f"}}`
	for _, id := range []string{"doc", `tricky,"value":0,"updated_by":`, `t2,"set":0,"removed":`} {
		c := &fedsyncv1.Change{Seq: 7, State: &fedsyncv1.State{Id: id, DataType: "note", Version: 3, Value: []byte(big), UpdatedBy: "ai-1", UpdatedAt: 1e9}}
		f := &frame{change: c, value: []byte(big), set: []byte(big), removed: []string{"z"}}
		at := time.Unix(0, 1e9).UTC().Format(time.RFC3339Nano)
		wantFull, _ := json.Marshal(fullBody{ID: id, DataType: "note", Version: 3, Value: json.RawMessage(big), UpdatedBy: "ai-1", UpdatedAt: at, Cursor: FormatCursor(7)})
		wantDelta, _ := json.Marshal(deltaBody{ID: id, DataType: "note", Version: 3, Set: json.RawMessage(big), Removed: []string{"z"}, UpdatedBy: "ai-1", UpdatedAt: at, Cursor: FormatCursor(7)})
		if got := f.json(false); string(got) != string(wantFull[1:]) {
			t.Errorf("%s full: %.120s\nwant %.120s", id, got, wantFull[1:])
		}
		if got := f.json(true); string(got) != string(wantDelta[1:]) {
			t.Errorf("%s delta: %.120s\nwant %.120s", id, got, wantDelta[1:])
		}
	}
}
