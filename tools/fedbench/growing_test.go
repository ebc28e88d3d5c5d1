package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestGrowingPreset(t *testing.T) {
	g := presets()["growing"]
	if ids := g.ids(); len(ids) != 8 || ids[0] != "ai-001:k0" || ids[7] != "ai-008:k0" {
		t.Fatalf("growing ids = %q", ids)
	}
	if g.DocBytes != 1<<20 || g.ValueSize != 100 || g.Events != "both" {
		t.Fatalf("growing = %+v", g)
	}
	ev := g.subscriberEvents()
	if strings.Join(ev, ",") != "full,delta,full,delta" {
		t.Fatalf("subscriber events = %q", ev)
	}
	for _, e := range (Scenario{Subscribers: 3}).subscriberEvents() {
		if e != "full" {
			t.Fatalf("default events = %q", e)
		}
	}
	for _, e := range (Scenario{Subscribers: 3, Events: "delta"}).subscriberEvents() {
		if e != "delta" {
			t.Fatalf("delta events = %q", e)
		}
	}
}

func TestDocChunks(t *testing.T) {
	chunks := docChunks(1 << 20)
	if len(chunks) != 16 {
		t.Fatalf("%d chunks, want 16 of 64 fields", len(chunks))
	}
	total, fields := 0, map[string]bool{}
	for i, c := range chunks {
		var m map[string]string
		if err := json.Unmarshal(c, &m); err != nil {
			t.Fatalf("chunk %d is not a JSON object of strings: %v", i, err)
		}
		if len(m) != docChunk || len(c) >= 1<<20-4096 {
			t.Fatalf("chunk %d: %d fields, %d bytes", i, len(m), len(c))
		}
		for k, v := range m {
			if fields[k] || len(v) != docField-11 || k == "fb" {
				t.Fatalf("field %q (value %d bytes) repeated or of the wrong size", k, len(v))
			}
			fields[k] = true
		}
		total += len(c)
	}
	// The fields add up to the document's size (one comma fewer and two braces per chunk).
	if len(fields) != 1024 || total < 1<<20-64 || total > 1<<20+64 {
		t.Fatalf("%d fields, %d bytes", len(fields), total)
	}
}

func TestSubscribeMessage(t *testing.T) {
	var m map[string]any
	json.Unmarshal(subscribeMessage("ai-001:", "c1", "delta"), &m)
	if m["type"] != "subscribe" || m["id_prefix"] != "ai-001:" || m["from_cursor"] != "c1" || m["events"] != "delta" {
		t.Fatalf("delta subscribe = %v", m)
	}
	m = nil
	json.Unmarshal(subscribeMessage("", "", "full"), &m)
	if _, ok := m["events"]; ok {
		t.Fatalf("full subscribe sends events: %v", m)
	}
}

// wsChange parses a WebSocket frame the way wsSubscriber does.
func wsChange(t *testing.T, frame string) Event {
	t.Helper()
	var m wsMessage
	if err := json.Unmarshal([]byte(frame), &m); err != nil {
		t.Fatal(err)
	}
	if m.Type != "change" {
		t.Fatalf("type %q", m.Type)
	}
	return changeEvent(m.ID, m.Version, m.Value, m.Set, m.Removed, len(frame))
}

func TestChangeEventFullAndDelta(t *testing.T) {
	full := `{"type":"change","id":"ai-001:k0","data_type":"note","version":17,"value":{"f0000":"abc","fb":{"n":5,"t":1700000000000000000,"v":"00","w":0}},"updated_by":"ai-001","cursor":"c17"}`
	ev := wsChange(t, full)
	if ev.Delta || ev.Version != 17 || ev.Bytes != len(full) {
		t.Fatalf("full frame = %+v", ev)
	}
	if w, n, ts, ok := decodeValue(ev.Value); !ok || w != 0 || n != 5 || ts != 1700000000000000000 {
		t.Fatalf("full frame decodes to %d %d %d %v", w, n, ts, ok)
	}
	delta := `{"type":"change","id":"ai-001:k0","data_type":"note","version":18,"set":{"fb":{"n":6,"t":1700000000000000001,"v":"00","w":0}},"removed":[],"updated_by":"ai-001","cursor":"c18"}`
	ev = wsChange(t, delta)
	if !ev.Delta || ev.Version != 18 || ev.Bytes != len(delta) {
		t.Fatalf("delta frame = %+v", ev)
	}
	if w, n, _, ok := decodeValue(ev.Value); !ok || w != 0 || n != 6 {
		t.Fatalf("delta frame decodes to %d %d %v", w, n, ok)
	}
	// Only removals: a delta without fedbench's field (a foreign change).
	ev = wsChange(t, `{"type":"change","id":"ai-001:k0","version":19,"removed":["f0001"],"cursor":"c19"}`)
	if !ev.Delta || ev.Value != nil {
		t.Fatalf("removal frame = %+v", ev)
	}
	if _, _, _, ok := decodeValue(ev.Value); ok {
		t.Fatal("a removal decoded as a fedbench delta")
	}
	// gRPC: value empty, set present.
	if ev := changeEvent("x", 3, nil, []byte(`{"fb":{"w":1,"n":2,"t":3}}`), nil, 40); !ev.Delta || ev.Bytes != 40 {
		t.Fatalf("grpc delta = %+v", ev)
	}
}

// The exactly-once in-order check works on incremental events: the version is
// in every frame, and the delta's writer and sequence are in the field it set.
func TestTrackerWithDeltaEvents(t *testing.T) {
	ids := []string{"ai-001:k0", "ai-002:k0"}
	tr := NewTracker(2, ids, []string{"", ""}, true) // subscriber 0 full, 1 delta
	version := map[string]int64{}
	frame := func(sub int, id string, v int64, w int, n int64) Event {
		val := fmt.Sprintf(`{"n":%d,"t":%d,"v":"00","w":%d}`, n, time.Now().UnixNano(), w)
		if sub == 0 {
			return wsChange(t, fmt.Sprintf(`{"type":"change","id":%q,"version":%d,"value":{"f0000":"x","fb":%s},"cursor":"c"}`, id, v, val))
		}
		return wsChange(t, fmt.Sprintf(`{"type":"change","id":%q,"version":%d,"set":{"fb":%s},"removed":[],"cursor":"c"}`, id, v, val))
	}
	observe := func(sub int, ev Event) bool {
		w, n, _, ok := decodeValue(ev.Value)
		if !ok {
			n = 0
		}
		return tr.Observe(sub, Observation{ID: ev.ID, Version: ev.Version, Writer: w, Seq: n})
	}
	// The seeding deltas (fields without fedbench's "fb") come first: foreign.
	for _, id := range ids {
		for v := int64(1); v <= 16; v++ {
			version[id] = v
			observe(0, wsChange(t, fmt.Sprintf(`{"type":"change","id":%q,"version":%d,"value":{"f0000":"x"},"cursor":"c"}`, id, v)))
			observe(1, wsChange(t, fmt.Sprintf(`{"type":"change","id":%q,"version":%d,"set":{"f%04d":"x"},"cursor":"c"}`, id, v, v)))
		}
	}
	for n := int64(1); n <= 20; n++ {
		for w, id := range ids {
			tr.Acked(w, n, id)
			version[id]++
			for sub := 0; sub < 2; sub++ {
				if !observe(sub, frame(sub, id, version[id], w, n)) {
					t.Fatalf("sub %d: first sight of %s seq %d not first", sub, id, n)
				}
			}
		}
	}
	c := tr.Verify(nil, version)
	if c.Failed() || c.Acked != 40 || c.Expected != 80 || c.Foreign != 64 || !c.Converged {
		t.Fatalf("verdict = %+v", c)
	}
	// A delta frame repeated (a replay after a reconnect) is a duplicate.
	if observe(1, frame(1, ids[0], version[ids[0]], 0, 20)) {
		t.Fatal("a repeated delta frame was a first sight")
	}
	if c := tr.Verify(nil, version); c.DuplicateVersions != 1 || !c.Failed() {
		t.Fatalf("verdict after a repeat = %+v", c)
	}
}

func TestStatsGroups(t *testing.T) {
	s := NewStats()
	t0 := time.Now()
	s.StartWindow(t0)
	in := t0.Add(time.Millisecond).UnixNano()
	for i := 0; i < 10; i++ {
		s.Delivered(Delivery{Sub: 0, Group: groupFull, PushNs: in, RecvNs: in + int64(50*time.Millisecond), First: true, Bytes: 1 << 20})
		s.Delivered(Delivery{Sub: 1, Group: groupDelta, PushNs: in, RecvNs: in + int64(5*time.Millisecond), First: true, Bytes: 200, Delta: true})
	}
	// A delta pushed in the window and received after it counts for bytes per
	// change, not for deliveries in the window; a seeding change (no push time)
	// counts for neither's bytes per change.
	s.EndWindow(t0.Add(time.Second))
	s.Delivered(Delivery{Sub: 0, Group: groupFull, PushNs: in, RecvNs: t0.Add(2 * time.Second).UnixNano(), First: true, Bytes: 1 << 20})
	s.Delivered(Delivery{Sub: 0, Group: groupFull, RecvNs: in, Bytes: 64 << 10})
	full, delta := &s.groups[groupFull], &s.groups[groupDelta]
	if full.changes.Load() != 11 || full.changeBytes.Load() != 11<<20 || full.delivered.Load() != 11 || full.bytes.Load() != 10<<20+64<<10 {
		t.Fatalf("full group: %d changes of %d bytes, %d delivered of %d bytes", full.changes.Load(), full.changeBytes.Load(), full.delivered.Load(), full.bytes.Load())
	}
	if full.wholeFrames.Load() != 11 || full.deltaFrames.Load() != 0 {
		t.Fatalf("full group: %d delivered, %d bytes", full.delivered.Load(), full.bytes.Load())
	}
	if delta.delivered.Load() != 10 || delta.bytes.Load() != 2000 || delta.changeBytes.Load() != 2000 || delta.deltaFrames.Load() != 10 {
		t.Fatalf("delta group: %d delivered, %d bytes", delta.delivered.Load(), delta.bytes.Load())
	}
	if l := Summarize(s.GroupHistogram(groupFull)); l.Count != 11 || l.P50 < 49 || l.P50 > 51 {
		t.Fatalf("full latency = %+v", l)
	}
	if l := Summarize(s.GroupHistogram(groupDelta)); l.Count != 10 || l.P99 < 4.9 || l.P99 > 5.1 {
		t.Fatalf("delta latency = %+v", l)
	}
	if s.Histogram().TotalCount() != 21 {
		t.Fatal("the overall histogram holds both groups")
	}
}

func TestGrowingMarkdown(t *testing.T) {
	r := testReport()
	r.Scenario = presets()["growing"]
	fed, etcd := r.Results[0], r.Results[1]
	fed.PartialUpdates, fed.DocBytes, fed.ValueBytes = true, 1<<20, 100
	fed.EventGroups = []EventGroup{
		{Events: "full", Subscribers: 2, DeliveredPerSec: 40, BytesPerChange: 1050000, ReceivedMiBPerSec: 40.05, WholeFrames: 800, Latency: Latency{P50: 30, P99: 90, Max: 120}},
		{Events: "delta", Subscribers: 2, DeliveredPerSec: 40, BytesPerChange: 210, ReceivedMiBPerSec: 0.01, DeltaFrames: 800, Latency: Latency{P50: 10, P99: 20, Max: 30}},
	}
	etcd.DocBytes, etcd.ValueBytes = 1<<20, 1<<20
	etcd.EventGroups = []EventGroup{{Events: "full", Subscribers: 2, WholeFrames: 10}, {Events: "delta", Subscribers: 2, WholeFrames: 10}}
	md := r.Markdown("")
	for _, want := range []string{
		"documents of about 1 MiB (fields of 1 KiB, written before the warm-up), then deltas of about 100 B that each set one field",
		"etcd and NATS have no partial update: the honest equivalent is a put of the whole ~1 MiB value each time",
		"| system | step | events asked | subscribers | received | delivered/s | bytes per change | received MiB/s | p50 ms | p99 ms | max ms |",
		"| fedsync | – | full | 2 | whole value | 40 | 1,050,000 | 40.05 | 30.0 | 90.0 | 120 |",
		"| fedsync | – | delta | 2 | set/removed | 40 | 210 | 0.01 | 10.0 | 20.0 | 30.0 |",
		"| etcd | – | delta | 2 | whole value |",
		"each write carried about 1 MiB",
		"each write carried about 100 B",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "asked for delta events received") {
		t.Error("a warning about whole documents where none arrived")
	}
	// A fedsync that ignores events=delta is called out.
	fed.EventGroups[1].WholeFrames, fed.EventGroups[1].DeltaFrames = 800, 0
	if md := r.Markdown(""); !strings.Contains(md, "subscribers that asked for delta events received 800 whole documents for the window's deltas") {
		t.Errorf("no warning for whole documents sent to delta subscribers:\n%s", md)
	}
}
