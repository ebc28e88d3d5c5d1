package healthmonitor

import (
	"context"

	"github.com/fedsync/fedsync/libs/endpoints"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

type grpcServer struct {
	fedsyncv1.UnimplementedHealthMonitorServiceServer
	e Endpoints
}

// NewGRPCServer serves the endpoints as fedsync.v1.HealthMonitorService.
func NewGRPCServer(e Endpoints) fedsyncv1.HealthMonitorServiceServer { return &grpcServer{e: e} }

func (s *grpcServer) GetHealth(ctx context.Context, req *fedsyncv1.GetHealthRequest) (*fedsyncv1.GetHealthResponse, error) {
	return endpoints.Call[*fedsyncv1.GetHealthResponse](ctx, s.e.GetHealth, req)
}
