package broadcaster

import (
	"context"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/kafkabus"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// kafkaHandler feeds fedsync.committed records to Publish.
func kafkaHandler(svc Service, logger log.Logger) kafkabus.Handler {
	return func(ctx context.Context, m kafkabus.Message) error {
		env := &fedsyncv1.SyncMessage{}
		ch := &fedsyncv1.Change{}
		if err := proto.Unmarshal(m.Value, env); err != nil || env.GetType() != fedsyncv1.MessageType_EVENT {
			level.Error(logger).Log("msg", "skipped undecodable committed record", "offset", m.Offset, "err", err)
			return nil
		}
		if err := proto.Unmarshal(env.GetPayload(), ch); err != nil {
			level.Error(logger).Log("msg", "skipped undecodable change", "offset", m.Offset, "err", err)
			return nil
		}
		return svc.Publish(ctx, ch)
	}
}
