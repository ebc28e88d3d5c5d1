package merge

import (
	"context"

	"github.com/fedsync/fedsync/libs/endpoints"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

type grpcServer struct {
	fedsyncv1.UnimplementedMergeServiceServer
	e Endpoints
}

// NewGRPCServer serves the endpoints as fedsync.v1.MergeService.
func NewGRPCServer(e Endpoints) fedsyncv1.MergeServiceServer { return &grpcServer{e: e} }

func (s *grpcServer) CommitStrong(ctx context.Context, req *fedsyncv1.CommitStrongRequest) (*fedsyncv1.CommitStrongResponse, error) {
	return endpoints.Call[*fedsyncv1.CommitStrongResponse](ctx, s.e.CommitStrong, req)
}

func (s *grpcServer) ResolveConflict(ctx context.Context, req *fedsyncv1.ResolveConflictRequest) (*fedsyncv1.ResolveConflictResponse, error) {
	return endpoints.Call[*fedsyncv1.ResolveConflictResponse](ctx, s.e.ResolveConflict, req)
}
