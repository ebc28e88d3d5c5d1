package validation

import (
	"context"

	"google.golang.org/grpc"

	"github.com/fedsync/fedsync/libs/discovery"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// mergeClient commits strong deltas through merge, found by discovery.
type mergeClient struct{ peer *discovery.Peer }

func (c mergeClient) CommitStrong(ctx context.Context, d *fedsyncv1.Delta) (int64, error) {
	resp, err := discovery.Invoke(ctx, c.peer, func(ctx context.Context, cc grpc.ClientConnInterface) (*fedsyncv1.CommitStrongResponse, error) {
		return fedsyncv1.NewMergeServiceClient(cc).CommitStrong(ctx, &fedsyncv1.CommitStrongRequest{Delta: d})
	})
	return resp.GetVersion(), err
}
