package broadcaster

import (
	"context"

	"google.golang.org/grpc"

	"github.com/fedsync/fedsync/libs/discovery"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// logClient reads statestore's commit log through discovery.
type logClient struct{ peer *discovery.Peer }

func (c logClient) ReadLog(ctx context.Context, after uint64, limit int) (*fedsyncv1.ReadLogResponse, error) {
	return discovery.Invoke(ctx, c.peer, func(ctx context.Context, cc grpc.ClientConnInterface) (*fedsyncv1.ReadLogResponse, error) {
		return fedsyncv1.NewStateStoreServiceClient(cc).ReadLog(ctx, &fedsyncv1.ReadLogRequest{AfterSeq: after, Limit: int32(limit)})
	})
}

func (c logClient) GetDigests(ctx context.Context, req *fedsyncv1.GetDigestsRequest) (*fedsyncv1.GetDigestsResponse, error) {
	return discovery.Invoke(ctx, c.peer, func(ctx context.Context, cc grpc.ClientConnInterface) (*fedsyncv1.GetDigestsResponse, error) {
		return fedsyncv1.NewStateStoreServiceClient(cc).GetDigests(ctx, req, grpc.MaxCallRecvMsgSize(64<<20))
	})
}
