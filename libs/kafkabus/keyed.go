package kafkabus

import (
	"context"
	"hash/fnv"
	"sync"
	"time"

	"github.com/go-kit/log/level"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// RunKeyed is Run with up to workers records handled at once. Records with the
// same key go to the same worker, so each key's records are handled in order (as
// Run does per partition); records of different keys overlap. An offset is
// committed only once it and every earlier offset of its partition were handled.
func (c *Consumer) RunKeyed(ctx context.Context, h Handler, workers int) error {
	if workers <= 1 {
		return c.Run(ctx, h)
	}
	type item struct {
		m    Message
		done bool
	}
	var mu sync.Mutex
	pending := map[int][]*item{} // per partition, in fetch order
	kick := make(chan struct{}, 1)
	queues := make([]chan *item, workers)
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan *item, 64)
		wg.Add(1)
		go func(q chan *item) {
			defer wg.Done()
			for it := range q {
				if c.process(ctx, h, it.m) != nil {
					continue // ctx ended while retrying: never marked done, never committed
				}
				mu.Lock()
				it.done = true
				mu.Unlock()
				select {
				case kick <- struct{}{}:
				default:
				}
			}
		}(queues[i])
	}
	commitDone := make(chan struct{})
	go func() {
		defer close(commitDone)
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
			}
			var upTo []Message
			mu.Lock()
			for p, items := range pending {
				n := 0
				for n < len(items) && items[n].done {
					n++
				}
				if n > 0 {
					upTo = append(upTo, items[n-1].m)
					pending[p] = items[n:]
				}
			}
			mu.Unlock()
			if len(upTo) > 0 {
				if err := c.r.CommitMessages(ctx, upTo...); err != nil && ctx.Err() == nil {
					level.Warn(c.logger).Log("msg", "commit offsets failed", "err", err)
				}
			}
		}
	}()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		m, err := c.r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			level.Warn(c.logger).Log("msg", "fetch failed, retrying", "err", err, "backoff", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		it := &item{m: m}
		mu.Lock()
		pending[m.Partition] = append(pending[m.Partition], it)
		mu.Unlock()
		hash := fnv.New32a()
		hash.Write(m.Key)
		select {
		case queues[int(hash.Sum32()%uint32(workers))] <- it:
		case <-ctx.Done():
		}
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	<-commitDone
	return nil
}

// process handles one record in its own consumer span, retrying until it
// succeeds or ctx ends.
func (c *Consumer) process(ctx context.Context, h Handler, m Message) error {
	tracer := otel.Tracer("github.com/fedsync/fedsync/libs/kafkabus")
	mctx := otel.GetTextMapPropagator().Extract(ctx, headerCarrier{&m.Headers})
	mctx, span := tracer.Start(mctx, "consume "+m.Topic, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.destination.name", m.Topic),
			attribute.Int("messaging.kafka.destination.partition", m.Partition),
			attribute.Int64("messaging.kafka.message.offset", m.Offset),
		))
	defer span.End()
	return c.handleWithRetry(mctx, h, m)
}
