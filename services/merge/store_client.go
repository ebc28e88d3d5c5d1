package merge

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/fedsync/fedsync/libs/discovery"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// storeClient reaches statestore through discovery: load-balanced, retried on
// another instance, and behind a circuit breaker per instance.
type storeClient struct{ peer *discovery.Peer }

func call[T any](ctx context.Context, c storeClient, fn func(fedsyncv1.StateStoreServiceClient, context.Context) (T, error)) (T, error) {
	return discovery.Invoke(ctx, c.peer, func(ctx context.Context, cc grpc.ClientConnInterface) (T, error) {
		return fn(fedsyncv1.NewStateStoreServiceClient(cc), ctx)
	})
}

func (c storeClient) Get(ctx context.Context, id string) (*fedsyncv1.State, error) {
	resp, err := call(ctx, c, func(s fedsyncv1.StateStoreServiceClient, ctx context.Context) (*fedsyncv1.GetResponse, error) {
		return s.Get(ctx, &fedsyncv1.GetRequest{Id: id})
	})
	return resp.GetState(), err
}

func (c storeClient) Apply(ctx context.Context, req *fedsyncv1.ApplyRequest) (*fedsyncv1.ApplyResponse, error) {
	return call(ctx, c, func(s fedsyncv1.StateStoreServiceClient, ctx context.Context) (*fedsyncv1.ApplyResponse, error) {
		return s.Apply(ctx, req)
	})
}

func (c storeClient) GetFrontier(ctx context.Context) (map[string]int64, error) {
	resp, err := call(ctx, c, func(s fedsyncv1.StateStoreServiceClient, ctx context.Context) (*fedsyncv1.GetFrontierResponse, error) {
		return s.GetFrontier(ctx, &fedsyncv1.GetFrontierRequest{})
	})
	return resp.GetFrontier(), err
}

func (c storeClient) RecordOutcome(ctx context.Context, req *fedsyncv1.RecordOutcomeRequest) error {
	_, err := call(ctx, c, func(s fedsyncv1.StateStoreServiceClient, ctx context.Context) (*fedsyncv1.RecordOutcomeResponse, error) {
		return s.RecordOutcome(ctx, req)
	})
	return err
}

func (c storeClient) GetConflict(ctx context.Context, id string) (*fedsyncv1.Conflict, error) {
	resp, err := call(ctx, c, func(s fedsyncv1.StateStoreServiceClient, ctx context.Context) (*fedsyncv1.GetConflictResponse, error) {
		return s.GetConflict(ctx, &fedsyncv1.GetConflictRequest{Id: id})
	})
	return resp.GetConflict(), err
}

func (c storeClient) ListConflicts(ctx context.Context, req *fedsyncv1.ListConflictsRequest) (*fedsyncv1.ListConflictsResponse, error) {
	return call(ctx, c, func(s fedsyncv1.StateStoreServiceClient, ctx context.Context) (*fedsyncv1.ListConflictsResponse, error) {
		return s.ListConflicts(ctx, req)
	})
}

// maxCallMessage bounds a response from statestore: GetMany of many documents
// of up to 1 MiB each.
const maxCallMessage = 64 << 20

func (c storeClient) GetMany(ctx context.Context, ids []string) ([]*fedsyncv1.State, error) {
	resp, err := call(ctx, c, func(s fedsyncv1.StateStoreServiceClient, ctx context.Context) (*fedsyncv1.GetManyResponse, error) {
		return s.GetMany(ctx, &fedsyncv1.GetManyRequest{Ids: ids}, grpc.MaxCallRecvMsgSize(maxCallMessage))
	})
	return resp.GetStates(), err
}

func (c storeClient) ApplyBatch(ctx context.Context, req *fedsyncv1.ApplyBatchRequest) (*fedsyncv1.ApplyBatchResponse, error) {
	resp, err := call(ctx, c, func(s fedsyncv1.StateStoreServiceClient, ctx context.Context) (*fedsyncv1.ApplyBatchResponse, error) {
		return s.ApplyBatch(ctx, req, grpc.MaxCallSendMsgSize(maxCallMessage))
	})
	if err == nil && len(resp.GetResults()) != len(req.GetItems()) {
		return nil, fmt.Errorf("statestore answered %d results for %d items", len(resp.GetResults()), len(req.GetItems()))
	}
	return resp, err
}

func (c storeClient) GetOutcome(ctx context.Context, messageID string) (*fedsyncv1.Outcome, error) {
	resp, err := call(ctx, c, func(s fedsyncv1.StateStoreServiceClient, ctx context.Context) (*fedsyncv1.GetOutcomeResponse, error) {
		return s.GetOutcome(ctx, &fedsyncv1.GetOutcomeRequest{MessageId: messageID})
	})
	return resp.GetOutcome(), err
}
