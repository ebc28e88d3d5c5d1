package statestore

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// TestApplyBatchSettlesEachItemAlone commits one batch that mixes plain
// changes, a duplicate, a stale compare-and-set (with a later change of the same
// document behind it), a causal delta whose predecessor is not settled, a
// data-type mismatch and an outcome: each business error settles only its own
// item (and the later items of its id), the rest commit in the one transaction.
func TestApplyBatchSettlesEachItemAlone(t *testing.T) {
	s, st := newTestService(t, t.TempDir())
	ctx := context.Background()
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "dup", DataType: "note", Patch: []byte(`{"a":1}`), MessageId: "m-dup", Writer: "ai-001"})
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "cas", DataType: "note", Patch: []byte(`{"a":1}`), MessageId: "m-cas0", Writer: "ai-001"})
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "typed", DataType: "task", Patch: []byte(`{"a":1}`), MessageId: "m-typed0", Writer: "ai-001"})
	head0, _ := st.head()

	items := []*fedsyncv1.ApplyRequest{
		{Id: "plain", DataType: "note", Patch: []byte(`{"x":1}`), MessageId: "p1", Writer: "ai-001", HasExpectedVersion: true, ExpectedVersion: 0},
		{Id: "dup", DataType: "note", Patch: []byte(`{"a":2}`), MessageId: "m-dup", Writer: "ai-001"},
		{Id: "cas", DataType: "note", Patch: []byte(`{"b":1}`), MessageId: "c1", Writer: "ai-002", HasExpectedVersion: true, ExpectedVersion: 0},
		{Id: "plain", DataType: "note", Patch: []byte(`{"x":null,"y":2}`), MessageId: "p2", Writer: "ai-001", HasExpectedVersion: true, ExpectedVersion: 1},
		{Id: "cas", DataType: "note", Patch: []byte(`{"b":2}`), MessageId: "c2", Writer: "ai-002", HasExpectedVersion: true, ExpectedVersion: 2},
		{Id: "causal", DataType: "belief", Patch: []byte(`{"k":1}`), MessageId: "k2", Writer: "ai-003", CausalAgent: "ai-003", CausalCounter: 2},
		{Id: "typed", DataType: "note", Patch: []byte(`{"a":2}`), MessageId: "t1", Writer: "ai-001"},
		{Id: "-bad id", DataType: "note", Patch: []byte(`{"a":2}`), MessageId: "b1"},
		{Id: "plain", DataType: "note", Patch: []byte(`{"z":3}`), MessageId: "p3", Writer: "ai-001"},
	}
	resp, err := s.ApplyBatch(ctx, &fedsyncv1.ApplyBatchRequest{Items: items, Outcomes: []*fedsyncv1.RecordOutcomeRequest{
		{Outcome: &fedsyncv1.Outcome{MessageId: "sup1", StateId: "plain", Status: "superseded"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(resp.Results))
	for i, r := range resp.Results {
		switch {
		case r.ErrorCode != "":
			got[i] = r.ErrorCode
			if r.CausalNotReady {
				got[i] += "/causal"
			}
			if r.ErrorCode == "version_conflict" && !r.CausalNotReady {
				got[i] += fmt.Sprintf("@%d", r.CurrentVersion)
			}
		case r.Duplicate:
			got[i] = fmt.Sprintf("dup v%d", r.Version)
		default:
			got[i] = fmt.Sprintf("v%d", r.Version)
		}
	}
	want := []string{"v1", "dup v1", "version_conflict@1", "v2", "aborted", "version_conflict/causal", "invalid_argument", "invalid_argument", "v3"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("results:\n got  %v\n want %v", got, want)
	}
	plain, err := s.Get(ctx, &fedsyncv1.GetRequest{Id: "plain"})
	if err != nil || string(plain.State.Value) != `{"y":2,"z":3}` || plain.State.Version != 3 {
		t.Fatalf("plain = %v, %v", plain, err)
	}
	if cas, _ := s.Get(ctx, &fedsyncv1.GetRequest{Id: "cas"}); cas.State.Version != 1 {
		t.Fatalf("cas moved to version %d although its batch items failed", cas.State.Version)
	}
	if o, err := s.GetOutcome(ctx, &fedsyncv1.GetOutcomeRequest{MessageId: "sup1"}); err != nil || o.Outcome.Status != "superseded" {
		t.Fatalf("outcome recorded in the batch: %v, %v", o, err)
	}
	// Exactly the three commits are in the log, in order, each with what it changed.
	entries, head, err := st.readLog(head0, 100)
	if err != nil || head != head0+3 || len(entries) != 3 {
		t.Fatalf("log after the batch: %d entries, head %d (was %d), %v", len(entries), head, head0, err)
	}
	ch, _ := decodeChange(entries[1].msg)
	if ch.State.Id != "plain" || ch.State.Version != 2 || string(ch.Set) != `{"y":2}` || strings.Join(ch.Removed, ",") != "x" {
		t.Fatalf("second change: %s v%d set %s removed %v", ch.State.Id, ch.State.Version, ch.Set, ch.Removed)
	}
	// The same batch again: every item that committed is now a duplicate.
	again, err := s.ApplyBatch(ctx, &fedsyncv1.ApplyBatchRequest{Items: items[:1]})
	if err != nil || !again.Results[0].Duplicate {
		t.Fatalf("re-applied batch: %v, %v", again, err)
	}
}

func TestApplyBatchRefusesOversizedBatches(t *testing.T) {
	s, _ := newTestService(t, t.TempDir())
	items := make([]*fedsyncv1.ApplyRequest, maxBatchItems+1)
	for i := range items {
		items[i] = &fedsyncv1.ApplyRequest{Id: "a", DataType: "note", Patch: []byte(`{}`)}
	}
	if _, err := s.ApplyBatch(context.Background(), &fedsyncv1.ApplyBatchRequest{Items: items}); err == nil {
		t.Fatal("want an error for a batch over the limit")
	}
}

// TestPublishedChangeOfLargeDocumentCarriesOnlyWhatChanged: a document over the
// whole-value limit goes to fedsync.committed without its value (and well under
// Kafka's record limit), with what the commit set; ReadLog still has it whole.
func TestPublishedChangeOfLargeDocumentCarriesOnlyWhatChanged(t *testing.T) {
	s, st := newTestService(t, t.TempDir())
	big := strings.Repeat("x", 600<<10)
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "big", DataType: "note", Patch: []byte(`{"a":"` + big + `"}`), MessageId: "b1"})
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "big", DataType: "note", Patch: []byte(`{"b":"` + big + `"}`), MessageId: "b2"})
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "big", DataType: "note", Patch: []byte(`{"c":1}`), MessageId: "b3"})
	entries, _, err := st.readLog(0, 10)
	if err != nil || len(entries) != 3 {
		t.Fatal(len(entries), err)
	}
	last := entries[2]
	raw, err := withoutValue(last.msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(last.raw) < 1<<20 || len(raw) > 4096 {
		t.Fatalf("stored entry %d bytes, published %d bytes", len(last.raw), len(raw))
	}
	env := &fedsyncv1.SyncMessage{}
	if err := proto.Unmarshal(raw, env); err != nil {
		t.Fatal(err)
	}
	ch, err := decodeChange(env)
	if err != nil {
		t.Fatal(err)
	}
	if !ch.ValueOmitted || len(ch.State.Value) != 0 || ch.State.Version != 3 || string(ch.Set) != `{"c":1}` || env.Metadata[metaStateID] != "big" {
		t.Fatalf("published change: omitted=%v value=%d bytes v%d set=%s", ch.ValueOmitted, len(ch.State.Value), ch.State.Version, ch.Set)
	}
	page, err := s.ReadLog(context.Background(), &fedsyncv1.ReadLogRequest{AfterSeq: 2, Limit: 1})
	if err != nil || len(page.Changes) != 1 || len(page.Changes[0].State.Value) < 1<<20 {
		t.Fatalf("ReadLog must return the whole document: %v", err)
	}
}
