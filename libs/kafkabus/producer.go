package kafkabus

import (
	"context"
	"fmt"

	"github.com/segmentio/kafka-go"
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
type Producer struct {
	w *kafka.Writer
}

// NewProducer returns a producer for topic (its name before the configured
// prefix). Records with the same key go to the
// same partition (murmur2, as the Java client does).
func NewProducer(c *Config, topic string) *Producer {
	return &Producer{w: &kafka.Writer{
		Addr:                   kafka.TCP(c.Brokers...),
		Topic:                  c.Topic(topic),
		Balancer:               &kafka.Murmur2Balancer{},
		RequiredAcks:           kafka.RequireAll,
		BatchTimeout:           c.BatchTimeout,
		BatchSize:              c.BatchSize,
		BatchBytes:             c.BatchBytes,
		Compression:            c.codec(),
		MaxAttempts:            5,
		AllowAutoTopicCreation: false,
	}}
}

// Publish writes records and waits for all replicas' acknowledgement. The trace
// context of ctx goes into every record's headers.
func (p *Producer) Publish(ctx context.Context, records ...Record) error {
	msgs := make([]kafka.Message, len(records))
	for i, r := range records {
		msgs[i] = kafka.Message{Key: r.Key, Value: r.Value}
		for k, v := range r.Headers {
			msgs[i].Headers = append(msgs[i].Headers, kafka.Header{Key: k, Value: []byte(v)})
		}
		otel.GetTextMapPropagator().Inject(ctx, headerCarrier{&msgs[i].Headers})
	}
	if err := p.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("produce to %s: %w", p.w.Topic, err)
	}
	return nil
}

// Close flushes and closes the producer.
func (p *Producer) Close() error { return p.w.Close() }

// headerCarrier adapts Kafka record headers to OpenTelemetry propagation.
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
