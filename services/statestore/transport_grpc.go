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

func (s *grpcServer) ApplyBatch(ctx context.Context, req *fedsyncv1.ApplyBatchRequest) (*fedsyncv1.ApplyBatchResponse, error) {
	return endpoints.Call[*fedsyncv1.ApplyBatchResponse](ctx, s.e.ApplyBatch, req)
}

func (s *grpcServer) GetMany(ctx context.Context, req *fedsyncv1.GetManyRequest) (*fedsyncv1.GetManyResponse, error) {
	return endpoints.Call[*fedsyncv1.GetManyResponse](ctx, s.e.GetMany, req)
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

func (s *grpcServer) GetFrontier(ctx context.Context, req *fedsyncv1.GetFrontierRequest) (*fedsyncv1.GetFrontierResponse, error) {
	return endpoints.Call[*fedsyncv1.GetFrontierResponse](ctx, s.e.GetFrontier, req)
}

func (s *grpcServer) GetDigests(ctx context.Context, req *fedsyncv1.GetDigestsRequest) (*fedsyncv1.GetDigestsResponse, error) {
	return endpoints.Call[*fedsyncv1.GetDigestsResponse](ctx, s.e.GetDigests, req)
}

func (s *grpcServer) RecordOutcome(ctx context.Context, req *fedsyncv1.RecordOutcomeRequest) (*fedsyncv1.RecordOutcomeResponse, error) {
	return endpoints.Call[*fedsyncv1.RecordOutcomeResponse](ctx, s.e.RecordOutcome, req)
}

func (s *grpcServer) GetOutcome(ctx context.Context, req *fedsyncv1.GetOutcomeRequest) (*fedsyncv1.GetOutcomeResponse, error) {
	return endpoints.Call[*fedsyncv1.GetOutcomeResponse](ctx, s.e.GetOutcome, req)
}

func (s *grpcServer) ListConflicts(ctx context.Context, req *fedsyncv1.ListConflictsRequest) (*fedsyncv1.ListConflictsResponse, error) {
	return endpoints.Call[*fedsyncv1.ListConflictsResponse](ctx, s.e.ListConflicts, req)
}

func (s *grpcServer) GetConflict(ctx context.Context, req *fedsyncv1.GetConflictRequest) (*fedsyncv1.GetConflictResponse, error) {
	return endpoints.Call[*fedsyncv1.GetConflictResponse](ctx, s.e.GetConflict, req)
}

func (s *grpcServer) GetControl(ctx context.Context, req *fedsyncv1.GetControlRequest) (*fedsyncv1.GetControlResponse, error) {
	return endpoints.Call[*fedsyncv1.GetControlResponse](ctx, s.e.GetControl, req)
}

func (s *grpcServer) SetControl(ctx context.Context, req *fedsyncv1.SetControlRequest) (*fedsyncv1.SetControlResponse, error) {
	return endpoints.Call[*fedsyncv1.SetControlResponse](ctx, s.e.SetControl, req)
}

func (s *grpcServer) CreateBackup(ctx context.Context, req *fedsyncv1.CreateBackupRequest) (*fedsyncv1.CreateBackupResponse, error) {
	return endpoints.Call[*fedsyncv1.CreateBackupResponse](ctx, s.e.CreateBackup, req)
}

func (s *grpcServer) ListBackups(ctx context.Context, req *fedsyncv1.ListBackupsRequest) (*fedsyncv1.ListBackupsResponse, error) {
	return endpoints.Call[*fedsyncv1.ListBackupsResponse](ctx, s.e.ListBackups, req)
}

func (s *grpcServer) VerifyBackup(ctx context.Context, req *fedsyncv1.VerifyBackupRequest) (*fedsyncv1.VerifyBackupResponse, error) {
	return endpoints.Call[*fedsyncv1.VerifyBackupResponse](ctx, s.e.VerifyBackup, req)
}

func (s *grpcServer) RestoreBackup(ctx context.Context, req *fedsyncv1.RestoreBackupRequest) (*fedsyncv1.RestoreBackupResponse, error) {
	return endpoints.Call[*fedsyncv1.RestoreBackupResponse](ctx, s.e.RestoreBackup, req)
}
