package merge

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/go-kit/log"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/kafkabus"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

func outcomes(res *MergeBatchResponse) string {
	var out []string
	for _, r := range res.Results {
		out = append(out, r.Outcome)
	}
	return strings.Join(out, ",")
}

// TestMergeBatchMixesStaleCacheCausalDuplicateAndPlain merges one batch holding
// a delta on a document whose cached copy is stale (another writer committed
// behind merge's back), a re-delivered delta, a causal delta whose dependency
// has not committed, a delta of the wrong data type, and plain deltas: each
// gets its own outcome and version, in order per id, none lost or coalesced.
func TestMergeBatchMixesStaleCacheCausalDuplicateAndPlain(t *testing.T) {
	st := newMemStore()
	svc := newTestService(t, st)
	ctx := context.Background()
	first := delta("a", "ai-001", 10, `{"x":1}`)
	if _, err := svc.MergeBatch(ctx, &MergeBatchRequest{Deltas: []*fedsyncv1.Delta{first}}); err != nil {
		t.Fatal(err)
	}
	if !svc.docs.has("a") {
		t.Fatal("a committed document is not cached")
	}
	// Another merge instance commits version 2 of a: the cache is now stale.
	if _, err := st.Apply(ctx, &fedsyncv1.ApplyRequest{Id: "a", DataType: "note", Patch: []byte(`{"y":2}`), MessageId: "elsewhere",
		Fields: map[string]*fedsyncv1.FieldMeta{"y": {Hlc: 15, Writer: "ai-004"}}, HasExpectedVersion: true, ExpectedVersion: 1}); err != nil {
		t.Fatal(err)
	}
	causal := delta("c", "ai-009", 40, `{"k":1}`)
	causal.Consistency, causal.VectorClock = fedsyncv1.Consistency_CONSISTENCY_CAUSAL, map[string]int64{"ai-009": 2}
	wrongType := delta("a", "ai-005", 45, `{"z":1}`)
	wrongType.DataType = "kg"
	batch := []*fedsyncv1.Delta{
		delta("a", "ai-002", 20, `{"x":3}`), // planned on the stale v1: compare-and-set fails, merged again on v2
		delta("b", "ai-001", 21, `{"n":1}`),
		first,                                  // re-delivered
		causal,                                 // its writer's delta 1 is not settled: buffered
		delta("b", "ai-003", 22, `{"n":2}`),    // second version of b
		wrongType,                              // a is a note
		delta("a", "ai-002", 5, `{"y":"old"}`), // loses to y@15: superseded, no version
		delta("a", "ai-002", 30, `{"w":1}`),
	}
	res, err := svc.MergeBatch(ctx, &MergeBatchRequest{Deltas: batch})
	if err != nil {
		t.Fatal(err)
	}
	want := "committed,committed,superseded,buffered,committed,rejected,superseded,committed"
	if got := outcomes(res); got != want {
		t.Fatalf("outcomes\n got  %s\n want %s", got, want)
	}
	versions := []int64{res.Results[0].Version, res.Results[1].Version, res.Results[4].Version, res.Results[7].Version}
	if versions[0] != 3 || versions[1] != 1 || versions[2] != 2 || versions[3] != 4 {
		t.Fatalf("versions a,b,b,a = %v; want 3,1,2,4", versions)
	}
	if got := value(t, st, "a"); got != `{"w":1,"x":3,"y":2}` {
		t.Fatalf("a = %s", got)
	}
	if got := strings.Join(st.commits, " "); got != "a@1 a@2 b@1 b@2 a@3 a@4" && got != "a@1 a@2 a@3 b@1 b@2 a@4" {
		t.Fatalf("commit order %s", got)
	}
	if o := st.outcomes[first.MessageId]; o.Status != Committed || o.Version != 1 {
		t.Fatalf("the re-delivered delta's outcome changed: %v", o)
	}
	if o := st.outcomes[wrongType.MessageId]; o.GetStatus() != Rejected || !strings.Contains(o.GetReason(), "data_type") {
		t.Fatalf("wrong data type outcome: %v", o)
	}
	if svc.causal.Len() != 1 {
		t.Fatalf("causal buffer holds %d deltas, want 1", svc.causal.Len())
	}
}

// TestMergeBatchSharesOneCommitPerRound: a batch of deltas of many ids commits
// in one statestore call when no compare-and-set fails.
func TestMergeBatchSharesOneCommitPerRound(t *testing.T) {
	st := newMemStore()
	svc := newTestService(t, st)
	var batch []*fedsyncv1.Delta
	for i := 0; i < 200; i++ {
		d := delta("doc-"+string(rune('a'+i%20)), "ai-001", int64(i+1), `{"f":1}`)
		if i%2 == 1 { // as validation sends it: the decoded fields, no JSON object
			d.Patch, d.PatchFields = nil, map[string][]byte{"f": []byte("1"), "g": []byte(`"x"`)}
		}
		batch = append(batch, d)
	}
	res, err := svc.MergeBatch(context.Background(), &MergeBatchRequest{Deltas: batch})
	if err != nil {
		t.Fatal(err)
	}
	if st.batches != 1 || len(st.commits) != 200 {
		t.Fatalf("%d commits in %d ApplyBatch calls; want 200 in 1", len(st.commits), st.batches)
	}
	for i, r := range res.Results {
		if r.Outcome != Committed || r.Version != int64(i/20+1) {
			t.Fatalf("delta %d: %s v%d", i, r.Outcome, r.Version)
		}
	}
	if got := value(t, st, "doc-b"); got != `{"f":1,"g":"x"}` {
		t.Fatalf("doc-b = %s", got)
	}
}

func record(t *testing.T, d *fedsyncv1.Delta, offset int64) kafkabus.Message {
	payload, _ := proto.Marshal(d)
	env, _ := proto.Marshal(&fedsyncv1.SyncMessage{MessageId: d.MessageId, Type: fedsyncv1.MessageType_STATE_UPDATE, Payload: payload})
	return kafkabus.Message{Topic: "fedsync.deltas", Partition: 0, Offset: offset, Key: []byte(d.Id), Value: env}
}

// TestPoisonRecordGoesToDeadLetterTopic: a record that can never be decoded is
// dead-lettered at once; a delta whose commit keeps failing is retried, then
// merged alone, then dead-lettered with the error in its headers and recorded
// as rejected, while the rest of its batch commits and the partition moves on.
func TestPoisonRecordGoesToDeadLetterTopic(t *testing.T) {
	st := newMemStore()
	svc := newTestService(t, st)
	eps := MakeEndpoints(svc, func(string) endpointMiddleware { return passthrough })
	poison := delta("p", "ai-001", 2, `{"x":1}`)
	st.failBatch = func(req *fedsyncv1.ApplyBatchRequest) error {
		for _, it := range req.Items {
			if it.MessageId == poison.MessageId {
				return apierr.New(apierr.Internal, "bbolt: value too large")
			}
		}
		return nil
	}
	dlq := &memDLQ{}
	var dead []string
	h := batchHandler(eps, svc, dlq, 3, log.NewNopLogger(), func(r string) { dead = append(dead, r) })
	batch := []kafkabus.Message{
		record(t, delta("a", "ai-001", 1, `{"x":1}`), 10),
		{Topic: "fedsync.deltas", Offset: 11, Key: []byte("junk"), Value: []byte("\xff\xff not protobuf")},
		record(t, poison, 12),
		record(t, delta("b", "ai-001", 3, `{"x":1}`), 13),
	}
	ctx := context.Background()
	attempts := 0
	for err := errors.New("start"); err != nil; attempts++ {
		if attempts > 10 {
			t.Fatal("the batch never settled")
		}
		err = h(ctx, batch)
	}
	if attempts != 3 {
		t.Errorf("settled after %d handler calls, want 3 (dlq-after)", attempts)
	}
	if len(dlq.records) != 2 || len(dead) != 2 || dead[0] != "undecodable" || dead[1] != "merge_failed" {
		t.Fatalf("dead letters %d, reasons %v", len(dlq.records), dead)
	}
	h0 := dlq.records[1].Headers
	if h0["fedsync-original-offset"] != "12" || !strings.Contains(h0["fedsync-error"], "value too large") || h0["fedsync-attempts"] != "3" {
		t.Fatalf("headers %v", h0)
	}
	if o := st.outcomes[poison.MessageId]; o.GetStatus() != Rejected || !strings.Contains(o.GetReason(), "value too large") {
		t.Fatalf("poison outcome %v", o)
	}
	if value(t, st, "a") != `{"x":1}` || value(t, st, "b") != `{"x":1}` {
		t.Fatal("the rest of the batch did not commit")
	}
}

// TestUnavailableStatestoreNeverDeadLetters: while statestore is away the
// batch is retried however often it fails, and nothing is dead-lettered.
func TestUnavailableStatestoreNeverDeadLetters(t *testing.T) {
	st := newMemStore()
	svc := newTestService(t, st)
	eps := MakeEndpoints(svc, func(string) endpointMiddleware { return passthrough })
	down := 10
	st.failBatch = func(*fedsyncv1.ApplyBatchRequest) error {
		if down > 0 {
			down--
			return apierr.New(apierr.Unavailable, "statestore is down")
		}
		return nil
	}
	dlq := &memDLQ{}
	h := batchHandler(eps, svc, dlq, 2, log.NewNopLogger(), func(string) {})
	batch := []kafkabus.Message{record(t, delta("a", "ai-001", 1, `{"x":1}`), 1)}
	calls := 0
	for err := errors.New("start"); err != nil; calls++ {
		err = h(context.Background(), batch)
	}
	if len(dlq.records) != 0 || calls != 11 || value(t, st, "a") != `{"x":1}` {
		t.Fatalf("calls %d, dead letters %d", calls, len(dlq.records))
	}
}

// TestSumOverflowIsRefusedNotDeleted: hostile-input finding F4. Two increments
// of 1.7e308 used to leave the field deleted; the second is now rejected with
// the reason, and the stored value is kept.
func TestSumOverflowIsRefusedNotDeleted(t *testing.T) {
	st := newMemStore()
	svc := newTestService(t, st)
	inc := func(hlc int64) *fedsyncv1.Delta {
		d := delta("g", "ai-001", hlc, `{"count":1.7e308}`)
		d.DataType = "kg"
		return d
	}
	res, err := svc.MergeBatch(context.Background(), &MergeBatchRequest{Deltas: []*fedsyncv1.Delta{inc(1), inc(2)}})
	if err != nil {
		t.Fatal(err)
	}
	if got := outcomes(res); got != "committed,rejected" || !strings.Contains(res.Results[1].Reason, "IEEE-754") {
		t.Fatalf("outcomes %s, reason %q", got, res.Results[1].Reason)
	}
	if v := value(t, st, "g"); v != `{"count":1.7e308}` {
		t.Fatalf("g = %s", v)
	}
}
