package merge

import (
	"context"
	"testing"
	"time"

	"github.com/go-kit/log"

	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

func causalDelta(id, writer string, hlc int64, vc map[string]int64, patch string) *fedsyncv1.Delta {
	d := delta(id, writer, hlc, patch)
	d.Consistency, d.VectorClock = fedsyncv1.Consistency_CONSISTENCY_CAUSAL, vc
	return d
}

// TestCausalWaitsForCauseAcrossIDs: B's conclusion (on another document) depends
// on A's premise; it arrives first, waits, and commits only after the premise.
func TestCausalWaitsForCauseAcrossIDs(t *testing.T) {
	st := newMemStore()
	svc := newTestService(t, st)
	ctx := context.Background()
	effect := causalDelta("ai-002:conclusion", "ai-002", 20, map[string]int64{"ai-002": 1, "ai-001": 1}, `{"c":1}`)
	cause := causalDelta("ai-001:premise", "ai-001", 10, map[string]int64{"ai-001": 1}, `{"p":1}`)
	res, err := svc.Merge(ctx, effect)
	if err != nil || res.Outcome != Buffered {
		t.Fatalf("effect before cause: %+v %v", res, err)
	}
	if res, err := svc.Merge(ctx, cause); err != nil || res.Outcome != Committed {
		t.Fatalf("cause: %+v %v", res, err)
	}
	if err := svc.causal.drain(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if got := st.commits; len(got) != 2 || got[0] != "ai-001:premise@1" || got[1] != "ai-002:conclusion@1" {
		t.Fatalf("commit order %v", got)
	}
	if svc.causal.Len() != 0 {
		t.Fatal("buffer not empty")
	}
}

func TestCausalFIFOPerWriterAndTimeout(t *testing.T) {
	st := newMemStore()
	q, err := openCausalQueue(t.TempDir(), 10, 50*time.Millisecond, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	svc := NewService(st, testRegistry(t), NewResolvers(), q, 10)
	ctx := context.Background()
	second := causalDelta("ai-001:x", "ai-001", 20, map[string]int64{"ai-001": 2}, `{"v":2}`)
	if res, _ := svc.Merge(ctx, second); res.Outcome != Buffered {
		t.Fatalf("second before first: %+v", res)
	}
	orphan := causalDelta("ai-003:y", "ai-003", 30, map[string]int64{"ai-003": 1, "ai-999": 4}, `{"v":1}`)
	svc.Merge(ctx, orphan)
	svc.Merge(ctx, causalDelta("ai-001:x", "ai-001", 10, map[string]int64{"ai-001": 1}, `{"v":1}`))
	q.drain(ctx, svc)
	if v := value(t, st, "ai-001:x"); v != `{"v":2}` {
		t.Fatalf("FIFO per writer: %s", v)
	}
	time.Sleep(60 * time.Millisecond)
	q.drain(ctx, svc)
	if o := st.outcomes[orphan.MessageId]; o == nil || o.Status != Rejected {
		t.Fatalf("a delta whose dependency never arrives must be rejected visibly: %+v", o)
	}
	if st.frontier["ai-003"] != 1 {
		t.Fatal("a rejected causal delta must settle its writer's counter")
	}
	reused := causalDelta("ai-001:x", "ai-001", 40, map[string]int64{"ai-001": 1}, `{"v":9}`)
	if res, _ := svc.Merge(ctx, reused); res.Outcome != Rejected {
		t.Fatalf("a reused counter: %+v", res)
	}
}

func TestCausalBufferIsDurableAndBounded(t *testing.T) {
	dir := t.TempDir()
	st := newMemStore()
	q, _ := openCausalQueue(dir, 2, time.Minute, log.NewNopLogger())
	svc := NewService(st, testRegistry(t), NewResolvers(), q, 10)
	ctx := context.Background()
	for i := int64(2); i <= 3; i++ {
		svc.Merge(ctx, causalDelta("ai-001:x", "ai-001", i, map[string]int64{"ai-001": i}, `{}`))
	}
	res, _ := svc.Merge(ctx, causalDelta("ai-002:x", "ai-002", 9, map[string]int64{"ai-002": 2}, `{}`))
	if res.Outcome != Rejected {
		t.Fatalf("overflow: %+v", res)
	}
	q.close()
	q2, err := openCausalQueue(dir, 2, time.Minute, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer q2.close()
	if q2.Len() != 2 {
		t.Fatalf("buffer after restart holds %d deltas, want 2", q2.Len())
	}
	svc2 := NewService(st, testRegistry(t), NewResolvers(), q2, 10)
	svc2.Merge(ctx, causalDelta("ai-001:x", "ai-001", 1, map[string]int64{"ai-001": 1}, `{"v":1}`))
	q2.drain(ctx, svc2)
	if st.frontier["ai-001"] != 3 || q2.Len() != 0 {
		t.Fatalf("frontier %d, waiting %d", st.frontier["ai-001"], q2.Len())
	}
}

// TestCausalBufferShareIsPerWriter: one writer whose dependency never commits
// fills only its share of the buffer; another writer's deltas still wait
// there; the share is counted again after a restart and freed as deltas leave.
func TestCausalBufferShareIsPerWriter(t *testing.T) {
	dir := t.TempDir()
	st := newMemStore()
	q, _ := openCausalQueue(dir, 100, time.Minute, log.NewNopLogger())
	q.maxPerWriter = 3
	svc := NewService(st, testRegistry(t), NewResolvers(), q, 10)
	ctx := context.Background()
	rejected := 0
	for i := int64(2); i <= 10; i++ { // counter 1 never comes
		res, _ := svc.Merge(ctx, causalDelta("ai-001:x", "ai-001", i, map[string]int64{"ai-001": i}, `{}`))
		if res.Outcome == Rejected {
			rejected++
		}
	}
	// The first delta past the share is rejected (which settles its counter,
	// as every causal rejection does, so the writer's later ones go on).
	if q.Len() != 3 || rejected < 1 {
		t.Fatalf("flooding writer: %d waiting, %d rejected; want its share of 3 waiting and a rejection", q.Len(), rejected)
	}
	if res, _ := svc.Merge(ctx, causalDelta("ai-002:x", "ai-002", 20, map[string]int64{"ai-002": 2}, `{}`)); res.Outcome != Buffered {
		t.Fatalf("another writer's delta: %+v", res)
	}
	q.close()
	q2, err := openCausalQueue(dir, 100, time.Minute, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer q2.close()
	q2.maxPerWriter = 3
	if q2.byWriter["ai-001"] != 3 || q2.byWriter["ai-002"] != 1 {
		t.Fatalf("shares after restart: %v", q2.byWriter)
	}
	svc2 := NewService(st, testRegistry(t), NewResolvers(), q2, 10)
	svc2.Merge(ctx, causalDelta("ai-001:x", "ai-001", 1, map[string]int64{"ai-001": 1}, `{"v":1}`))
	q2.drain(ctx, svc2)
	if q2.byWriter["ai-001"] != 0 {
		t.Fatalf("share after the dependency committed: %v", q2.byWriter)
	}
}
