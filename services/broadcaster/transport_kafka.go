package broadcaster

import (
	"context"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/kafkabus"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// kafkaHandler feeds batches of fedsync.committed records to PublishBatch: one
// fan-out pass and one offset commit per batch.
func kafkaHandler(svc Service, logger log.Logger) kafkabus.BatchHandler {
	return func(ctx context.Context, ms []kafkabus.Message) error {
		changes := make([]*fedsyncv1.Change, 0, len(ms))
		var traces changeTraces
		for _, m := range ms {
			env := &fedsyncv1.SyncMessage{}
			if err := proto.Unmarshal(m.Value, env); err != nil || env.GetType() != fedsyncv1.MessageType_EVENT {
				level.Error(logger).Log("msg", "skipped undecodable committed record", "offset", m.Offset, "err", err)
				continue
			}
			ch := &fedsyncv1.Change{}
			if err := proto.Unmarshal(env.GetPayload(), ch); err != nil {
				level.Error(logger).Log("msg", "skipped undecodable change", "offset", m.Offset, "err", err)
				continue
			}
			if ch.GetState() == nil {
				level.Error(logger).Log("msg", "skipped change without state", "offset", m.Offset, "seq", ch.GetSeq())
				continue
			}
			changes = append(changes, ch)
			traces = withRecordTrace(ctx, traces, ch, m)
		}
		if len(changes) == 0 {
			return nil
		}
		return svc.PublishBatch(contextWithChangeTraces(ctx, traces), changes)
	}
}
