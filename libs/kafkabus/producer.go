package kafkabus

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
)

// Record is one record to produce.
type Record struct {
	Key   []byte
	Value []byte
	// Headers are added to the record's headers (beside the trace context).
	Headers map[string]string
}

// Producer writes records to one topic and returns only once every in-sync
// replica has them.
//
// It is franz-go's client (kgo), not kafka-go's Writer: kgo puts the batches
// of every partition that has records waiting into one produce request per
// broker, where kafka-go sends one request per partition. Under fedsync's load
// (many concurrent single-delta writes spread over the partitions) that is the
// difference between a request per delta and a request per linger window. It
// writes idempotently (the broker drops a retried batch it already has).
type Producer struct {
	cl    *kgo.Client
	topic string
}

// NewProducer returns a producer for topic (its name before the configured
// prefix). Records with the same key go to the same partition (murmur2, as
// the Java client does).
func NewProducer(c *Config, topic string) *Producer {
	return newProducer(c, topic, kgo.RequiredAcks(kgo.AllISRAcks()))
}

// NewCopyProducer returns a producer for a topic whose records are copies of
// a durable source and can be produced again from it: fedsync.committed
// (statestore's log; broadcasters fill any gap from it) and heartbeats (each
// replaced by the next). It waits for the partition leader only (acks=1), so
// the embedded broker answers without waiting for its group commit's fsync;
// on real Kafka the difference is the wait for the other replicas.
func NewCopyProducer(c *Config, topic string) *Producer {
	return newProducer(c, topic, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
}

func newProducer(c *Config, topic string, acks ...kgo.Opt) *Producer {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.DefaultProduceTopic(c.Topic(topic)),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerLinger(c.BatchTimeout),
		kgo.ProducerBatchCompression(c.kgoCodec()),
	}
	if c.BatchBytes > 0 {
		opts = append(opts, kgo.ProducerBatchMaxBytes(int32(c.BatchBytes)))
	}
	opts = append(opts, acks...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		// Only invalid options fail here, and the options are built above.
		panic(fmt.Sprintf("kafkabus: new producer: %v", err))
	}
	return &Producer{cl: cl, topic: c.Topic(topic)}
}

// Publish writes records and waits for all replicas' acknowledgement. The trace
// context of ctx goes into the headers of every record without a traceparent
// of its own.
func (p *Producer) Publish(ctx context.Context, records ...Record) error {
	rs := make([]*kgo.Record, len(records))
	for i, r := range records {
		rec := &kgo.Record{Key: r.Key, Value: r.Value}
		for k, v := range r.Headers {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
		if _, own := r.Headers["traceparent"]; !own {
			// A record that carries its own trace context keeps it.
			otel.GetTextMapPropagator().Inject(ctx, kgoHeaders{rec})
		}
		rs[i] = rec
	}
	if err := p.cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		return fmt.Errorf("produce to %s: %w", p.topic, err)
	}
	return nil
}

// Close flushes and closes the producer.
func (p *Producer) Close() error {
	p.cl.Close()
	return nil
}

// kgoHeaders adapts a kgo record's headers to OpenTelemetry propagation.
type kgoHeaders struct{ r *kgo.Record }

func (c kgoHeaders) Get(key string) string {
	for _, h := range c.r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func (c kgoHeaders) Set(key, value string) {
	for i, h := range c.r.Headers {
		if h.Key == key {
			c.r.Headers[i].Value = []byte(value)
			return
		}
	}
	c.r.Headers = append(c.r.Headers, kgo.RecordHeader{Key: key, Value: []byte(value)})
}

func (c kgoHeaders) Keys() []string {
	keys := make([]string, len(c.r.Headers))
	for i, h := range c.r.Headers {
		keys[i] = h.Key
	}
	return keys
}
