// Package statestore is fedsync's global state: durable, versioned documents in
// bbolt, the read API (GET and query), and the committed-change log that every
// commit appends to in the same transaction and that an outbox publisher copies to
// Kafka's fedsync.committed, so no change is lost between commit and publish.
package statestore

import (
	"context"
	"encoding/base64"
	"errors"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/statedoc"
	"github.com/fedsync/fedsync/libs/telemetry"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Service is the statestore's business logic.
type Service interface {
	Apply(ctx context.Context, req *fedsyncv1.ApplyRequest) (*fedsyncv1.ApplyResponse, error)
	// ApplyBatch commits many changes and outcomes in one transaction.
	ApplyBatch(ctx context.Context, req *fedsyncv1.ApplyBatchRequest) (*fedsyncv1.ApplyBatchResponse, error)
	Get(ctx context.Context, req *fedsyncv1.GetRequest) (*fedsyncv1.GetResponse, error)
	// GetMany returns the documents of several ids that exist.
	GetMany(ctx context.Context, req *fedsyncv1.GetManyRequest) (*fedsyncv1.GetManyResponse, error)
	Query(ctx context.Context, req *fedsyncv1.QueryRequest) (*fedsyncv1.QueryResponse, error)
	ReadLog(ctx context.Context, req *fedsyncv1.ReadLogRequest) (*fedsyncv1.ReadLogResponse, error)
	GetFrontier(ctx context.Context, req *fedsyncv1.GetFrontierRequest) (*fedsyncv1.GetFrontierResponse, error)
	// GetDigests returns a level of the digest tree of the documents as of a
	// log position (consistency verification, seed 8.2).
	GetDigests(ctx context.Context, req *fedsyncv1.GetDigestsRequest) (*fedsyncv1.GetDigestsResponse, error)
	RecordOutcome(ctx context.Context, req *fedsyncv1.RecordOutcomeRequest) (*fedsyncv1.RecordOutcomeResponse, error)
	GetOutcome(ctx context.Context, req *fedsyncv1.GetOutcomeRequest) (*fedsyncv1.GetOutcomeResponse, error)
	ListConflicts(ctx context.Context, req *fedsyncv1.ListConflictsRequest) (*fedsyncv1.ListConflictsResponse, error)
	GetConflict(ctx context.Context, req *fedsyncv1.GetConflictRequest) (*fedsyncv1.GetConflictResponse, error)
	GetControl(ctx context.Context, req *fedsyncv1.GetControlRequest) (*fedsyncv1.GetControlResponse, error)
	SetControl(ctx context.Context, req *fedsyncv1.SetControlRequest) (*fedsyncv1.SetControlResponse, error)
	// CreateBackup, ListBackups, VerifyBackup and RestoreBackup keep the
	// cold backups (backup.go).
	CreateBackup(ctx context.Context, req *fedsyncv1.CreateBackupRequest) (*fedsyncv1.CreateBackupResponse, error)
	ListBackups(ctx context.Context, req *fedsyncv1.ListBackupsRequest) (*fedsyncv1.ListBackupsResponse, error)
	VerifyBackup(ctx context.Context, req *fedsyncv1.VerifyBackupRequest) (*fedsyncv1.VerifyBackupResponse, error)
	RestoreBackup(ctx context.Context, req *fedsyncv1.RestoreBackupRequest) (*fedsyncv1.RestoreBackupResponse, error)
}

type service struct {
	store *store
	// repl puts every change through the Raft group (or, unreplicated,
	// straight into the store).
	repl     proposer
	fsm      *fsm
	maxLimit int
	// committed is signalled after every commit so the publisher wakes up.
	committed chan struct{}
	// backups keeps the cold backups; nil without a Raft group.
	backups *backups
}

// newService returns the service over st, applying changes directly; Run
// replaces repl with the Raft group.
func newService(st *store, maxLimit int) *service {
	s := &service{store: st, maxLimit: maxLimit, committed: make(chan struct{}, 1)}
	s.fsm = newFSM(st, s.wake)
	s.repl = localProposer{f: s.fsm}
	return s
}

func (s *service) Apply(ctx context.Context, req *fedsyncv1.ApplyRequest) (*fedsyncv1.ApplyResponse, error) {
	if err := checkApply(req); err != nil {
		return nil, err
	}
	items, err := s.applyBatch(ctx, &fedsyncv1.ApplyBatchRequest{Items: []*fedsyncv1.ApplyRequest{req}})
	if err != nil {
		return nil, err
	}
	if it := items[0]; it.err != nil {
		return nil, it.err
	}
	c := items[0].out
	return &fedsyncv1.ApplyResponse{Version: c.version, Duplicate: c.duplicate, Seq: c.seq}, nil
}

// checkApply refuses an item that can never commit, before any transaction.
func checkApply(req *fedsyncv1.ApplyRequest) error {
	if !statedoc.ValidID(req.GetId()) {
		return apierr.New(apierr.InvalidArgument, "Field id %s.", statedoc.IDRule)
	}
	if req.GetDataType() == "" {
		return apierr.New(apierr.InvalidArgument, "Field data_type is required.")
	}
	return nil
}

// maxGRPCMessage is the largest gRPC message statestore takes: a batch of
// commits of documents up to the contract's 1 MiB.
const maxGRPCMessage = 64 << 20

// maxBatchItems bounds one ApplyBatch.
const maxBatchItems = 10000

func (s *service) ApplyBatch(ctx context.Context, req *fedsyncv1.ApplyBatchRequest) (*fedsyncv1.ApplyBatchResponse, error) {
	if n := len(req.GetItems()) + len(req.GetOutcomes()); n > maxBatchItems {
		return nil, apierr.New(apierr.InvalidArgument, "A batch holds at most %d items and outcomes, not %d.", maxBatchItems, n)
	}
	for _, o := range req.GetOutcomes() {
		if o.GetOutcome().GetMessageId() == "" {
			return nil, apierr.New(apierr.InvalidArgument, "Field outcomes.outcome.message_id is required.")
		}
	}
	items, err := s.applyBatch(ctx, req)
	if err != nil {
		return nil, err
	}
	resp := &fedsyncv1.ApplyBatchResponse{Results: make([]*fedsyncv1.ApplyResult, len(items))}
	for i, it := range items {
		resp.Results[i] = resultOf(it)
	}
	return resp, nil
}

// applyBatch puts req through as one command and returns what became of each
// item. Each item that carries a trace gets a span of its own, whose context
// goes into the command so that its log entry continues that trace.
func (s *service) applyBatch(ctx context.Context, req *fedsyncv1.ApplyBatchRequest) ([]*batchItem, error) {
	traced := make([]*batchItem, len(req.GetItems()))
	for i, r := range req.GetItems() {
		traced[i] = &batchItem{req: r}
	}
	spans := itemSpans(ctx, traced)
	for _, it := range traced {
		it.req.Trace = it.trace
	}
	trace := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, trace)
	res, err := s.repl.propose(ctx, &command{kind: cmdBatch, now: s.store.now().UnixNano(), body: req, trace: trace})
	var items []*batchItem
	if err == nil {
		items = res.(*batchResult).items
	}
	spans.end(items, err)
	return items, err
}

func resultOf(it *batchItem) *fedsyncv1.ApplyResult {
	if it.err == nil {
		return &fedsyncv1.ApplyResult{Version: it.out.version, Duplicate: it.out.duplicate, Seq: it.out.seq}
	}
	e := apierr.As(it.err)
	r := &fedsyncv1.ApplyResult{ErrorCode: string(e.Code), ErrorMessage: e.Message}
	if it.err == errAborted {
		r.ErrorCode = "aborted"
	}
	if v, ok := e.Details["current_version"].(int64); ok {
		r.CurrentVersion = v
	}
	if _, ok := e.Details["frontier"]; ok {
		r.CausalNotReady = true
	}
	return r
}

func (s *service) GetMany(_ context.Context, req *fedsyncv1.GetManyRequest) (*fedsyncv1.GetManyResponse, error) {
	if len(req.GetIds()) > maxBatchItems {
		return nil, apierr.New(apierr.InvalidArgument, "GetMany takes at most %d ids, not %d.", maxBatchItems, len(req.GetIds()))
	}
	for _, id := range req.GetIds() {
		if !statedoc.ValidID(id) {
			return nil, apierr.New(apierr.InvalidArgument, "Field ids: %q %s.", id, statedoc.IDRule)
		}
	}
	states, err := s.store.getMany(req.GetIds())
	if err != nil {
		return nil, err
	}
	return &fedsyncv1.GetManyResponse{States: states}, nil
}

func (s *service) Get(_ context.Context, req *fedsyncv1.GetRequest) (*fedsyncv1.GetResponse, error) {
	if !statedoc.ValidID(req.GetId()) {
		return nil, apierr.New(apierr.InvalidArgument, "Field id %s.", statedoc.IDRule)
	}
	st, err := s.store.get(req.GetId())
	if errors.Is(err, errNotFound) {
		return nil, apierr.New(apierr.NotFound, "State %s does not exist.", req.GetId())
	}
	if err != nil {
		return nil, err
	}
	return &fedsyncv1.GetResponse{State: st}, nil
}

func (s *service) Query(_ context.Context, req *fedsyncv1.QueryRequest) (*fedsyncv1.QueryResponse, error) {
	limit := int(req.GetLimit())
	switch {
	case limit == 0:
		limit = 100
	case limit < 0 || limit > s.maxLimit:
		return nil, apierr.New(apierr.InvalidArgument, "Field limit must be between 1 and %d.", s.maxLimit)
	}
	var after string
	if req.GetPageToken() != "" {
		b, err := base64.RawURLEncoding.DecodeString(req.GetPageToken())
		if err != nil {
			return nil, apierr.New(apierr.InvalidArgument, "Field page_token is not a token this API returned.")
		}
		after = string(b)
	}
	items, more, err := s.store.query(req.GetIdPrefix(), req.GetDataType(), after, limit)
	if err != nil {
		return nil, err
	}
	resp := &fedsyncv1.QueryResponse{Items: items}
	if more && len(items) > 0 {
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(items[len(items)-1].GetId()))
	}
	return resp, nil
}

// maxLogPage caps one ReadLog page.
const maxLogPage = 1000

func (s *service) ReadLog(_ context.Context, req *fedsyncv1.ReadLogRequest) (*fedsyncv1.ReadLogResponse, error) {
	limit := int(req.GetLimit())
	if limit <= 0 || limit > maxLogPage {
		limit = maxLogPage
	}
	entries, head, err := s.store.readLog(req.GetAfterSeq(), limit)
	if err != nil {
		return nil, err
	}
	resp := &fedsyncv1.ReadLogResponse{HeadSeq: head}
	for _, e := range entries {
		ch, err := decodeChange(e.msg)
		if err != nil {
			return nil, err
		}
		resp.Changes = append(resp.Changes, ch)
	}
	return resp, nil
}

func (s *service) GetFrontier(context.Context, *fedsyncv1.GetFrontierRequest) (*fedsyncv1.GetFrontierResponse, error) {
	f, err := s.store.frontier()
	if err != nil {
		return nil, err
	}
	return &fedsyncv1.GetFrontierResponse{Frontier: f}, nil
}

func (s *service) RecordOutcome(ctx context.Context, req *fedsyncv1.RecordOutcomeRequest) (*fedsyncv1.RecordOutcomeResponse, error) {
	if req.GetOutcome().GetMessageId() == "" {
		return nil, apierr.New(apierr.InvalidArgument, "Field outcome.message_id is required.")
	}
	if _, err := s.repl.propose(ctx, &command{kind: cmdOutcome, now: s.store.now().UnixNano(), body: req}); err != nil {
		return nil, err
	}
	return &fedsyncv1.RecordOutcomeResponse{}, nil
}

func (s *service) wake() {
	select {
	case s.committed <- struct{}{}:
	default:
	}
}

func (s *service) GetOutcome(_ context.Context, req *fedsyncv1.GetOutcomeRequest) (*fedsyncv1.GetOutcomeResponse, error) {
	o, err := s.store.outcome(req.GetMessageId())
	if errors.Is(err, errNotFound) {
		return nil, apierr.New(apierr.NotFound, "No outcome for message %s yet: it is unknown or still in the log.", req.GetMessageId())
	}
	if err != nil {
		return nil, err
	}
	return &fedsyncv1.GetOutcomeResponse{Outcome: o}, nil
}

func (s *service) ListConflicts(_ context.Context, req *fedsyncv1.ListConflictsRequest) (*fedsyncv1.ListConflictsResponse, error) {
	switch req.GetStatus() {
	case "", "pending", "resolved":
	default:
		return nil, apierr.New(apierr.InvalidArgument, "Field status must be pending or resolved, not %q.", req.GetStatus())
	}
	limit := int(req.GetLimit())
	if limit <= 0 || limit > s.maxLimit {
		limit = min(100, s.maxLimit)
	}
	var before string
	if req.GetPageToken() != "" {
		b, err := base64.RawURLEncoding.DecodeString(req.GetPageToken())
		if err != nil {
			return nil, apierr.New(apierr.InvalidArgument, "Field page_token is not a token this API returned.")
		}
		before = string(b)
	}
	items, more, err := s.store.conflicts(req.GetStatus(), before, limit)
	if err != nil {
		return nil, err
	}
	resp := &fedsyncv1.ListConflictsResponse{Conflicts: items}
	if more && len(items) > 0 {
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(items[len(items)-1].GetId()))
	}
	return resp, nil
}

func (s *service) GetConflict(_ context.Context, req *fedsyncv1.GetConflictRequest) (*fedsyncv1.GetConflictResponse, error) {
	c, err := s.store.conflict(req.GetId())
	if errors.Is(err, errNotFound) {
		return nil, apierr.New(apierr.NotFound, "Conflict %s does not exist.", req.GetId())
	}
	if err != nil {
		return nil, err
	}
	return &fedsyncv1.GetConflictResponse{Conflict: c}, nil
}

func (s *service) GetControl(context.Context, *fedsyncv1.GetControlRequest) (*fedsyncv1.GetControlResponse, error) {
	st, err := s.store.control()
	if err != nil {
		return nil, err
	}
	return &fedsyncv1.GetControlResponse{State: st}, nil
}

func (s *service) SetControl(ctx context.Context, req *fedsyncv1.SetControlRequest) (*fedsyncv1.SetControlResponse, error) {
	st := req.GetState()
	if st == nil {
		return nil, apierr.New(apierr.InvalidArgument, "Field state is required.")
	}
	if st.At == 0 {
		st.At = s.store.now().UnixNano()
	}
	if _, err := s.repl.propose(ctx, &command{kind: cmdControl, body: st}); err != nil {
		return nil, err
	}
	return &fedsyncv1.SetControlResponse{State: st}, nil
}

// itemSpans starts a span per item that carries its own trace (merge sends
// each delta's), so each delta's trace shows its commit; the item's log entry,
// and with it the change event, continues from that span. Nothing when the
// batch is not traced.
type itemSpanSet []oteltrace.Span

func itemSpans(ctx context.Context, items []*batchItem) itemSpanSet {
	if !oteltrace.SpanFromContext(ctx).IsRecording() {
		return nil
	}
	link := oteltrace.Link{SpanContext: oteltrace.SpanContextFromContext(ctx)}
	spans := make(itemSpanSet, len(items))
	for i, it := range items {
		if len(it.req.GetTrace()) == 0 {
			continue
		}
		pctx := otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier(it.req.GetTrace()))
		sctx, span := telemetry.Tracer().Start(pctx, "statestore commit", oteltrace.WithLinks(link),
			oteltrace.WithAttributes(telemetry.DeltaAttributes(it.req.GetWriter(), it.req.GetDataType())...),
			oteltrace.WithAttributes(attribute.String("fedsync.id", it.req.GetId()), attribute.String("fedsync.message_id", it.req.GetMessageId()),
				attribute.Int("fedsync.batch_items", len(items))))
		it.trace = propagation.MapCarrier{}
		otel.GetTextMapPropagator().Inject(sctx, propagation.MapCarrier(it.trace))
		spans[i] = span
	}
	return spans
}

func (spans itemSpanSet) end(items []*batchItem, err error) {
	for i, span := range spans {
		if span == nil {
			continue
		}
		switch {
		case err != nil:
			span.SetStatus(codes.Error, err.Error())
			span.End()
			continue
		}
		it := items[i]
		switch {
		case it.err != nil:
			span.SetStatus(codes.Error, it.err.Error())
		default:
			span.SetAttributes(attribute.Int64("fedsync.version", it.out.version), attribute.Int64("fedsync.seq", int64(it.out.seq)),
				attribute.Bool("fedsync.duplicate", it.out.duplicate))
		}
		span.End()
	}
}

// sweep forgets applied message ids and outcomes older than retention, in
// slices of 5,000 entries, each a replicated command. Idempotence needs a
// message id only while Kafka may still deliver its delta again, so retention
// should be at least the topic's retention (Kafka's default is 7 days).
func (s *service) sweep(ctx context.Context, retention time.Duration) (int, error) {
	cutoff := s.store.now().Add(-retention).UnixNano()
	removed := 0
	for _, b := range [][]byte{bucketApplied, bucketOutcomes} {
		var after []byte
		for {
			res, err := s.repl.propose(ctx, &command{kind: cmdSweep, bucket: b, after: after, cutoff: cutoff, limit: 5000})
			if err != nil {
				return removed, err
			}
			r := res.(*sweepResult)
			removed += r.removed
			if r.next == nil {
				break
			}
			after = r.next
		}
	}
	return removed, nil
}
