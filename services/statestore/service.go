// Package statestore is fedsync's global state: durable, versioned documents in
// bbolt, the read API (GET and query), and the committed-change log that every
// commit appends to in the same transaction and that an outbox publisher copies to
// Kafka's fedsync.committed, so no change is lost between commit and publish.
package statestore

import (
	"context"
	"encoding/base64"
	"errors"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/statedoc"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Service is the statestore's business logic.
type Service interface {
	Apply(ctx context.Context, req *fedsyncv1.ApplyRequest) (*fedsyncv1.ApplyResponse, error)
	Get(ctx context.Context, req *fedsyncv1.GetRequest) (*fedsyncv1.GetResponse, error)
	Query(ctx context.Context, req *fedsyncv1.QueryRequest) (*fedsyncv1.QueryResponse, error)
	ReadLog(ctx context.Context, req *fedsyncv1.ReadLogRequest) (*fedsyncv1.ReadLogResponse, error)
	GetFrontier(ctx context.Context, req *fedsyncv1.GetFrontierRequest) (*fedsyncv1.GetFrontierResponse, error)
	RecordOutcome(ctx context.Context, req *fedsyncv1.RecordOutcomeRequest) (*fedsyncv1.RecordOutcomeResponse, error)
	GetOutcome(ctx context.Context, req *fedsyncv1.GetOutcomeRequest) (*fedsyncv1.GetOutcomeResponse, error)
	ListConflicts(ctx context.Context, req *fedsyncv1.ListConflictsRequest) (*fedsyncv1.ListConflictsResponse, error)
	GetConflict(ctx context.Context, req *fedsyncv1.GetConflictRequest) (*fedsyncv1.GetConflictResponse, error)
	GetControl(ctx context.Context, req *fedsyncv1.GetControlRequest) (*fedsyncv1.GetControlResponse, error)
	SetControl(ctx context.Context, req *fedsyncv1.SetControlRequest) (*fedsyncv1.SetControlResponse, error)
}

type service struct {
	store    *store
	maxLimit int
	// committed is signalled after every commit so the publisher wakes up.
	committed chan struct{}
}

func newService(st *store, maxLimit int) *service {
	return &service{store: st, maxLimit: maxLimit, committed: make(chan struct{}, 1)}
}

func (s *service) Apply(ctx context.Context, req *fedsyncv1.ApplyRequest) (*fedsyncv1.ApplyResponse, error) {
	if !statedoc.ValidID(req.GetId()) {
		return nil, apierr.New(apierr.InvalidArgument, "Field id %s.", statedoc.IDRule)
	}
	if req.GetDataType() == "" {
		return nil, apierr.New(apierr.InvalidArgument, "Field data_type is required.")
	}
	trace := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, trace)
	c, err := s.store.apply(req, trace)
	if err != nil {
		return nil, err
	}
	if !c.duplicate {
		s.wake()
	}
	return &fedsyncv1.ApplyResponse{Version: c.version, Duplicate: c.duplicate, Seq: c.seq}, nil
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

func (s *service) RecordOutcome(_ context.Context, req *fedsyncv1.RecordOutcomeRequest) (*fedsyncv1.RecordOutcomeResponse, error) {
	if req.GetOutcome().GetMessageId() == "" {
		return nil, apierr.New(apierr.InvalidArgument, "Field outcome.message_id is required.")
	}
	if err := s.store.recordOutcome(req); err != nil {
		return nil, err
	}
	if len(req.GetConflicts()) > 0 {
		s.wake()
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

func (s *service) SetControl(_ context.Context, req *fedsyncv1.SetControlRequest) (*fedsyncv1.SetControlResponse, error) {
	st := req.GetState()
	if st == nil {
		return nil, apierr.New(apierr.InvalidArgument, "Field state is required.")
	}
	if st.At == 0 {
		st.At = s.store.now().UnixNano()
	}
	if err := s.store.setControl(st); err != nil {
		return nil, err
	}
	return &fedsyncv1.SetControlResponse{State: st}, nil
}
