package kafkabus

import (
	"context"
	"errors"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedsync/fedsync/libs/periodic"
)

// BatchHandler processes records fetched together, each partition's records in
// offset order. It returns nil only once the effect of every record is durable
// (or the record was settled for good, say sent to a dead-letter topic); an
// error makes the consumer hand it the same records again.
type BatchHandler func(ctx context.Context, ms []Message) error

// BatchOptions shape the batches of RunBatch.
type BatchOptions struct {
	// MaxRecords is the most records in one batch.
	MaxRecords int
	// MaxBytes bounds the summed value sizes of one batch (the first record is
	// always taken, however large).
	MaxBytes int
	// Linger is the longest the consumer waits for more records once it holds
	// one. Records already fetched are taken without waiting; 0 takes only those.
	Linger time.Duration
}

// RunBatch hands records to h in batches until ctx ends: it blocks for the first
// record, then takes what the reader already holds (and waits up to Linger for
// more) until the batch is full. The offsets of a batch are committed once, after
// h returned nil for it; a failed batch is retried with backoff.
func (c *Consumer) RunBatch(ctx context.Context, h BatchHandler, o BatchOptions) error {
	if o.MaxRecords < 1 {
		o.MaxRecords = 1
	}
	backoff := periodic.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for ctx.Err() == nil {
		batch, err := c.fetchBatch(ctx, o)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			level.Warn(c.logger).Log("msg", "fetch failed, retrying", "err", err, "backoff", backoff.Delay())
			if !backoff.Wait(ctx) {
				return nil
			}
			continue
		}
		backoff.Reset()
		if err := processBatch(ctx, c.logger, h, batch); err != nil {
			return nil // ctx ended while retrying: nothing committed
		}
		if err := c.r.CommitMessages(ctx, batch...); err != nil && ctx.Err() == nil {
			// Done anyway; a lost commit only means redelivery after a restart,
			// which every handler tolerates (idempotence).
			level.Warn(c.logger).Log("msg", "commit offsets failed", "records", len(batch), "err", err)
		}
	}
	return nil
}

func (c *Consumer) fetchBatch(ctx context.Context, o BatchOptions) ([]Message, error) {
	first, err := c.r.FetchMessage(ctx)
	if err != nil {
		return nil, err
	}
	batch := []Message{first}
	size := len(first.Value)
	deadline := time.Now().Add(o.Linger)
	for len(batch) < o.MaxRecords && (o.MaxBytes <= 0 || size < o.MaxBytes) {
		// A record the reader already holds comes back at once; otherwise wait
		// at most until the linger deadline (at least a moment, so records in
		// flight from the broker's current fetch response are taken).
		wait := max(time.Until(deadline), 50*time.Microsecond)
		fctx, cancel := context.WithTimeout(ctx, wait)
		m, err := c.r.FetchMessage(fctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) {
				break
			}
			// A broker error after records were fetched: hand over what we have;
			// the error shows again on the next fetch.
			break
		}
		batch = append(batch, m)
		size += len(m.Value)
	}
	return batch, nil
}

// processBatch runs h on batch in one consumer span, retrying until it succeeds
// or ctx ends.
func processBatch(ctx context.Context, logger log.Logger, h BatchHandler, batch []Message) error {
	tracer := otel.Tracer("github.com/fedsync/fedsync/libs/kafkabus")
	if len(batch) == 1 {
		// One record continues its writer's trace.
		ctx = otel.GetTextMapPropagator().Extract(ctx, headerCarrier{&batch[0].Headers})
	}
	sctx, span := tracer.Start(ctx, "consume "+batch[0].Topic, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.destination.name", batch[0].Topic),
			attribute.Int("messaging.batch.message_count", len(batch)),
			attribute.Int("messaging.kafka.destination.partition", batch[0].Partition),
			attribute.Int64("messaging.kafka.message.offset", batch[0].Offset),
		))
	defer span.End()
	if span.IsRecording() {
		// The batch links to every writer's trace.
		for i := range batch {
			if sc := trace.SpanContextFromContext(RecordContext(ctx, batch[i])); sc.IsValid() {
				span.AddLink(trace.Link{SpanContext: sc})
			}
		}
	}
	backoff := periodic.Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 1; ; attempt++ {
		err := h(sctx, batch)
		if err == nil {
			return nil
		}
		level.Warn(logger).Log("msg", "batch handler failed, retrying the same records", "records", len(batch),
			"first_partition", batch[0].Partition, "first_offset", batch[0].Offset, "attempt", attempt, "err", err)
		if !backoff.Wait(ctx) {
			return errors.Join(err, ctx.Err())
		}
	}
}

// RecordContext is ctx continuing the trace m's headers carry, if any.
func RecordContext(ctx context.Context, m Message) context.Context {
	return otel.GetTextMapPropagator().Extract(ctx, headerCarrier{&m.Headers})
}
