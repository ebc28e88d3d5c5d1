// Package merge is fedsync's central coordinator merge (seed 3.2 step 5, 3.3): it
// consumes admitted deltas from Kafka and merges each into its document under the
// delta's consistency mode, resolving conflicts per field with the data type's
// resolvers, and commits the result through statestore by compare-and-set.
// Causal deltas wait (durably) until the deltas they depend on are committed.
// Strong deltas arrive over gRPC and are answered only after commit. Conflicts
// that need a person wait in the review queue.
package merge

import (
	"context"
	"encoding/json"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/datatypes"
	"github.com/fedsync/fedsync/libs/hlc"
	"github.com/fedsync/fedsync/libs/statedoc"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Service is the merge business logic.
type Service interface {
	// Merge applies an eventual or causal delta; it is idempotent per message id.
	Merge(ctx context.Context, d *fedsyncv1.Delta) (*MergeResult, error)
	// MergeBatch applies a batch of eventual and causal deltas (each id's in
	// order) with one statestore transaction per round; one result per delta.
	MergeBatch(ctx context.Context, req *MergeBatchRequest) (*MergeBatchResponse, error)
	// CommitStrong applies a strong delta by compare-and-set on its expected version.
	CommitStrong(ctx context.Context, req *fedsyncv1.CommitStrongRequest) (*fedsyncv1.CommitStrongResponse, error)
	// ResolveConflict settles a review-queue conflict with a committed change.
	ResolveConflict(ctx context.Context, req *fedsyncv1.ResolveConflictRequest) (*fedsyncv1.ResolveConflictResponse, error)
	// ListConflicts lists conflicts (the review queue with status "pending").
	ListConflicts(ctx context.Context, req *fedsyncv1.ListConflictsRequest) (*fedsyncv1.ListConflictsResponse, error)
}

// Outcomes of Merge.
const (
	Committed  = "committed"
	Superseded = "superseded"
	Duplicate  = "duplicate"
	Buffered   = "buffered"
	Rejected   = "rejected"
)

// MergeResult says what a merge did.
type MergeResult struct {
	// Version is the committed version, or the current one when nothing changed.
	Version int64
	// Outcome is committed, superseded (every field lost to a later write),
	// duplicate (the message id was applied before), buffered (a causal delta
	// waiting for its dependencies) or rejected.
	Outcome string
	// Conflicts found while merging.
	Conflicts []*fedsyncv1.Conflict
	// Reason says why a delta was rejected.
	Reason string
}

// StateStore is what merge needs of statestore.
type StateStore interface {
	Get(ctx context.Context, id string) (*fedsyncv1.State, error)
	Apply(ctx context.Context, req *fedsyncv1.ApplyRequest) (*fedsyncv1.ApplyResponse, error)
	GetFrontier(ctx context.Context) (map[string]int64, error)
	RecordOutcome(ctx context.Context, req *fedsyncv1.RecordOutcomeRequest) error
	// GetOutcome returns what became of a delta (not_found while unknown).
	GetOutcome(ctx context.Context, messageID string) (*fedsyncv1.Outcome, error)
	GetConflict(ctx context.Context, id string) (*fedsyncv1.Conflict, error)
	ListConflicts(ctx context.Context, req *fedsyncv1.ListConflictsRequest) (*fedsyncv1.ListConflictsResponse, error)
	BatchStore
}

type service struct {
	store      StateStore
	docs       *docCache
	types      *datatypes.Watcher
	engine     *Engine
	clock      *hlc.Clock
	causal     *causalQueue
	maxRetries int
}

// NewService returns the merge logic committing to store. causal holds causal
// deltas that wait for their dependencies.
func NewService(store StateStore, types *datatypes.Watcher, resolvers *Resolvers, causal *causalQueue, maxRetries int) *service {
	clock := hlc.New(nil)
	return &service{store: store, docs: newDocCache(defaultDocCache), types: types, engine: &Engine{Resolvers: resolvers, Now: func() int64 { return clock.Now() }},
		clock: clock, causal: causal, maxRetries: maxRetries}
}

func (s *service) Merge(ctx context.Context, d *fedsyncv1.Delta) (*MergeResult, error) {
	patch, ty, err := s.admit(d)
	if err != nil {
		return nil, err
	}
	s.clock.Observe(d.GetHlc())
	if d.GetConsistency() == fedsyncv1.Consistency_CONSISTENCY_CAUSAL {
		if s.causal == nil {
			return nil, apierr.New(apierr.Unavailable, "This merge instance has no causal buffer.")
		}
		return s.causal.offer(ctx, s, d)
	}
	return s.commit(ctx, d, patch, ty, false)
}

// defaultDocCache is the default size of the document cache in bytes.
const defaultDocCache = 64 << 20

// WithDocCache sizes the cache of documents this instance committed (0 turns
// it off: every batch reads its documents from statestore).
func (s *service) WithDocCache(maxBytes int) *service {
	s.docs = newDocCache(maxBytes)
	return s
}

// errNotReady says a causal delta's dependencies are not all committed.
var errNotReady = apierr.New(apierr.VersionConflict, "causal dependencies are not committed yet")

// commit merges d into its document and commits it, retrying compare-and-set.
func (s *service) commit(ctx context.Context, d *fedsyncv1.Delta, patch statedoc.Object, ty *datatypes.Type, causal bool) (*MergeResult, error) {
	var agent string
	var counter int64
	if causal {
		agent, counter = d.GetWriter(), d.GetVectorClock()[d.GetWriter()]
	}
	s.docs.forget(d.GetId())
	for attempt := 0; attempt < s.maxRetries; attempt++ {
		cur, err := s.current(ctx, d.GetId())
		if err != nil {
			return nil, err
		}
		if err := checkType(cur, d); err != nil {
			return nil, err
		}
		plan, err := s.engine.Plan(cur, d, patch, ty, false)
		if err != nil {
			return nil, err
		}
		if len(plan.Patch) == 0 {
			o := supersededOutcome(d, cur, plan)
			o.CausalAgent, o.CausalCounter = agent, counter
			if err := s.store.RecordOutcome(ctx, o); err != nil {
				return nil, err
			}
			return &MergeResult{Version: cur.GetVersion(), Outcome: Superseded, Conflicts: plan.Conflicts}, nil
		}
		req := applyRequest(d, plan, cur.GetVersion())
		req.CausalAgent, req.CausalCounter = agent, counter
		resp, err := s.store.Apply(ctx, req)
		if e := apierr.As(err); err != nil && e.Code == apierr.VersionConflict {
			if _, causalMiss := e.Details["frontier"]; causalMiss {
				return nil, errNotReady
			}
			continue // another commit won the race: merge again on top of it
		}
		if err != nil {
			return nil, err
		}
		if resp.GetDuplicate() {
			return &MergeResult{Version: resp.GetVersion(), Outcome: Duplicate}, nil
		}
		return &MergeResult{Version: resp.GetVersion(), Outcome: Committed, Conflicts: plan.Conflicts}, nil
	}
	return nil, apierr.New(apierr.Unavailable, "Merging %s: compare-and-set kept conflicting %d times.", d.GetId(), s.maxRetries)
}

// checkType refuses a delta whose data type is not its stored document's.
func checkType(cur *fedsyncv1.State, d *fedsyncv1.Delta) error {
	if cur.GetVersion() > 0 && cur.GetDataType() != d.GetDataType() {
		return apierr.New(apierr.InvalidArgument, "State %s has data_type %s, not %s.", d.GetId(), cur.GetDataType(), d.GetDataType())
	}
	return nil
}

// applyRequest is the commit of d's plan on version expected of its document.
func applyRequest(d *fedsyncv1.Delta, plan Plan, expected int64) *fedsyncv1.ApplyRequest {
	return &fedsyncv1.ApplyRequest{
		Id: d.GetId(), DataType: d.GetDataType(), PatchFields: plan.Patch.Fields(), Fields: plan.Fields,
		ExpectedVersion: expected, HasExpectedVersion: true, VectorClock: d.GetVectorClock(),
		MessageId: d.GetMessageId(), Writer: d.GetWriter(), AdmittedAt: d.GetHlc(), Region: d.GetRegion(),
		Conflicts: plan.Conflicts,
	}
}

// supersededOutcome records that d changed nothing of cur: every field lost to
// a later write or waits for review.
func supersededOutcome(d *fedsyncv1.Delta, cur *fedsyncv1.State, plan Plan) *fedsyncv1.RecordOutcomeRequest {
	return &fedsyncv1.RecordOutcomeRequest{
		Outcome:   &fedsyncv1.Outcome{MessageId: d.GetMessageId(), StateId: d.GetId(), Status: Superseded, Version: cur.GetVersion(), Reason: "every field lost to a later write or waits for review"},
		Conflicts: plan.Conflicts,
	}
}

// reject records that a delta will never be applied, with why.
func (s *service) reject(ctx context.Context, d *fedsyncv1.Delta, kind, reason string) error {
	return s.store.RecordOutcome(ctx, s.rejection(d, kind, reason))
}

func (s *service) CommitStrong(ctx context.Context, req *fedsyncv1.CommitStrongRequest) (*fedsyncv1.CommitStrongResponse, error) {
	d := req.GetDelta()
	patch, ty, err := s.admit(d)
	if err != nil {
		return nil, err
	}
	if !d.GetHasExpectedVersion() {
		return nil, apierr.New(apierr.InvalidArgument, "Field expected_version is required with consistency strong.")
	}
	s.clock.Observe(d.GetHlc())
	s.docs.forget(d.GetId())
	cur, err := s.current(ctx, d.GetId())
	if err != nil {
		return nil, err
	}
	if cur.GetVersion() != d.GetExpectedVersion() && d.GetMessageId() != "" {
		// A retry of a strong write that committed while its first answer was
		// lost (a 503 after the commit) gets the first answer, not a conflict
		// with its own commit.
		o, err := s.store.GetOutcome(ctx, d.GetMessageId())
		if err != nil && apierr.As(err).Code != apierr.NotFound {
			return nil, err
		}
		if err == nil && o.GetStatus() == Committed && o.GetStateId() == d.GetId() {
			return &fedsyncv1.CommitStrongResponse{Version: o.GetVersion()}, nil
		}
	}
	if cur.GetVersion() != d.GetExpectedVersion() {
		return nil, apierr.New(apierr.VersionConflict, "State %s is at version %d, not %d.", d.GetId(), cur.GetVersion(), d.GetExpectedVersion()).
			WithDetail("current_version", cur.GetVersion())
	}
	if err := checkType(cur, d); err != nil {
		return nil, err
	}
	plan, err := s.engine.Plan(cur, d, patch, ty, true)
	if err != nil {
		return nil, err
	}
	resp, err := s.store.Apply(ctx, applyRequest(d, plan, d.GetExpectedVersion()))
	if err != nil {
		return nil, err
	}
	return &fedsyncv1.CommitStrongResponse{Version: resp.GetVersion()}, nil
}

func (s *service) ResolveConflict(ctx context.Context, req *fedsyncv1.ResolveConflictRequest) (*fedsyncv1.ResolveConflictResponse, error) {
	if req.GetResolver() == "" {
		return nil, apierr.New(apierr.Unauthenticated, "Resolving a conflict needs an authenticated resolver.")
	}
	c, err := s.store.GetConflict(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	if c.GetStatus() != "pending" {
		return nil, apierr.New(apierr.VersionConflict, "Conflict %s is %s, not pending.", c.GetId(), c.GetStatus())
	}
	s.docs.forget(c.GetStateId())
	for attempt := 0; attempt < s.maxRetries; attempt++ {
		cur, err := s.current(ctx, c.GetStateId())
		if err != nil {
			return nil, err
		}
		var value json.RawMessage
		switch req.GetChoice() {
		case "local":
			value = json.RawMessage("null")
			if cur != nil {
				obj, _ := statedoc.DecodeObject(cur.GetValue())
				if v, ok := obj[c.GetField()]; ok {
					value = v
				}
			}
		case "remote":
			value = c.GetRemote()
		case "value":
			if !json.Valid(req.GetValue()) || len(req.GetValue()) == 0 {
				return nil, apierr.New(apierr.InvalidArgument, "Field value must be a JSON value with choice value.")
			}
			value = req.GetValue()
		default:
			return nil, apierr.New(apierr.InvalidArgument, "Field choice must be local, remote or value, not %q.", req.GetChoice())
		}
		patch := statedoc.Object{c.GetField(): value}
		if ty, ok := s.types.Get().Lookup(c.GetDataType()); ok {
			if err := ty.ValidatePatch(patch); err != nil {
				return nil, err
			}
		}
		stamp := s.clock.Now()
		resp, err := s.store.Apply(ctx, &fedsyncv1.ApplyRequest{
			Id: c.GetStateId(), DataType: c.GetDataType(), Patch: patch.Encode(),
			Fields:          map[string]*fedsyncv1.FieldMeta{c.GetField(): {Hlc: stamp, Writer: req.GetResolver(), Resolution: "review:" + req.GetResolver()}},
			ExpectedVersion: cur.GetVersion(), HasExpectedVersion: true, MessageId: "resolve-" + c.GetId(),
			Writer: req.GetResolver(), AdmittedAt: stamp, ResolvesConflictId: c.GetId(),
		})
		if e := apierr.As(err); err != nil && e.Code == apierr.VersionConflict && e.Details["current_version"] != nil {
			continue
		}
		if err != nil {
			return nil, err
		}
		c.Status, c.ResolvedBy, c.Resolved = "resolved", req.GetResolver(), value
		return &fedsyncv1.ResolveConflictResponse{Conflict: c, Version: resp.GetVersion()}, nil
	}
	return nil, apierr.New(apierr.Unavailable, "Resolving %s: the document kept changing.", c.GetId())
}

func (s *service) ListConflicts(ctx context.Context, req *fedsyncv1.ListConflictsRequest) (*fedsyncv1.ListConflictsResponse, error) {
	return s.store.ListConflicts(ctx, req)
}

// current returns the stored document, or nil when it does not exist yet.
func (s *service) current(ctx context.Context, id string) (*fedsyncv1.State, error) {
	cur, err := s.store.Get(ctx, id)
	if err != nil && apierr.As(err).Code == apierr.NotFound {
		return nil, nil
	}
	return cur, err
}

// deltaPatch returns d's patch: the fields validation decoded, or (for a delta
// admitted before patches travelled as fields) its JSON object decoded.
func deltaPatch(d *fedsyncv1.Delta) (statedoc.Object, error) {
	return statedoc.PatchOf(d.GetPatchFields(), d.GetPatch())
}

// patchJSON returns d's patch as a JSON object, for records people read.
func patchJSON(d *fedsyncv1.Delta) []byte {
	if len(d.GetPatch()) > 0 {
		return d.GetPatch()
	}
	return statedoc.FromFields(d.GetPatchFields()).Encode()
}

// admit decodes and checks a delta against the data-type registry.
func (s *service) admit(d *fedsyncv1.Delta) (statedoc.Object, *datatypes.Type, error) {
	if d == nil {
		return nil, nil, apierr.New(apierr.InvalidArgument, "Field delta is required.")
	}
	if !statedoc.ValidID(d.GetId()) {
		return nil, nil, apierr.New(apierr.InvalidArgument, "Field id %s.", statedoc.IDRule)
	}
	patch, err := deltaPatch(d)
	if err != nil {
		return nil, nil, err
	}
	ty, err := s.types.Get().Type(d.GetDataType())
	if err != nil {
		return nil, nil, err
	}
	if d.GetConsistency() == fedsyncv1.Consistency_CONSISTENCY_CAUSAL && d.GetVectorClock()[d.GetWriter()] < 1 {
		return nil, nil, apierr.New(apierr.InvalidArgument, "Field vector_clock must count the writer's own deltas (%s >= 1) with consistency causal.", d.GetWriter())
	}
	return patch, ty, nil
}
