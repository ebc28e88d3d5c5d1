package kafkabus

import (
	"context"
	"time"

	"github.com/go-kit/log"
	"github.com/segmentio/kafka-go"
)

// Message is a consumed record.
type Message = kafka.Message

// Handler processes one record. It returns nil only once the record's effect is
// durable; an error makes the consumer retry the same record (never skip it).
type Handler func(ctx context.Context, m Message) error

// StartAt says where a consumer group with no committed offset starts.
type StartAt int64

const (
	// StartEarliest reads a new group's topic from the beginning.
	StartEarliest = StartAt(kafka.FirstOffset)
	// StartLatest reads only records produced after a new group joins.
	StartLatest = StartAt(kafka.LastOffset)
)

// Consumer reads one topic as a member of a consumer group.
type Consumer struct {
	r      *kafka.Reader
	logger log.Logger
}

// NewConsumer joins group on topic (names before the configured prefix).
func NewConsumer(c *Config, topic, group string, start StartAt, logger log.Logger) *Consumer {
	return &Consumer{
		r: kafka.NewReader(kafka.ReaderConfig{
			Brokers:               c.Brokers,
			GroupID:               c.Group(group),
			Topic:                 c.Topic(topic),
			MinBytes:              1,
			MaxBytes:              16 << 20,
			MaxWait:               250 * time.Millisecond,
			ReadBackoffMin:        5 * time.Millisecond,
			ReadBackoffMax:        100 * time.Millisecond,
			StartOffset:           int64(start),
			CommitInterval:        100 * time.Millisecond,
			HeartbeatInterval:     time.Second,
			SessionTimeout:        10 * time.Second,
			RebalanceTimeout:      10 * time.Second,
			JoinGroupBackoff:      500 * time.Millisecond,
			WatchPartitionChanges: true,
			QueueCapacity:         128,
		}),
		logger: log.With(logger, "topic", topic, "group", group),
	}
}

// Run hands every record to h in partition order until ctx ends. A record's offset
// is committed only after h returned nil for it. Broker errors (a leader moving,
// metadata not yet propagated after topic creation, a broker restarting) are
// logged and retried with backoff; they never end the consumer.
func (c *Consumer) Run(ctx context.Context, h Handler) error {
	return c.RunBatch(ctx, func(ctx context.Context, ms []Message) error { return h(ctx, ms[0]) }, BatchOptions{MaxRecords: 1})
}

// Lag returns how many records of the assigned partitions are not read yet.
func (c *Consumer) Lag() int64 { return c.r.Stats().Lag }

// Lagger is a consumer that knows how far behind it is.
type Lagger interface{ Lag() int64 }

// Close leaves the group.
func (c *Consumer) Close() error { return c.r.Close() }

// ReportLag sets gauge to the consumers' total lag every second until ctx ends:
// the seed's message_queue_depth of a topic.
func ReportLag(ctx context.Context, gauge interface{ Set(float64) }, consumers ...Lagger) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			var total int64
			for _, c := range consumers {
				total += max(c.Lag(), 0)
			}
			gauge.Set(float64(total))
		}
	}
}

// headerCarrier adapts consumed record headers to OpenTelemetry propagation.
type headerCarrier struct{ h *[]kafka.Header }

func (c headerCarrier) Get(key string) string {
	for _, h := range *c.h {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func (c headerCarrier) Set(key, value string) {
	for i, h := range *c.h {
		if h.Key == key {
			(*c.h)[i].Value = []byte(value)
			return
		}
	}
	*c.h = append(*c.h, kafka.Header{Key: key, Value: []byte(value)})
}

func (c headerCarrier) Keys() []string {
	keys := make([]string, len(*c.h))
	for i, h := range *c.h {
		keys[i] = h.Key
	}
	return keys
}
