package main

import (
	"fmt"
	"strings"
	"testing"
)

// Two writers, each with two ids; subscriber 0 watches everything, subscriber 1
// only ai-002's ids.
func newTestTracker(contiguous bool) *Tracker {
	ids := []string{"ai-001:k0", "ai-001:k1", "ai-002:k0", "ai-002:k1"}
	return NewTracker(2, ids, []string{"", "ai-002:"}, contiguous)
}

func TestTrackerExactlyOnceInOrder(t *testing.T) {
	tr := newTestTracker(true)
	version := map[string]int64{}
	for n := int64(1); n <= 10; n++ {
		for w := 0; w < 2; w++ {
			id := fmt.Sprintf("%s:k%d", agentName(w), n%2)
			tr.Acked(w, n, id)
			version[id]++
			for _, sub := range tr.matches[tr.idIndex[id]] {
				if first := tr.Observe(sub, Observation{ID: id, Version: version[id], Writer: w, Seq: n}); !first {
					t.Fatalf("first sight of %s writer %d seq %d not reported as first", id, w, n)
				}
			}
		}
	}
	if seen, expected := tr.Progress(); seen != expected || expected != 30 {
		t.Fatalf("progress = %d/%d, want 30/30 (20 deltas to sub 0, 10 to sub 1)", seen, expected)
	}
	if m := tr.Missing(); len(m) != 0 {
		t.Fatalf("missing = %v, want none", m)
	}
	c := tr.Verify(nil, version)
	if c.Failed() {
		t.Fatalf("clean run failed: %+v", c)
	}
	if c.Acked != 20 || c.Expected != 30 || c.Observations != 30 || !c.Converged || !c.Checked {
		t.Fatalf("counts = %+v", c)
	}
}

func TestTrackerLost(t *testing.T) {
	tr := newTestTracker(true)
	tr.Acked(1, 1, "ai-002:k1")
	tr.Acked(1, 2, "ai-002:k1")
	// Subscriber 0 sees both, subscriber 1 misses the first.
	tr.Observe(0, Observation{ID: "ai-002:k1", Version: 1, Writer: 1, Seq: 1})
	tr.Observe(0, Observation{ID: "ai-002:k1", Version: 2, Writer: 1, Seq: 2})
	tr.Observe(1, Observation{ID: "ai-002:k1", Version: 2, Writer: 1, Seq: 2})
	// A delta nobody saw.
	tr.Acked(0, 1, "ai-001:k0")

	missing := tr.Missing()
	if len(missing) != 1 || missing[keyOf(0, 1)] != "ai-001:k0" {
		t.Fatalf("missing = %v, want only ai-001:k0 writer 0 seq 1 (seen by nobody)", missing)
	}
	c := tr.Verify(nil, map[string]int64{"ai-002:k1": 2, "ai-001:k0": 1})
	if c.Lost != 2 {
		t.Fatalf("lost = %d, want 2 (one per subscriber that missed a delta)", c.Lost)
	}
	if !c.Failed() || len(c.LostExamples) != 2 || !strings.Contains(c.LostExamples[0]+c.LostExamples[1], "ai-001:k0") {
		t.Fatalf("verdict = %+v", c)
	}
	if c.Converged || c.Diverged != 1 {
		t.Fatalf("ai-001:k0 was never seen by subscriber 0: want 1 diverged pair, got %+v", c)
	}
}

func TestTrackerUnackedSeenIsNoError(t *testing.T) {
	tr := newTestTracker(true)
	tr.Unacked(0) // the write timed out, yet it was committed
	tr.Observe(0, Observation{ID: "ai-001:k0", Version: 1, Writer: 0, Seq: 1})
	c := tr.Verify(nil, map[string]int64{"ai-001:k0": 1})
	if c.Failed() || c.Unacked != 1 || c.Acked != 0 {
		t.Fatalf("verdict = %+v", c)
	}
}

func TestTrackerDuplicates(t *testing.T) {
	tr := newTestTracker(true)
	tr.Acked(0, 1, "ai-001:k0")
	tr.Acked(0, 2, "ai-001:k0")
	tr.Observe(0, Observation{ID: "ai-001:k0", Version: 1, Writer: 0, Seq: 1})
	if tr.Observe(0, Observation{ID: "ai-001:k0", Version: 1, Writer: 0, Seq: 1}) {
		t.Fatal("a repeated version was reported as a first sight")
	}
	tr.Observe(0, Observation{ID: "ai-001:k0", Version: 2, Writer: 0, Seq: 2})
	// Version 3 carries delta 2 again: one delta delivered as two changes.
	tr.Observe(0, Observation{ID: "ai-001:k0", Version: 3, Writer: 0, Seq: 2})
	c := tr.Verify(nil, nil)
	if c.DuplicateVersions != 1 || c.DuplicateDeltas != 1 || c.Duplicates != 2 || !c.Failed() {
		t.Fatalf("verdict = %+v", c)
	}
	if c.Lost != 0 || c.Checked {
		t.Fatalf("verdict = %+v", c)
	}
}

func TestTrackerOutOfOrderAndGaps(t *testing.T) {
	for _, contiguous := range []bool{true, false} {
		tr := newTestTracker(contiguous)
		for n := int64(1); n <= 3; n++ {
			tr.Acked(0, n, "ai-001:k1")
		}
		tr.Observe(0, Observation{ID: "ai-001:k1", Version: 1, Writer: 0, Seq: 1})
		tr.Observe(0, Observation{ID: "ai-001:k1", Version: 3, Writer: 0, Seq: 3}) // skips 2
		tr.Observe(0, Observation{ID: "ai-001:k1", Version: 2, Writer: 0, Seq: 2}) // late
		c := tr.Verify(nil, map[string]int64{"ai-001:k1": 3})
		if c.OutOfOrder != 1 {
			t.Errorf("contiguous=%v: out of order = %d, want 1", contiguous, c.OutOfOrder)
		}
		wantGaps := int64(0)
		if contiguous {
			wantGaps = 1
		}
		if c.Gaps != wantGaps {
			t.Errorf("contiguous=%v: gaps = %d, want %d", contiguous, c.Gaps, wantGaps)
		}
		if c.Lost != 0 || !c.Converged || !c.Failed() {
			t.Errorf("contiguous=%v: verdict = %+v", contiguous, c)
		}
	}
}

func TestTrackerExcusedOutcomes(t *testing.T) {
	tr := NewTracker(3, []string{"shared-bench:doc-0"}, []string{sharedPrefix, sharedPrefix}, true)
	tr.Acked(0, 1, "shared-bench:doc-0") // committed as version 1
	tr.Acked(1, 1, "shared-bench:doc-0") // lost the race: superseded
	tr.Acked(2, 1, "shared-bench:doc-0") // the system says committed, yet nobody saw it
	for sub := 0; sub < 2; sub++ {
		tr.Observe(sub, Observation{ID: "shared-bench:doc-0", Version: 1, Writer: 0, Seq: 1})
	}
	missing := tr.Missing()
	if len(missing) != 2 {
		t.Fatalf("missing = %v, want writers 1 and 2", missing)
	}
	outcomes := map[deltaKey]string{keyOf(1, 1): "superseded", keyOf(2, 1): "committed"}
	c := tr.Verify(outcomes, map[string]int64{"shared-bench:doc-0": 1})
	if c.Excused["superseded"] != 1 || c.MissingOutcomes["committed"] != 1 {
		t.Fatalf("excused = %v, missing outcomes = %v", c.Excused, c.MissingOutcomes)
	}
	if c.Lost != 2 { // writer 2's delta, at both subscribers
		t.Fatalf("lost = %d, want 2", c.Lost)
	}
}

func TestDeltaKey(t *testing.T) {
	k := keyOf(52, 1234567)
	if k.writer() != 52 || k.seq() != 1234567 {
		t.Fatalf("keyOf(52, 1234567) = writer %d seq %d", k.writer(), k.seq())
	}
}

func TestValueRoundTrip(t *testing.T) {
	v := encodeValue(nil, 7, 42, 1700000000123456789, padding(100))
	w, n, ts, ok := decodeValue(v)
	if !ok || w != 7 || n != 42 || ts != 1700000000123456789 {
		t.Fatalf("decode(%s) = %d %d %d %v", v, w, n, ts, ok)
	}
	// fedsync returns the document with the value under "fb", keys re-ordered.
	doc := []byte(`{"fb":{"n": 42,"t":1700000000123456789,"v":"00ff","w":7}}`)
	if w, n, ts, ok := decodeValue(doc); !ok || w != 7 || n != 42 || ts != 1700000000123456789 {
		t.Fatalf("decode(%s) = %d %d %d %v", doc, w, n, ts, ok)
	}
	if _, _, _, ok := decodeValue([]byte(`{"sky":"blue"}`)); ok {
		t.Fatal("a foreign value decoded")
	}
	if len(padding(64<<10)) != 64<<10 || strings.Trim(padding(64), "0123456789abcdef") != "" {
		t.Fatal("padding is not hex of the asked size")
	}
}

func TestScenarioShapes(t *testing.T) {
	ps := presets()
	st := ps["steady"]
	if ids := st.ids(); len(ids) != 53*4 || ids[0] != "ai-001:k0" || ids[len(ids)-1] != "ai-053:k3" {
		t.Fatalf("steady ids = %d, first %s", len(ids), ids[0])
	}
	if p := st.prefixes(); len(p) != 4 || p[0] != "" {
		t.Fatalf("steady prefixes = %q", p)
	}
	fo := ps["fanout"]
	if p := fo.prefixes(); len(p) != 10000 || p[0] != "ai-001:" || p[53] != "ai-001:" || p[52] != "ai-053:" {
		t.Fatalf("fanout prefixes = %q ...", p[:3])
	}
	cf := ps["conflict"]
	if ids := cf.ids(); len(ids) != 10 || !strings.HasPrefix(ids[0], sharedPrefix) {
		t.Fatalf("conflict ids = %q", ids)
	}
	if p := cf.prefixes(); p[0] != sharedPrefix {
		t.Fatalf("conflict prefixes = %q", p)
	}
	if natsPattern("") != ">" || natsPattern("ai-001:") != "ai-001.>" || natsID(natsKey("shared-bench:doc-3")) != "shared-bench:doc-3" {
		t.Fatal("NATS key mapping")
	}
}
