package statestore

import (
	"context"

	"github.com/fedsync/fedsync/libs/endpoints"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

type grpcServer struct {
	fedsyncv1.UnimplementedStateStoreServiceServer
	e Endpoints
}

// NewGRPCServer serves the endpoints as fedsync.v1.StateStoreService.
func NewGRPCServer(e Endpoints) fedsyncv1.StateStoreServiceServer { return &grpcServer{e: e} }

func (s *grpcServer) Apply(ctx context.Context, req *fedsyncv1.ApplyRequest) (*fedsyncv1.ApplyResponse, error) {
	return endpoints.Call[*fedsyncv1.ApplyResponse](ctx, s.e.Apply, req)
}

func (s *grpcServer) Get(ctx context.Context, req *fedsyncv1.GetRequest) (*fedsyncv1.GetResponse, error) {
	return endpoints.Call[*fedsyncv1.GetResponse](ctx, s.e.Get, req)
}

func (s *grpcServer) Query(ctx context.Context, req *fedsyncv1.QueryRequest) (*fedsyncv1.QueryResponse, error) {
	return endpoints.Call[*fedsyncv1.QueryResponse](ctx, s.e.Query, req)
}

func (s *grpcServer) ReadLog(ctx context.Context, req *fedsyncv1.ReadLogRequest) (*fedsyncv1.ReadLogResponse, error) {
	return endpoints.Call[*fedsyncv1.ReadLogResponse](ctx, s.e.ReadLog, req)
}
