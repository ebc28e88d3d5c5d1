package statestore

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/kafkatest"
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
	raw, err := withoutValue(last.msg, false)
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

// TestDocumentSizeLimit: a change that would make a document larger than the
// limit is refused with too_large naming the limit, and the document stays at
// its last version; other documents in the same batch commit.
func TestDocumentSizeLimit(t *testing.T) {
	s, st := newTestService(t, t.TempDir())
	st.maxDoc = 1 << 20
	half := strings.Repeat("x", 600<<10)
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "grow", DataType: "note", Patch: []byte(`{"a":"` + half + `"}`), MessageId: "g1"})
	resp, err := s.ApplyBatch(context.Background(), &fedsyncv1.ApplyBatchRequest{Items: []*fedsyncv1.ApplyRequest{
		{Id: "grow", DataType: "note", Patch: []byte(`{"b":"` + half + `"}`), MessageId: "g2"},
		{Id: "other", DataType: "note", Patch: []byte(`{"c":1}`), MessageId: "o1"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	r0, r1 := resp.Results[0], resp.Results[1]
	if r0.GetVersion() != 0 || !strings.Contains(r0.GetErrorMessage(), "limit is 1048576 bytes") || r0.GetErrorCode() != string(apierr.TooLarge) {
		t.Fatalf("oversized result %v", r0)
	}
	if r1.GetVersion() != 1 {
		t.Fatalf("the other document did not commit: %v", r1)
	}
	doc, err := st.get("grow")
	if err != nil || doc.Version != 1 {
		t.Fatalf("grow at %v, %v; want version 1", doc.GetVersion(), err)
	}
	if _, err := s.Apply(context.Background(), &fedsyncv1.ApplyRequest{Id: "grow", DataType: "note", Patch: []byte(`{"b":"` + half + `"}`)}); apierr.As(err).Code != apierr.TooLarge || apierr.As(err).Details["limit"] != 1<<20 {
		t.Fatalf("single apply over the limit: %v", err)
	}
}

// TestOutboxNeverJamsOnOneChange: a change too large for a Kafka record even
// without its document (statestore called directly with a 1.2 MiB patch) goes
// out without its fields (change_omitted), and the changes after it follow.
func TestOutboxNeverJamsOnOneChange(t *testing.T) {
	cfg := &kafkabus.Config{Brokers: kafkatest.Brokers(t), Partitions: 1, Replication: 1, BatchTimeout: 2 * time.Millisecond}
	topic := fmt.Sprintf("test.committed.big.%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := kafkabus.EnsureTopics(ctx, cfg, []kafkabus.TopicSpec{{Name: topic, Partitions: 1}}); err != nil {
		t.Fatal(err)
	}
	producer := kafkabus.NewProducer(cfg, topic)
	defer producer.Close()
	s, st := newTestService(t, t.TempDir())
	huge := strings.Repeat("y", 1200<<10)
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "huge", DataType: "note", Patch: []byte(`{"a":"` + huge + `"}`), MessageId: "h1"})
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "small", DataType: "note", Patch: []byte(`{"b":1}`), MessageId: "s1"})
	pub := &publisher{store: st, repl: s.repl, producer: producer, retention: LogRetention{Count: 1000}, wholeMax: 256 << 10, maxRecord: 900 << 10,
		logger: log.NewNopLogger(), pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})}
	if n, err := pub.publishOnce(ctx); err != nil || n != 2 {
		t.Fatalf("published %d, %v; want both changes", n, err)
	}
	c := kafkabus.NewConsumer(cfg, topic, "g-"+topic, kafkabus.StartEarliest, log.NewNopLogger())
	defer c.Close()
	var got []*fedsyncv1.Change
	cctx, ccancel := context.WithCancel(ctx)
	c.Run(cctx, func(_ context.Context, m kafkabus.Message) error {
		env := &fedsyncv1.SyncMessage{}
		if err := proto.Unmarshal(m.Value, env); err != nil {
			t.Fatal(err)
		}
		if len(m.Value) > 900<<10 {
			t.Errorf("record of %d bytes", len(m.Value))
		}
		ch, _ := decodeChange(env)
		got = append(got, ch)
		if len(got) == 2 {
			ccancel()
		}
		return nil
	})
	if len(got) != 2 || !got[0].ChangeOmitted || !got[0].ValueOmitted || len(got[0].Set) != 0 || got[0].Seq != 1 || got[1].ChangeOmitted || string(got[1].State.Value) != `{"b":1}` {
		t.Fatalf("published %v", got)
	}
	page, err := s.ReadLog(ctx, &fedsyncv1.ReadLogRequest{AfterSeq: 0, Limit: 1})
	if err != nil || len(page.Changes) != 1 || len(page.Changes[0].Set) < 1200<<10 {
		t.Fatalf("ReadLog must return the whole change: %v", err)
	}
}
