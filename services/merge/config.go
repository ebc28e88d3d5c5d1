package merge

import (
	"errors"
	"flag"
	"time"

	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/svcrun"
)

// Config configures a merge instance.
type Config struct {
	Service svcrun.Config
	Kafka   kafkabus.Config
	// Consumers is how many group members this instance runs on fedsync.deltas.
	Consumers int
	// Batch shapes the batches each consumer merges at once.
	Batch kafkabus.BatchOptions
	// DLQAfter is how many times a record may fail before it is dead-lettered.
	DLQAfter int
	// DocCache bounds the cache of committed documents, in bytes.
	DocCache int
	// Group is the consumer group every merge instance joins.
	Group string
	// MaxCASRetries bounds compare-and-set retries of one delta.
	MaxCASRetries int
	// StrongTimeout bounds a strong commit (seed 3.1: 10 s).
	StrongTimeout time.Duration
	// DataTypes is the data-type registry file.
	DataTypes string
	// CausalBuffer bounds the causal deltas waiting for dependencies (seed: 10,000).
	CausalBuffer int
	// CausalPerWriter is one writer's share of the causal buffer.
	CausalPerWriter int
	// CausalTimeout is how long a causal delta may wait before it is rejected.
	CausalTimeout time.Duration
	// CausalPoll is how often waiting causal deltas are checked.
	CausalPoll time.Duration
	// ReloadInterval is how often the registry file is checked for changes.
	ReloadInterval time.Duration
}

// ParseConfig reads the configuration from flags and FEDSYNC_* variables.
func ParseConfig(fs *flag.FlagSet, args []string) (*Config, error) {
	c := &Config{}
	c.Service.RegisterFlags(fs, "merge", "127.0.0.1:19103", "127.0.0.1:19203")
	c.Kafka.RegisterFlags(fs)
	fs.IntVar(&c.Consumers, "consumers", 4, "consumer-group members per instance on fedsync.deltas")
	fs.IntVar(&c.Batch.MaxRecords, "batch.max", 1000, "most deltas one consumer merges in one batch (one statestore transaction)")
	fs.IntVar(&c.Batch.MaxBytes, "batch.max-bytes", 8<<20, "most bytes of records in one batch")
	fs.DurationVar(&c.Batch.Linger, "batch.linger", time.Millisecond, "longest a batch waits for more records once it holds one (records already fetched never wait)")
	fs.IntVar(&c.DLQAfter, "dlq-after", 5, "failures after which a record is merged alone, and then dead-lettered to fedsync.deltas.dlq")
	fs.IntVar(&c.DocCache, "doc-cache", 64<<20, "bytes of recently committed documents kept to skip reading them back (0: off); checked by every commit's compare-and-set")
	fs.StringVar(&c.Group, "group", "fedsync-merge", "consumer group of the merge instances")
	fs.IntVar(&c.MaxCASRetries, "max-cas-retries", 50, "compare-and-set retries of one delta before it is retried from Kafka")
	fs.DurationVar(&c.StrongTimeout, "strong-timeout", 10*time.Second, "longest a strong-consistency commit may take")
	fs.StringVar(&c.DataTypes, "datatypes", "config/datatypes.yaml", "data-type registry file (reloaded when it changes)")
	fs.DurationVar(&c.CausalPoll, "causal-poll", 50*time.Millisecond, "interval between checks of waiting causal deltas")
	fs.DurationVar(&c.ReloadInterval, "datatypes-reload", 2*time.Second, "interval between checks of the registry file")
	fs.IntVar(&c.CausalBuffer, "causal-buffer", 10000, "causal deltas that may wait for their dependencies")
	fs.IntVar(&c.CausalPerWriter, "causal-buffer.per-writer", 1000, "causal deltas one writer may have waiting (its share of -causal-buffer); past it its deltas are rejected")
	fs.DurationVar(&c.CausalTimeout, "causal-timeout", 30*time.Second, "longest a causal delta waits for its dependencies before it is rejected")
	return c, svcrun.Parse(fs, args, c.Validate)
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch {
	case c.Consumers < 1:
		return errors.New("consumers: must be at least 1")
	case c.Batch.MaxRecords < 1 || c.Batch.MaxRecords > 10000:
		return errors.New("batch.max: must be between 1 and 10000")
	case c.Batch.MaxBytes < 1<<20:
		return errors.New("batch.max-bytes: must be at least 1 MiB (one delta's limit)")
	case c.Batch.Linger < 0 || c.Batch.Linger > 100*time.Millisecond:
		return errors.New("batch.linger: must be between 0 and 100ms")
	case c.DLQAfter < 1:
		return errors.New("dlq-after: must be at least 1")
	case c.DocCache < 0:
		return errors.New("doc-cache: must not be negative")
	case c.Group == "":
		return errors.New("group: must not be empty")
	case c.MaxCASRetries < 1:
		return errors.New("max-cas-retries: must be at least 1")
	case c.StrongTimeout <= 0:
		return errors.New("strong-timeout: must be positive")
	case c.DataTypes == "":
		return errors.New("datatypes: a registry file is required")
	case c.CausalBuffer < 1:
		return errors.New("causal-buffer: must be at least 1")
	case c.CausalPerWriter < 1 || c.CausalPerWriter > c.CausalBuffer:
		return errors.New("causal-buffer.per-writer: must be between 1 and causal-buffer")
	case c.CausalPoll <= 0 || c.ReloadInterval <= 0:
		return errors.New("causal-poll and datatypes-reload: must be positive")
	case c.CausalTimeout <= 0:
		return errors.New("causal-timeout: must be positive")
	case c.Service.DataDir == "":
		return errors.New("data-dir: merge keeps its causal buffer there")
	}
	if err := c.Service.Validate(); err != nil {
		return err
	}
	return c.Kafka.Validate()
}
