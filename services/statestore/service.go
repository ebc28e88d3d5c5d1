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
		select {
		case s.committed <- struct{}{}:
		default:
		}
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
		ch, err := decodeChange(e)
		if err != nil {
			return nil, err
		}
		resp.Changes = append(resp.Changes, ch)
	}
	return resp, nil
}
