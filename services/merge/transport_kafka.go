package merge

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/endpoints"
	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/telemetry"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// DeadLetters is where records that can never be merged go, with why.
type DeadLetters interface {
	Publish(ctx context.Context, records ...kafkabus.Record) error
}

// batchHandler feeds batches of fedsync.deltas records to the MergeBatch
// endpoint. A batch is done (its offsets may be committed) once every delta in
// it is committed in statestore, settled with an outcome, or buffered durably.
//
// Failures are kept apart:
//   - a record that cannot be decoded goes to the dead-letter topic at once;
//   - a business error of one delta is that delta's outcome "rejected";
//   - statestore unavailable (down, overloaded, breaker open) retries the batch
//     for as long as it takes: nothing is given up because a peer is away;
//   - any other failure of a batch is retried; after dlqAfter failures its
//     records are merged one at a time, and a record that fails dlqAfter times
//     on its own goes to the dead-letter topic, is recorded as rejected with
//     the error, and its partition moves on.
func batchHandler(e Endpoints, svc *service, dlq DeadLetters, dlqAfter int, logger log.Logger, dead func(reason string)) kafkabus.BatchHandler {
	var mu sync.Mutex
	failures := map[string]int{}  // by record position, while failing
	lettered := map[string]bool{} // dead-lettered records of a batch being retried
	key := func(m kafkabus.Message) string {
		return m.Topic + "/" + strconv.Itoa(m.Partition) + "/" + strconv.FormatInt(m.Offset, 10)
	}
	return func(ctx context.Context, ms []kafkabus.Message) error {
		deltas := make([]*fedsyncv1.Delta, 0, len(ms))
		from := make([]kafkabus.Message, 0, len(ms))
		for _, m := range ms {
			d, reason, err := decodeDelta(m)
			if err != nil {
				mu.Lock()
				done := lettered[key(m)]
				mu.Unlock()
				if done {
					continue
				}
				level.Error(logger).Log("msg", "dead-lettered undecodable record", "partition", m.Partition, "offset", m.Offset, "err", err)
				if err := deadLetter(ctx, dlq, m, reason, err.Error(), 1); err != nil {
					return err
				}
				dead(reason)
				mu.Lock()
				lettered[key(m)] = true
				mu.Unlock()
				continue
			}
			deltas = append(deltas, d)
			from = append(from, m)
		}
		settled := func() {
			mu.Lock()
			for _, m := range ms {
				delete(failures, key(m))
				delete(lettered, key(m))
			}
			mu.Unlock()
		}
		if len(deltas) == 0 {
			settled()
			return nil
		}
		traces, endSpans := deltaSpans(ctx, deltas, from)
		err := mergeBatchTraced(ctx, e, deltas, traces)
		endSpans(err)
		if err == nil {
			settled()
			return nil
		}
		if apierr.As(err).Code == apierr.Unavailable {
			return err
		}
		// Something in this batch keeps failing: find it.
		mu.Lock()
		failures[key(from[0])]++
		n := failures[key(from[0])]
		mu.Unlock()
		if n < dlqAfter {
			return err
		}
		for i, d := range deltas {
			m := from[i]
			for {
				err := mergeBatch(ctx, e, []*fedsyncv1.Delta{d})
				if err == nil {
					break
				}
				if apierr.As(err).Code == apierr.Unavailable || ctx.Err() != nil {
					return err
				}
				mu.Lock()
				failures[key(m)]++
				n := failures[key(m)]
				mu.Unlock()
				if n < dlqAfter {
					continue
				}
				level.Error(logger).Log("msg", "dead-lettered a delta that kept failing", "id", d.GetId(), "message_id", d.GetMessageId(),
					"partition", m.Partition, "offset", m.Offset, "attempts", n, "err", err)
				if derr := deadLetter(ctx, dlq, m, "merge_failed", err.Error(), n); derr != nil {
					return derr
				}
				if rerr := svc.reject(ctx, d, "consistency", "merging it kept failing ("+err.Error()+"); it is in "+kafkabus.TopicDLQ); rerr != nil {
					return rerr
				}
				dead("merge_failed")
				break
			}
		}
		settled()
		return nil
	}
}

func mergeBatch(ctx context.Context, e Endpoints, deltas []*fedsyncv1.Delta) error {
	return mergeBatchTraced(ctx, e, deltas, nil)
}

func mergeBatchTraced(ctx context.Context, e Endpoints, deltas []*fedsyncv1.Delta, traces []trace.SpanContext) error {
	_, err := endpoints.Call[*MergeBatchResponse](ctx, e.MergeBatch, &MergeBatchRequest{Deltas: deltas, Traces: traces})
	return err
}

// deltaSpans starts one span per delta of a traced batch, each continuing its
// writer's trace (the record's headers) and linked to the batch's span, so
// every delta's trace shows its merge however many shared the batch. It
// returns their span contexts and a function that ends them. Nothing is done
// when the batch is not traced.
func deltaSpans(ctx context.Context, deltas []*fedsyncv1.Delta, from []kafkabus.Message) ([]trace.SpanContext, func(error)) {
	batch := trace.SpanFromContext(ctx)
	if !batch.IsRecording() {
		return nil, func(error) {}
	}
	link := trace.Link{SpanContext: batch.SpanContext()}
	spans := make([]trace.Span, len(deltas))
	scs := make([]trace.SpanContext, len(deltas))
	for i, d := range deltas {
		_, spans[i] = telemetry.Tracer().Start(kafkabus.RecordContext(ctx, from[i]), "merge "+kafkabus.TopicDeltas,
			trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(link),
			trace.WithAttributes(telemetry.DeltaAttributes(d.GetWriter(), d.GetDataType())...),
			trace.WithAttributes(attribute.String("fedsync.id", d.GetId()), attribute.String("fedsync.message_id", d.GetMessageId()),
				attribute.String("fedsync.consistency", d.GetConsistency().String()), attribute.Int("messaging.batch.message_count", len(deltas))))
		scs[i] = spans[i].SpanContext()
	}
	return scs, func(err error) {
		for _, sp := range spans {
			if err != nil {
				sp.SetStatus(codes.Error, err.Error())
			}
			sp.End()
		}
	}
}

// decodeDelta returns the delta a record carries, or why it carries none.
func decodeDelta(m kafkabus.Message) (*fedsyncv1.Delta, string, error) {
	env := &fedsyncv1.SyncMessage{}
	if err := proto.Unmarshal(m.Value, env); err != nil {
		return nil, "undecodable", fmt.Errorf("decode envelope: %w", err)
	}
	if env.GetType() != fedsyncv1.MessageType_STATE_UPDATE {
		return nil, "wrong_type", fmt.Errorf("message type %s, not STATE_UPDATE", env.GetType())
	}
	d := &fedsyncv1.Delta{}
	if err := proto.Unmarshal(env.GetPayload(), d); err != nil {
		return nil, "undecodable", fmt.Errorf("decode delta %s: %w", env.GetMessageId(), err)
	}
	return d, "", nil
}

// deadLetter copies m to the dead-letter topic with the error in its headers.
func deadLetter(ctx context.Context, dlq DeadLetters, m kafkabus.Message, reason, detail string, attempts int) error {
	headers := map[string]string{
		"fedsync-error":              detail,
		"fedsync-error-reason":       reason,
		"fedsync-attempts":           strconv.Itoa(attempts),
		"fedsync-original-topic":     m.Topic,
		"fedsync-original-partition": strconv.Itoa(m.Partition),
		"fedsync-original-offset":    strconv.FormatInt(m.Offset, 10),
	}
	if err := dlq.Publish(ctx, kafkabus.Record{Key: m.Key, Value: m.Value, Headers: headers}); err != nil {
		return apierr.New(apierr.Unavailable, "Dead-letter topic: %v", err)
	}
	return nil
}
