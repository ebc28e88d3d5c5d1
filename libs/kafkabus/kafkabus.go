// Package kafkabus is fedsync's one way to use Kafka: topic names, topic creation,
// a producer that waits for every in-sync replica, and a consumer-group loop that
// commits an offset only after its handler made the work durable. Trace context
// travels in record headers.
package kafkabus

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fedsync/fedsync/libs/flagenv"
	"github.com/fedsync/fedsync/libs/periodic"
)

// Topics used by fedsync.
const (
	// TopicDeltas carries admitted deltas, keyed by state id.
	TopicDeltas = "fedsync.deltas"
	// TopicCommitted carries every committed change in commit order. It has one
	// partition so that its order is the federation-wide commit order.
	TopicCommitted = "fedsync.committed"
	// TopicHeartbeats carries agent heartbeats, keyed by agent id.
	TopicHeartbeats = "fedsync.heartbeats"
	// TopicConflicts carries merge conflict records, keyed by state id.
	TopicConflicts = "fedsync.conflicts"
	// TopicDLQ holds fedsync.deltas records merge could never apply, with the
	// error in their headers (fedsync-error, fedsync-error-reason, ...).
	TopicDLQ = "fedsync.deltas.dlq"
	// TopicWebhooks holds the registered subscriptions (webhooks and named
	// filters), keyed by subscription id, compacted: the latest record of a
	// registration is its state (cursor, status); a record without a value
	// deletes it.
	TopicWebhooks = "fedsync.webhooks"
)

// Config says how to reach Kafka and how to shape the topics fedsync creates.
type Config struct {
	Brokers flagenv.StringList
	// TopicPrefix is put before every topic and consumer group name, so several
	// federations (or test runs) can share one Kafka cluster.
	TopicPrefix  string
	Partitions   int
	Replication  int
	BatchTimeout time.Duration
	// BatchBytes is the most bytes of one partition's batch in a produce request.
	BatchBytes int64
	// Compression is the codec of produced batches: none, gzip, snappy, lz4 or zstd.
	Compression string
}

var codecs = map[string]kgo.CompressionCodec{"none": kgo.NoCompression(), "": kgo.NoCompression(),
	"gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(), "lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression()}

func (c *Config) kgoCodec() kgo.CompressionCodec { return codecs[c.Compression] }

// RegisterFlags registers the Kafka flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Brokers = flagenv.StringList{"127.0.0.1:19092"}
	fs.Var(&c.Brokers, "kafka.brokers", "comma-separated Kafka bootstrap addresses")
	fs.StringVar(&c.TopicPrefix, "kafka.topic-prefix", "", "prefix of every topic and consumer group name")
	fs.IntVar(&c.Partitions, "kafka.partitions", 8, "partitions of keyed topics created at start-up")
	fs.IntVar(&c.Replication, "kafka.replication", 1, "replication factor of topics created at start-up")
	fs.DurationVar(&c.BatchTimeout, "kafka.batch-timeout", 2*time.Millisecond, "linger: longest a produced record waits for others to share its produce request")
	fs.Int64Var(&c.BatchBytes, "kafka.batch-bytes", 1<<20, "most bytes of one partition's batch in a produce request (Kafka's default record batch limit is 1 MiB)")
	fs.StringVar(&c.Compression, "kafka.compression", DefaultCompression, "codec of produced batches: none, gzip, snappy, lz4 or zstd")
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("kafka.brokers: at least one broker address is required")
	case c.Partitions < 1:
		return fmt.Errorf("kafka.partitions: must be at least 1, got %d", c.Partitions)
	case c.Replication < 1:
		return fmt.Errorf("kafka.replication: must be at least 1, got %d", c.Replication)
	case c.BatchTimeout <= 0 || c.BatchTimeout > 100*time.Millisecond:
		return fmt.Errorf("kafka.batch-timeout: must be in (0, 100ms], got %s", c.BatchTimeout)
	case c.BatchBytes < 0 || c.BatchBytes > 16<<20:
		return fmt.Errorf("kafka.batch-bytes: must be in [0, 16MiB], got %d", c.BatchBytes)
	}
	if _, ok := codecs[c.Compression]; !ok {
		return fmt.Errorf("kafka.compression: must be none, gzip, snappy, lz4 or zstd, got %q", c.Compression)
	}
	return nil
}

// DefaultCompression is the codec of produced batches unless configured.
// BenchmarkCompression (compress + decompress, CPU per delta and size against
// raw, batches of fedbench-shaped deltas, one run):
//
//	batch    gzip           snappy        lz4           zstd
//	1        18.5 us 0.77   3.8 us 0.81   3.4 us 0.82   19.9 us 0.75
//	10        5.4 us 0.21   1.3 us 0.29   1.4 us 0.29    4.4 us 0.18
//	100       2.7 us 0.15   1.0 us 0.24   0.9 us 0.24    2.0 us 0.11
//
// Produce batches in steady load hold a few records per partition, where
// gzip and zstd cost 5x the CPU of lz4 (a fresh encoder per batch); lz4 is the
// cheapest at every size and still makes full batches 4x smaller. The seed's
// gzip is available with -kafka.compression=gzip. See docs/performance.md.
const DefaultCompression = "lz4"

// Topic returns the full name of one of fedsync's topics.
func (c *Config) Topic(name string) string { return c.TopicPrefix + name }

// Group returns the full name of a consumer group.
func (c *Config) Group(name string) string { return c.TopicPrefix + name }

// TopicSpec is a topic fedsync needs.
type TopicSpec struct {
	Name       string
	Partitions int
	// Compact keeps the latest record per key instead of deleting by age.
	Compact bool
}

// Topics returns every topic fedsync uses, shaped by the config.
func (c *Config) Topics() []TopicSpec {
	return []TopicSpec{
		{Name: c.Topic(TopicDeltas), Partitions: c.Partitions},
		{Name: c.Topic(TopicCommitted), Partitions: 1},
		{Name: c.Topic(TopicHeartbeats), Partitions: c.Partitions},
		{Name: c.Topic(TopicConflicts), Partitions: c.Partitions},
		{Name: c.Topic(TopicDLQ), Partitions: c.Partitions},
		{Name: c.Topic(TopicWebhooks), Partitions: c.Partitions, Compact: true},
	}
}

// EnsureTopics creates the topics that do not exist yet. It retries while the
// brokers are unreachable until ctx ends, so services may start before Kafka.
func EnsureTopics(ctx context.Context, c *Config, specs []TopicSpec) error {
	client := &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 10 * time.Second}
	req := &kafka.CreateTopicsRequest{Addr: client.Addr}
	for _, s := range specs {
		tc := kafka.TopicConfig{
			Topic:             s.Name,
			NumPartitions:     s.Partitions,
			ReplicationFactor: c.Replication,
		}
		if s.Compact {
			tc.ConfigEntries = []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"}}
		}
		req.Topics = append(req.Topics, tc)
	}
	backoff := periodic.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for {
		resp, err := client.CreateTopics(ctx, req)
		if err == nil {
			for name, terr := range resp.Errors {
				if terr != nil && !errors.Is(terr, kafka.TopicAlreadyExists) {
					err = errors.Join(err, fmt.Errorf("create topic %s: %w", name, terr))
				}
			}
			if err == nil {
				return nil
			}
		}
		if !backoff.Wait(ctx) {
			return fmt.Errorf("ensure kafka topics on %s: %w", strings.Join(c.Brokers, ","), errors.Join(err, ctx.Err()))
		}
	}
}

// EnsureAll creates every fedsync topic that does not exist yet.
func EnsureAll(ctx context.Context, c *Config) error { return EnsureTopics(ctx, c, c.Topics()) }
