package validation

import (
	"context"

	"github.com/fedsync/fedsync/libs/endpoints"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

type grpcServer struct {
	fedsyncv1.UnimplementedValidationServiceServer
	e Endpoints
}

// NewGRPCServer serves the endpoints as fedsync.v1.ValidationService. Callers are
// authenticated by the server's token interceptor.
func NewGRPCServer(e Endpoints) fedsyncv1.ValidationServiceServer { return &grpcServer{e: e} }

func (s *grpcServer) PushState(ctx context.Context, req *fedsyncv1.PushStateRequest) (*fedsyncv1.PushStateResponse, error) {
	return endpoints.Call[*fedsyncv1.PushStateResponse](ctx, s.e.PushState, req)
}

func (s *grpcServer) SyncControl(ctx context.Context, req *fedsyncv1.SyncControlRequest) (*fedsyncv1.SyncControlResponse, error) {
	return endpoints.Call[*fedsyncv1.SyncControlResponse](ctx, s.e.SyncControl, req)
}

func (s *grpcServer) Heartbeat(ctx context.Context, req *fedsyncv1.HeartbeatRequest) (*fedsyncv1.HeartbeatResponse, error) {
	return endpoints.Call[*fedsyncv1.HeartbeatResponse](ctx, s.e.Heartbeat, req)
}
