package merge

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/statedoc"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

func delta(id, writer string, hlc int64, patch string) *fedsyncv1.Delta {
	return &fedsyncv1.Delta{Id: id, DataType: "note", Patch: []byte(patch), Writer: writer, Hlc: hlc,
		MessageId: fmt.Sprintf("%s-%d-%s", writer, hlc, id), Consistency: fedsyncv1.Consistency_CONSISTENCY_EVENTUAL}
}

func value(t *testing.T, st *memStore, id string) string {
	t.Helper()
	got, err := st.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return string(got.Value)
}

func TestMergeLastWriteWinsPerField(t *testing.T) {
	st := newMemStore()
	svc := newTestService(t, st)
	ctx := context.Background()
	for _, d := range []*fedsyncv1.Delta{
		delta("doc", "ai-001", 20, `{"a":"new","b":"first"}`),
		delta("doc", "ai-002", 10, `{"a":"old","c":"only"}`), // a loses (write_write), c wins
		delta("doc", "ai-003", 30, `{"b":null}`),
	} {
		if _, err := svc.Merge(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if v := value(t, st, "doc"); v != `{"a":"new","c":"only"}` {
		t.Fatalf("value %s", v)
	}
	res, err := svc.Merge(ctx, delta("doc", "ai-004", 5, `{"a":"stale"}`))
	if err != nil || res.Outcome != Superseded || len(res.Conflicts) != 1 || res.Conflicts[0].Type != WriteWrite {
		t.Fatalf("stale delta: %+v %v", res, err)
	}
	if o := st.outcomes["ai-004-5-doc"]; o == nil || o.Status != Superseded {
		t.Fatalf("outcome of the stale delta: %+v", o)
	}
}

func TestRedeliveryIsIdempotent(t *testing.T) {
	st := newMemStore()
	svc := newTestService(t, st)
	d := &fedsyncv1.Delta{Id: "k", DataType: "kg", Patch: []byte(`{"count":5,"tags":["a"]}`), Writer: "ai-001", Hlc: 7, MessageId: "m1"}
	for i := 0; i < 3; i++ {
		if _, err := svc.Merge(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	if v := value(t, st, "k"); v != `{"count":5,"tags":["a"]}` {
		t.Fatalf("a counter delta applied more than once: %s", v)
	}
}

func TestMergeRetriesCompareAndSetUnderConcurrency(t *testing.T) {
	st := newMemStore()
	svc := newTestService(t, st)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := svc.Merge(context.Background(), delta("doc", fmt.Sprintf("ai-%03d", i), int64(i+1), fmt.Sprintf(`{"f%d":1}`, i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, _ := st.Get(context.Background(), "doc")
	v, _ := statedoc.DecodeObject(got.Value)
	if len(v) != 20 || got.Version != 20 {
		t.Fatalf("lost concurrent fields: %d fields, version %d", len(v), got.Version)
	}
}

func strongDelta(id, writer string, hlc, expected int64, patch string) *fedsyncv1.Delta {
	d := delta(id, writer, hlc, patch)
	d.Consistency, d.HasExpectedVersion, d.ExpectedVersion = fedsyncv1.Consistency_CONSISTENCY_STRONG, true, expected
	return d
}

func TestCommitStrong(t *testing.T) {
	st := newMemStore()
	svc := newTestService(t, st)
	ctx := context.Background()
	if resp, err := svc.CommitStrong(ctx, &fedsyncv1.CommitStrongRequest{Delta: strongDelta("acct", "ai-001", 1, 0, `{"balance":10}`)}); err != nil || resp.Version != 1 {
		t.Fatalf("create: %v %v", resp, err)
	}
	_, err := svc.CommitStrong(ctx, &fedsyncv1.CommitStrongRequest{Delta: strongDelta("acct", "ai-002", 2, 0, `{"balance":20}`)})
	if e := apierr.As(err); e.Code != apierr.VersionConflict || e.Details["current_version"] != int64(1) {
		t.Fatalf("stale strong write: %v %+v", err, e.Details)
	}
	if resp, err := svc.CommitStrong(ctx, &fedsyncv1.CommitStrongRequest{Delta: strongDelta("acct", "ai-003", 1, 1, `{"balance":30}`)}); err != nil || resp.Version != 2 {
		t.Fatalf("based on current version: %v %v", resp, err)
	}
	// A strong write is stamped after what it overwrote, so an eventual write
	// admitted earlier does not undo it.
	if _, err := svc.Merge(ctx, delta("acct", "ai-009", 1, `{"balance":0}`)); err != nil {
		t.Fatal(err)
	}
	if v := value(t, st, "acct"); v != `{"balance":30}` {
		t.Fatalf("value %s", v)
	}
	// The same strong write sent again (its first 503 came after the commit)
	// gets its first answer, not a conflict with itself.
	again := strongDelta("acct", "ai-003", 1, 1, `{"balance":30}`)
	if resp, err := svc.CommitStrong(ctx, &fedsyncv1.CommitStrongRequest{Delta: again}); err != nil || resp.Version != 2 {
		t.Fatalf("retried strong write: %v %v", resp, err)
	}
	bad := delta("acct", "x", 1, `{}`)
	if _, err := svc.CommitStrong(ctx, &fedsyncv1.CommitStrongRequest{Delta: bad}); apierr.As(err).Code != apierr.InvalidArgument {
		t.Fatalf("strong without expected_version: %v", err)
	}
}

func TestTypeMismatchGoesToReviewQueueAndResolves(t *testing.T) {
	st := newMemStore()
	svc := newTestService(t, st)
	ctx := context.Background()
	svc.Merge(ctx, delta("doc", "ai-001", 1, `{"size":3,"x":1}`))
	res, err := svc.Merge(ctx, delta("doc", "ai-002", 2, `{"size":"large","x":2}`))
	if err != nil || res.Outcome != Committed {
		t.Fatalf("%+v %v", res, err)
	}
	if v := value(t, st, "doc"); v != `{"size":3,"x":2}` {
		t.Fatalf("the stored value of a mismatched field must be kept: %s", v)
	}
	queue, _ := svc.ListConflicts(ctx, &fedsyncv1.ListConflictsRequest{Status: "pending"})
	if len(queue.Conflicts) != 1 || queue.Conflicts[0].Type != TypeMismatch || queue.Conflicts[0].Field != "size" {
		t.Fatalf("review queue %+v", queue.Conflicts)
	}
	id := queue.Conflicts[0].Id
	if _, err := svc.ResolveConflict(ctx, &fedsyncv1.ResolveConflictRequest{Id: id, Choice: "sideways", Resolver: "coordinator"}); apierr.As(err).Code != apierr.InvalidArgument {
		t.Fatalf("bad choice: %v", err)
	}
	resp, err := svc.ResolveConflict(ctx, &fedsyncv1.ResolveConflictRequest{Id: id, Choice: "remote", Resolver: "coordinator"})
	if err != nil || resp.Version != 3 {
		t.Fatalf("resolve: %+v %v", resp, err)
	}
	got, _ := st.Get(ctx, "doc")
	if string(got.Value) != `{"size":"large","x":2}` || got.Fields["size"].Resolution != "review:coordinator" || got.Fields["size"].Writer != "coordinator" {
		t.Fatalf("after resolution: %s %+v", got.Value, got.Fields["size"])
	}
	if _, err := svc.ResolveConflict(ctx, &fedsyncv1.ResolveConflictRequest{Id: id, Choice: "local", Resolver: "coordinator"}); apierr.As(err).Code != apierr.VersionConflict {
		t.Fatalf("resolving twice: %v", err)
	}
}

func TestUnknownDataTypeIsRejected(t *testing.T) {
	svc := newTestService(t, newMemStore())
	d := delta("doc", "ai-001", 1, `{}`)
	d.DataType = "gone"
	if _, err := svc.Merge(context.Background(), d); apierr.As(err).Code != apierr.InvalidArgument {
		t.Fatalf("got %v", err)
	}
}
