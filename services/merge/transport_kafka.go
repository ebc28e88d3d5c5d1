package merge

import (
	"context"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/endpoints"
	"github.com/fedsync/fedsync/libs/kafkabus"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// kafkaHandler feeds records of fedsync.deltas to the Merge endpoint. A record is
// done (its offset may be committed) once its merge is committed in statestore or
// it was rejected for good; infrastructure failures are retried.
func kafkaHandler(e Endpoints, svc *service, logger log.Logger, rejected func(reason string)) kafkabus.Handler {
	return func(ctx context.Context, m kafkabus.Message) error {
		env := &fedsyncv1.SyncMessage{}
		if err := proto.Unmarshal(m.Value, env); err != nil {
			level.Error(logger).Log("msg", "rejected undecodable record", "partition", m.Partition, "offset", m.Offset, "err", err)
			rejected("undecodable")
			return nil
		}
		if env.GetType() != fedsyncv1.MessageType_STATE_UPDATE {
			rejected("wrong_type")
			return nil
		}
		d := &fedsyncv1.Delta{}
		if err := proto.Unmarshal(env.GetPayload(), d); err != nil {
			level.Error(logger).Log("msg", "rejected undecodable delta", "message_id", env.GetMessageId(), "err", err)
			rejected("undecodable")
			return nil
		}
		_, err := endpoints.Call[*MergeResult](ctx, e.Merge, d)
		if err != nil && !apierr.IsInfrastructure(err) {
			// The delta can never apply (say its data type was removed): record
			// that, so its writer can read the outcome, and move on.
			level.Warn(logger).Log("msg", "rejected delta", "id", d.GetId(), "message_id", d.GetMessageId(), "writer", d.GetWriter(), "err", err)
			if rerr := svc.reject(ctx, d, "consistency", apierr.As(err).Message); rerr != nil {
				return rerr
			}
			rejected(string(apierr.As(err).Code))
			return nil
		}
		return err
	}
}
