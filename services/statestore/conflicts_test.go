package statestore

import (
	"context"
	"fmt"
	"testing"

	"github.com/fedsync/fedsync/libs/apierr"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

func TestConflictsOutcomesAndReviewQueue(t *testing.T) {
	s, st := newTestService(t, t.TempDir())
	ctx := context.Background()
	pending := &fedsyncv1.Conflict{Id: "cf-1", StateId: "doc", Field: "size", Type: "type_mismatch", Resolution: "review", Status: "pending"}
	resolved := &fedsyncv1.Conflict{Id: "cf-2", StateId: "doc", Field: "x", Type: "write_write", Resolution: "lww", Status: "resolved"}
	r := apply(t, s, &fedsyncv1.ApplyRequest{Id: "doc", DataType: "note", Patch: []byte(`{"x":1}`), MessageId: "m1", Conflicts: []*fedsyncv1.Conflict{pending, resolved}})
	// Re-delivery records nothing twice.
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "doc", DataType: "note", Patch: []byte(`{"x":1}`), MessageId: "m1", Conflicts: []*fedsyncv1.Conflict{pending}})
	if o, err := s.GetOutcome(ctx, &fedsyncv1.GetOutcomeRequest{MessageId: "m1"}); err != nil || o.Outcome.Status != "committed" || o.Outcome.Version != r.Version {
		t.Fatalf("outcome: %v %v", o, err)
	}
	q, _ := s.ListConflicts(ctx, &fedsyncv1.ListConflictsRequest{Status: "pending"})
	all, _ := s.ListConflicts(ctx, &fedsyncv1.ListConflictsRequest{})
	if len(q.Conflicts) != 1 || q.Conflicts[0].Id != "cf-1" || len(all.Conflicts) != 2 {
		t.Fatalf("queue %v, all %v", q.Conflicts, all.Conflicts)
	}
	keys, _, _ := st.conflictOutbox(100)
	if len(keys) != 2 {
		t.Fatalf("conflict outbox holds %d, want 2", len(keys))
	}
	// Resolving is atomic with its commit, and only once.
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "doc", DataType: "note", Patch: []byte(`{"size":"big"}`), MessageId: "resolve-cf-1", Writer: "coordinator", ResolvesConflictId: "cf-1"})
	c, _ := s.GetConflict(ctx, &fedsyncv1.GetConflictRequest{Id: "cf-1"})
	if c.Conflict.Status != "resolved" || c.Conflict.ResolvedBy != "coordinator" {
		t.Fatalf("after resolve: %+v", c.Conflict)
	}
	_, err := s.Apply(ctx, &fedsyncv1.ApplyRequest{Id: "doc", DataType: "note", Patch: []byte(`{"size":"x"}`), MessageId: "again", ResolvesConflictId: "cf-1"})
	if apierr.As(err).Code != apierr.VersionConflict {
		t.Fatalf("second resolve: %v", err)
	}
	got, _ := s.Get(ctx, &fedsyncv1.GetRequest{Id: "doc"})
	if string(got.State.Value) != `{"size":"big","x":1}` {
		t.Fatalf("a refused resolution must commit nothing: %s", got.State.Value)
	}
	if _, err := s.GetOutcome(ctx, &fedsyncv1.GetOutcomeRequest{MessageId: "never"}); apierr.As(err).Code != apierr.NotFound {
		t.Fatalf("unknown outcome: %v", err)
	}
	// RecordOutcome never overwrites an earlier outcome.
	s.RecordOutcome(ctx, &fedsyncv1.RecordOutcomeRequest{Outcome: &fedsyncv1.Outcome{MessageId: "m1", Status: "superseded"}})
	if o, _ := s.GetOutcome(ctx, &fedsyncv1.GetOutcomeRequest{MessageId: "m1"}); o.Outcome.Status != "committed" {
		t.Fatalf("outcome overwritten: %v", o.Outcome)
	}
}

func TestCausalFrontierIsCheckedInTheCommit(t *testing.T) {
	s, _ := newTestService(t, t.TempDir())
	ctx := context.Background()
	_, err := s.Apply(ctx, &fedsyncv1.ApplyRequest{Id: "a", DataType: "belief", Patch: []byte(`{}`), MessageId: "b2", CausalAgent: "ai-001", CausalCounter: 2})
	if e := apierr.As(err); e.Code != apierr.VersionConflict || e.Details["frontier"] == nil {
		t.Fatalf("counter 2 before 1: %v", err)
	}
	for i := int64(1); i <= 2; i++ {
		apply(t, s, &fedsyncv1.ApplyRequest{Id: "a", DataType: "belief", Patch: []byte(`{}`), MessageId: fmt.Sprint("b", i), CausalAgent: "ai-001", CausalCounter: i})
	}
	s.RecordOutcome(ctx, &fedsyncv1.RecordOutcomeRequest{Outcome: &fedsyncv1.Outcome{MessageId: "b3", Status: "superseded"}, CausalAgent: "ai-001", CausalCounter: 3})
	f, _ := s.GetFrontier(ctx, &fedsyncv1.GetFrontierRequest{})
	if f.Frontier["ai-001"] != 3 {
		t.Fatalf("frontier %v", f.Frontier)
	}
}
