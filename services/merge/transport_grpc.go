package merge

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/access"
	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/endpoints"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

type grpcServer struct {
	fedsyncv1.UnimplementedMergeServiceServer
	e Endpoints
	v *authtoken.Verifier
}

// NewGRPCServer serves the endpoints as fedsync.v1.MergeService.
// CommitStrong is for validation (mtls.Policy); ResolveConflict takes the
// caller's token, which must be L3 or above, and resolves in its name.
func NewGRPCServer(e Endpoints, v *authtoken.Verifier) fedsyncv1.MergeServiceServer {
	return &grpcServer{e: e, v: v}
}

func (s *grpcServer) CommitStrong(ctx context.Context, req *fedsyncv1.CommitStrongRequest) (*fedsyncv1.CommitStrongResponse, error) {
	return endpoints.Call[*fedsyncv1.CommitStrongResponse](ctx, s.e.CommitStrong, req)
}

func (s *grpcServer) ResolveConflict(ctx context.Context, req *fedsyncv1.ResolveConflictRequest) (*fedsyncv1.ResolveConflictResponse, error) {
	ctx, err := s.v.FromGRPC(ctx)
	if err != nil {
		return nil, err
	}
	c, _ := authtoken.FromContext(ctx)
	if err := access.RequireLevel(c, "L3", "Resolving a conflict"); err != nil {
		return nil, err
	}
	if req.GetResolver() != "" && req.GetResolver() != c.Subject {
		return nil, apierr.New(apierr.PermissionDenied, "Field resolver must be the caller (%s), not %q: a conflict is resolved in the name of the token that resolves it.", c.Subject, req.GetResolver())
	}
	req = proto.Clone(req).(*fedsyncv1.ResolveConflictRequest)
	req.Resolver = c.Subject
	return endpoints.Call[*fedsyncv1.ResolveConflictResponse](ctx, s.e.ResolveConflict, req)
}
