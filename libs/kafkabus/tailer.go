package kafkabus

import (
	"context"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fedsync/fedsync/libs/periodic"
)

// Tailer reads every partition of a topic from its end, as records arrive,
// without a consumer group. It is for consumers that each need every record and
// never resume from Kafka: each broadcaster fans out every committed change
// (and fills gaps from statestore's log), each health monitor sees every
// heartbeat. With no group, nothing is left behind in the broker when an
// instance goes away; a group named after each pod left one orphan per
// rollout.
type Tailer struct {
	cl     *kgo.Client
	logger log.Logger

	mu  sync.Mutex
	lag map[int32]int64 // per partition: high watermark - next offset
}

// NewTailer starts reading topic (its name before the configured prefix) at
// its end.
func NewTailer(c *Config, topic string, logger log.Logger) (*Tailer, error) {
	return NewTailerFrom(c, topic, StartLatest, logger)
}

// NewTailerFrom starts reading topic at its start (StartEarliest: a compacted
// topic read as a table) or at its end (StartLatest).
func NewTailerFrom(c *Config, topic string, start StartAt, logger log.Logger) (*Tailer, error) {
	at := kgo.NewOffset().AtEnd()
	if start == StartEarliest {
		at = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.Brokers...),
		kgo.ConsumeTopics(c.Topic(topic)),
		kgo.ConsumeResetOffset(at),
		kgo.FetchMaxWait(250*time.Millisecond),
		kgo.FetchMaxBytes(16<<20),
		kgo.MetadataMinAge(time.Second), // partitions added later are found soon
	)
	if err != nil {
		return nil, err
	}
	return &Tailer{cl: cl, logger: log.With(logger, "topic", topic, "group", "none"), lag: map[int32]int64{}}, nil
}

// RunBatch hands records to h in batches of at most o.MaxRecords records and
// about o.MaxBytes bytes, each partition's in offset order, until ctx ends. A
// failed batch is retried with backoff (h must be idempotent); nothing is
// committed anywhere.
func (t *Tailer) RunBatch(ctx context.Context, h BatchHandler, o BatchOptions) error {
	if o.MaxRecords < 1 {
		o.MaxRecords = 1
	}
	backoff := periodic.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	var batch []Message
	for ctx.Err() == nil {
		fetches := t.cl.PollRecords(ctx, o.MaxRecords)
		if ctx.Err() != nil {
			return nil
		}
		failed := false
		fetches.EachError(func(topic string, p int32, err error) {
			if err != context.Canceled {
				failed = true
				level.Warn(t.logger).Log("msg", "fetch failed, retrying", "partition", p, "err", err, "backoff", backoff.Delay())
			}
		})
		batch = batch[:0]
		size := 0
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if n := len(p.Records); n > 0 {
				t.setLag(p.Partition, p.HighWatermark-(p.Records[n-1].Offset+1))
			}
			for _, r := range p.Records {
				batch = append(batch, messageOf(r))
				size += len(r.Value)
			}
		})
		if len(batch) == 0 {
			if failed && !backoff.Wait(ctx) {
				return nil
			}
			continue
		}
		backoff.Reset()
		// Cut at MaxBytes (the first record of a piece is always taken).
		for start := 0; start < len(batch); {
			end, bytes := start+1, len(batch[start].Value)
			for end < len(batch) && (o.MaxBytes <= 0 || bytes+len(batch[end].Value) <= o.MaxBytes) {
				bytes += len(batch[end].Value)
				end++
			}
			if err := processBatch(ctx, t.logger, h, batch[start:end]); err != nil {
				return nil // ctx ended while retrying
			}
			start = end
		}
		clear(batch)
	}
	return nil
}

// Run hands every record to h, in batches of up to 256 fetched together.
func (t *Tailer) Run(ctx context.Context, h Handler) error {
	return t.RunBatch(ctx, func(ctx context.Context, ms []Message) error {
		for _, m := range ms {
			if err := h(ctx, m); err != nil {
				return err
			}
		}
		return nil
	}, BatchOptions{MaxRecords: 256})
}

func (t *Tailer) setLag(p int32, lag int64) {
	t.mu.Lock()
	t.lag[p] = max(lag, 0)
	t.mu.Unlock()
}

// Lag is how many records of the topic are not read yet, as of the last fetch
// of each partition.
func (t *Tailer) Lag() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int64
	for _, l := range t.lag {
		n += l
	}
	return n
}

// Close stops reading.
func (t *Tailer) Close() error {
	t.cl.Close()
	return nil
}

// messageOf is r as the handlers know records.
func messageOf(r *kgo.Record) Message {
	m := Message{Topic: r.Topic, Partition: int(r.Partition), Offset: r.Offset, Key: r.Key, Value: r.Value, Time: r.Timestamp}
	if len(r.Headers) > 0 {
		m.Headers = make([]kafka.Header, len(r.Headers))
		for i, h := range r.Headers {
			m.Headers[i] = kafka.Header{Key: h.Key, Value: h.Value}
		}
	}
	return m
}
