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
	// Workers is how many deltas of different ids each consumer merges at once.
	Workers int
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
	fs.IntVar(&c.Workers, "workers", 16, "deltas of different ids each consumer merges at once (one id's deltas stay in order)")
	fs.StringVar(&c.Group, "group", "fedsync-merge", "consumer group of the merge instances")
	fs.IntVar(&c.MaxCASRetries, "max-cas-retries", 50, "compare-and-set retries of one delta before it is retried from Kafka")
	fs.DurationVar(&c.StrongTimeout, "strong-timeout", 10*time.Second, "longest a strong-consistency commit may take")
	fs.StringVar(&c.DataTypes, "datatypes", "config/datatypes.yaml", "data-type registry file (reloaded when it changes)")
	fs.DurationVar(&c.CausalPoll, "causal-poll", 50*time.Millisecond, "interval between checks of waiting causal deltas")
	fs.DurationVar(&c.ReloadInterval, "datatypes-reload", 2*time.Second, "interval between checks of the registry file")
	fs.IntVar(&c.CausalBuffer, "causal-buffer", 10000, "causal deltas that may wait for their dependencies")
	fs.DurationVar(&c.CausalTimeout, "causal-timeout", 30*time.Second, "longest a causal delta waits for its dependencies before it is rejected")
	return c, svcrun.Parse(fs, args, c.Validate)
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch {
	case c.Consumers < 1 || c.Workers < 1:
		return errors.New("consumers and workers: must be at least 1")
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
