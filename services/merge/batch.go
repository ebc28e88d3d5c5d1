package merge

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/bytelru"
	"github.com/fedsync/fedsync/libs/datatypes"
	"github.com/fedsync/fedsync/libs/statedoc"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// MergeBatchRequest is a batch of admitted eventual and causal deltas, in the
// order they were admitted per id.
type MergeBatchRequest struct {
	Deltas []*fedsyncv1.Delta
	// Traces, when set, holds each delta's span context (same order): its
	// commit in statestore continues that trace.
	Traces []trace.SpanContext
}

// MergeBatchResponse holds one result per delta, in the request's order.
type MergeBatchResponse struct {
	Results []*MergeResult
}

// BatchStore is what the batched merge needs of statestore besides StateStore.
type BatchStore interface {
	GetMany(ctx context.Context, ids []string) ([]*fedsyncv1.State, error)
	ApplyBatch(ctx context.Context, req *fedsyncv1.ApplyBatchRequest) (*fedsyncv1.ApplyBatchResponse, error)
}

// maxApplyBytes bounds the patches of one ApplyBatch call. Statestore takes
// gRPC messages up to 64 MiB, but a call must also finish well within the
// 3 s a peer call may take: about 2 MiB of patches is a few hundred
// milliseconds of commit work even for large values (BenchmarkApplyBatch).
const maxApplyBytes = 2 << 20

// queued is one delta of a batch on its way to a commit.
type queued struct {
	i     int
	d     *fedsyncv1.Delta
	patch statedoc.Object
	ty    *datatypes.Type
	// sc is the delta's span context; invalid when it is not traced.
	sc trace.SpanContext
}

// MergeBatch merges a batch of deltas: each id's deltas in order, every id's
// document read once (or taken from the cache of documents this instance
// committed), and every commit and outcome of the batch in one statestore
// transaction. No versions are coalesced: each delta that changes its document
// commits its own version. A stale cached document costs a compare-and-set
// failure and a retry of that id, never a lost or reordered update. Causal
// deltas go one by one through the causal buffer.
func (s *service) MergeBatch(ctx context.Context, req *MergeBatchRequest) (*MergeBatchResponse, error) {
	results := make([]*MergeResult, len(req.Deltas))
	var outcomes []*fedsyncv1.RecordOutcomeRequest
	byID := map[string][]*queued{}
	var order []string
	causal := map[string]bool{}
	for i, d := range req.Deltas {
		patch, ty, err := s.admit(d)
		if err != nil {
			if apierr.IsInfrastructure(err) {
				return nil, err
			}
			reason := apierr.As(err).Message
			outcomes = append(outcomes, s.rejection(d, "consistency", reason))
			results[i] = &MergeResult{Outcome: Rejected, Reason: reason}
			continue
		}
		s.clock.Observe(d.GetHlc())
		if _, ok := byID[d.GetId()]; !ok {
			order = append(order, d.GetId())
		}
		q := &queued{i: i, d: d, patch: patch, ty: ty}
		if i < len(req.Traces) {
			q.sc = req.Traces[i]
		}
		byID[d.GetId()] = append(byID[d.GetId()], q)
		if d.GetConsistency() == fedsyncv1.Consistency_CONSISTENCY_CAUSAL {
			causal[d.GetId()] = true
		}
	}
	var batchIDs, causalIDs []string
	for _, id := range order {
		if causal[id] {
			causalIDs = append(causalIDs, id)
		} else {
			batchIDs = append(batchIDs, id)
		}
	}
	todo := map[string][]*queued{}
	for _, id := range batchIDs {
		todo[id] = byID[id]
	}
	for attempt := 0; len(todo) > 0 || len(outcomes) > 0; attempt++ {
		if attempt >= s.maxRetries {
			return nil, apierr.New(apierr.Unavailable, "Merging a batch: compare-and-set kept conflicting %d times.", s.maxRetries)
		}
		var err error
		todo, outcomes, err = s.mergeRound(ctx, batchIDs, todo, outcomes, results)
		if err != nil {
			return nil, err
		}
	}
	// Causal deltas, one id after another, each id's deltas in order.
	for _, id := range causalIDs {
		for _, q := range byID[id] {
			res, err := s.Merge(traceContext(ctx, q.sc), q.d)
			if err != nil {
				if apierr.IsInfrastructure(err) {
					return nil, err
				}
				reason := apierr.As(err).Message
				if rerr := s.reject(ctx, q.d, "consistency", reason); rerr != nil {
					return nil, rerr
				}
				res = &MergeResult{Outcome: Rejected, Reason: reason}
			}
			results[q.i] = res
		}
	}
	return &MergeBatchResponse{Results: results}, nil
}

// mergeRound plans every id of todo on its current document and commits the
// plans and outcomes. It returns what must be merged again (ids whose document
// had moved on) and outcomes still to record.
func (s *service) mergeRound(ctx context.Context, order []string, todo map[string][]*queued, outcomes []*fedsyncv1.RecordOutcomeRequest, results []*MergeResult) (map[string][]*queued, []*fedsyncv1.RecordOutcomeRequest, error) {
	if err := s.loadDocs(ctx, todo); err != nil {
		return nil, nil, err
	}
	type item struct {
		q    *queued
		req  *fedsyncv1.ApplyRequest
		next *fedsyncv1.State
		plan Plan
		size int
	}
	var items []item
	type settled struct {
		q   *queued
		res *MergeResult
	}
	var superseded []settled
	now := time.Now().UnixNano()
	for _, id := range order {
		list := todo[id]
		if len(list) == 0 {
			continue
		}
		work := s.docs.get(id) // a private copy
		for _, q := range list {
			d := q.d
			reject := func(err error) {
				reason := apierr.As(err).Message
				outcomes = append(outcomes, s.rejection(d, "consistency", reason))
				results[q.i] = &MergeResult{Outcome: Rejected, Reason: reason}
			}
			if err := checkType(work, d); err != nil {
				reject(err)
				continue
			}
			plan, err := s.engine.Plan(work, d, q.patch, q.ty, false)
			if err != nil {
				reject(err)
				continue
			}
			if len(plan.Patch) == 0 {
				outcomes = append(outcomes, supersededOutcome(d, work, plan))
				superseded = append(superseded, settled{q, &MergeResult{Version: work.GetVersion(), Outcome: Superseded, Conflicts: plan.Conflicts}})
				continue
			}
			req := applyRequest(d, plan, work.GetVersion())
			if q.sc.IsValid() {
				req.Trace = propagation.MapCarrier{}
				otel.GetTextMapPropagator().Inject(trace.ContextWithSpanContext(ctx, q.sc), propagation.MapCarrier(req.Trace))
			}
			if work == nil {
				work = &fedsyncv1.State{}
			}
			next, err := statedoc.NextState(work, req, plan.Patch, now)
			if err != nil {
				return nil, nil, err
			}
			items = append(items, item{q: q, req: req, next: next, plan: plan, size: plan.Patch.Size()})
			work = next
		}
	}
	again := map[string][]*queued{}
	// retry merges id's deltas again from q (after q with skip), on a fresh read.
	retry := func(id string, q *queued, skip bool) {
		s.docs.forget(id)
		if _, ok := again[id]; ok {
			return
		}
		for k, x := range todo[id] {
			if x == q {
				if skip {
					k++
				}
				if k < len(todo[id]) {
					again[id] = todo[id][k:]
				}
				return
			}
		}
	}
	// Commit in calls of bounded size; an id whose commit failed in one call
	// sends none of its later items in the next.
	for start := 0; start < len(items) || len(outcomes) > 0; {
		end, size := start, 0
		for end < len(items) && (end == start || size+items[end].size <= maxApplyBytes) {
			size += items[end].size
			end++
		}
		var chunk []item
		for _, it := range items[start:end] {
			if _, failed := again[it.req.GetId()]; !failed {
				chunk = append(chunk, it)
			}
		}
		reqs := make([]*fedsyncv1.ApplyRequest, len(chunk))
		for k, it := range chunk {
			reqs[k] = it.req
		}
		resp, err := s.store.ApplyBatch(ctx, &fedsyncv1.ApplyBatchRequest{Items: reqs, Outcomes: outcomes})
		if err != nil {
			for id := range todo {
				s.docs.forget(id)
			}
			return nil, nil, err
		}
		outcomes = nil
		for _, st := range superseded {
			results[st.q.i] = st.res
		}
		superseded = nil
		for k, r := range resp.GetResults() {
			it := chunk[k]
			id := it.req.GetId()
			switch {
			case r.GetErrorCode() == "" && r.GetDuplicate():
				results[it.q.i] = &MergeResult{Version: r.GetVersion(), Outcome: Duplicate}
				s.docs.forget(id) // later items of the id expected a new version
			case r.GetErrorCode() == "":
				it.next.Version = r.GetVersion()
				s.docs.put(it.next)
				results[it.q.i] = &MergeResult{Version: r.GetVersion(), Outcome: Committed, Conflicts: it.plan.Conflicts}
			case r.GetErrorCode() == string(apierr.VersionConflict) || r.GetErrorCode() == "aborted":
				retry(id, it.q, false)
			default:
				// The commit can never apply (its data type changed, say):
				// record that, and merge the id's later deltas again.
				reason := r.GetErrorMessage()
				outcomes = append(outcomes, s.rejection(it.q.d, "consistency", reason))
				results[it.q.i] = &MergeResult{Outcome: Rejected, Reason: reason}
				retry(id, it.q, true)
			}
		}
		start = end
		if start >= len(items) && len(outcomes) > 0 && len(again) > 0 {
			break // recorded with the next round's commits
		}
	}
	return again, outcomes, nil
}

// rejection is the outcome of a delta that will never apply.
func (s *service) rejection(d *fedsyncv1.Delta, kind, reason string) *fedsyncv1.RecordOutcomeRequest {
	c := &fedsyncv1.Conflict{
		Id: ConflictID(d.GetMessageId(), "*"+kind), StateId: d.GetId(), DataType: d.GetDataType(), Type: kind,
		Resolution: Rejected, Remote: patchJSON(d), RemoteWriter: d.GetWriter(), MessageId: d.GetMessageId(),
		DetectedAt: s.clock.Now(), Status: "resolved", Detail: reason,
	}
	req := &fedsyncv1.RecordOutcomeRequest{
		Outcome:   &fedsyncv1.Outcome{MessageId: d.GetMessageId(), StateId: d.GetId(), Status: Rejected, Reason: reason},
		Conflicts: []*fedsyncv1.Conflict{c},
	}
	if d.GetConsistency() == fedsyncv1.Consistency_CONSISTENCY_CAUSAL {
		// Settled: the writer's later deltas need not wait for this one forever.
		req.CausalAgent, req.CausalCounter = d.GetWriter(), d.GetVectorClock()[d.GetWriter()]
	}
	return req
}

// loadDocs reads the documents of todo's ids that the cache does not hold, in
// one call.
func (s *service) loadDocs(ctx context.Context, todo map[string][]*queued) error {
	var missing []string
	for id, list := range todo {
		if len(list) > 0 && !s.docs.has(id) {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	states, err := s.store.GetMany(ctx, missing)
	if err != nil {
		return err
	}
	found := map[string]bool{}
	for _, st := range states {
		s.docs.put(st)
		found[st.GetId()] = true
	}
	for _, id := range missing {
		if !found[id] {
			s.docs.putAbsent(id)
		}
	}
	return nil
}

// docCache holds the latest committed document of the ids this instance merged
// recently, bounded by bytes (least recently used out first). It is a guess
// checked by every commit's compare-and-set: a stale entry (another instance
// took the partition over for a while, a strong write, a review resolution)
// costs one retry. A nil document records that the id does not exist.
type docCache struct {
	cache *bytelru.Cache[*fedsyncv1.State]
}

func newDocCache(maxBytes int) *docCache {
	return &docCache{cache: bytelru.New[*fedsyncv1.State](int64(maxBytes))}
}

func (c *docCache) has(id string) bool { return c.cache.Has(id) }

// get returns a copy of the cached document that the caller may change (nil
// when the document does not exist or is not cached).
func (c *docCache) get(id string) *fedsyncv1.State {
	st, ok := c.cache.Get(id)
	if !ok || st == nil {
		return nil
	}
	cp := &fedsyncv1.State{Id: st.Id, DataType: st.DataType, Value: st.Value, Version: st.Version, VectorClock: st.VectorClock,
		UpdatedAt: st.UpdatedAt, UpdatedBy: st.UpdatedBy, Fields: make(map[string]*fedsyncv1.FieldMeta, len(st.Fields))}
	for k, v := range st.Fields {
		cp.Fields[k] = v
	}
	return cp
}

func (c *docCache) put(st *fedsyncv1.State) {
	c.cache.Put(st.GetId(), st, int64(len(st.GetValue())+64*len(st.GetFields())+128))
}

func (c *docCache) putAbsent(id string) { c.cache.Put(id, nil, 64) }

func (c *docCache) forget(id string) { c.cache.Remove(id) }

// traceContext is ctx with sc as its span, when sc is valid: what a delta's
// own calls continue.
func traceContext(ctx context.Context, sc trace.SpanContext) context.Context {
	if !sc.IsValid() {
		return ctx
	}
	return trace.ContextWithSpanContext(ctx, sc)
}
