package merge

import (
	"context"

	"google.golang.org/grpc"

	"github.com/fedsync/fedsync/libs/discovery"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// storeClient reaches statestore through discovery: load-balanced, retried on
// another instance, and behind a circuit breaker per instance.
type storeClient struct{ peer *discovery.Peer }

func (c storeClient) Get(ctx context.Context, id string) (*fedsyncv1.State, error) {
	resp, err := discovery.Invoke(ctx, c.peer, func(ctx context.Context, cc grpc.ClientConnInterface) (*fedsyncv1.GetResponse, error) {
		return fedsyncv1.NewStateStoreServiceClient(cc).Get(ctx, &fedsyncv1.GetRequest{Id: id})
	})
	return resp.GetState(), err
}

func (c storeClient) Apply(ctx context.Context, req *fedsyncv1.ApplyRequest) (*fedsyncv1.ApplyResponse, error) {
	return discovery.Invoke(ctx, c.peer, func(ctx context.Context, cc grpc.ClientConnInterface) (*fedsyncv1.ApplyResponse, error) {
		return fedsyncv1.NewStateStoreServiceClient(cc).Apply(ctx, req)
	})
}
