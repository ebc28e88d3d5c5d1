package authn

import (
	"context"

	"github.com/fedsync/fedsync/libs/endpoints"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

type grpcServer struct {
	fedsyncv1.UnimplementedAuthnServiceServer
	e Endpoints
}

// NewGRPCServer serves the endpoints as fedsync.v1.AuthnService.
func NewGRPCServer(e Endpoints) fedsyncv1.AuthnServiceServer { return &grpcServer{e: e} }

func (s *grpcServer) IssueToken(ctx context.Context, req *fedsyncv1.IssueTokenRequest) (*fedsyncv1.IssueTokenResponse, error) {
	return endpoints.Call[*fedsyncv1.IssueTokenResponse](ctx, s.e.IssueToken, req)
}

func (s *grpcServer) GetJWKS(ctx context.Context, req *fedsyncv1.GetJWKSRequest) (*fedsyncv1.GetJWKSResponse, error) {
	return endpoints.Call[*fedsyncv1.GetJWKSResponse](ctx, s.e.GetJWKS, req)
}

func (s *grpcServer) GetRevocations(ctx context.Context, req *fedsyncv1.GetRevocationsRequest) (*fedsyncv1.GetRevocationsResponse, error) {
	return endpoints.Call[*fedsyncv1.GetRevocationsResponse](ctx, s.e.GetRevocations, req)
}
