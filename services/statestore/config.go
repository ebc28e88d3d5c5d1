package statestore

import (
	"errors"
	"flag"
	"time"

	"github.com/fedsync/fedsync/libs/atrest"
	"github.com/fedsync/fedsync/libs/backup"
	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/raftgroup"
	"github.com/fedsync/fedsync/libs/svcrun"
)

// Config configures a statestore instance.
type Config struct {
	Service svcrun.Config
	Kafka   kafkabus.Config
	// LogRetention bounds the committed-change log that subscribers resume
	// from: by count, age and size; what is older is trimmed once published.
	LogRetention LogRetention
	// MaxQueryLimit caps a query page.
	MaxQueryLimit int
	// DedupRetention is how long applied message ids and delta outcomes are kept.
	DedupRetention time.Duration
	// PublishWholeMax is the largest document a change on fedsync.committed
	// carries whole; larger ones carry only what changed (value_omitted).
	PublishWholeMax int
	// MaxDocBytes is the largest document (bytes of its JSON value) a commit
	// may produce; a change that would exceed it is refused with too_large.
	MaxDocBytes int
	// PublishMaxRecord is the largest record put on fedsync.committed; a
	// change larger even without its document goes out without set and
	// removed too (change_omitted) and consumers read it from the log.
	PublishMaxRecord int
	// Raft places this replica in the statestore's Raft group.
	Raft raftgroup.Config
	// AtRest are the keys that seal the store, the Raft log and snapshots.
	AtRest atrest.Config
	// Backup is where and how often the leader exports cold backups.
	Backup backup.Config
}

// LogRetention bounds the committed-change log.
type LogRetention struct {
	Count uint64
	Age   time.Duration
	Bytes uint64
}

// ParseConfig reads the configuration from flags and FEDSYNC_* variables.
func ParseConfig(fs *flag.FlagSet, args []string) (*Config, error) {
	c := &Config{}
	c.Service.RegisterFlags(fs, "statestore", "127.0.0.1:19104", "127.0.0.1:19204")
	c.Kafka.RegisterFlags(fs)
	fs.Uint64Var(&c.LogRetention.Count, "log-retention", 1_000_000, "committed changes kept for cursor resume (newest first); an older cursor gets snapshot_required")
	fs.DurationVar(&c.LogRetention.Age, "log-retention-age", 7*24*time.Hour, "committed changes older than this are trimmed from the log (0: no age bound)")
	fs.Uint64Var(&c.LogRetention.Bytes, "log-retention-bytes", 1<<30, "the log's oldest changes are trimmed while it holds more than this many bytes (0: no size bound)")
	fs.IntVar(&c.MaxQueryLimit, "max-query-limit", 1000, "largest page a query returns")
	fs.DurationVar(&c.DedupRetention, "dedup-retention", 7*24*time.Hour, "how long applied message ids and outcomes are kept; at least the Kafka topics' retention")
	fs.IntVar(&c.PublishWholeMax, "publish.whole-max", 256<<10, "largest document (bytes) a change on fedsync.committed carries whole; larger ones carry only the fields set and removed")
	fs.IntVar(&c.MaxDocBytes, "doc.max-bytes", DefaultMaxDocBytes, "largest document (bytes of its JSON value) a commit may produce; larger results are refused with 413 too_large")
	fs.IntVar(&c.PublishMaxRecord, "publish.max-record", 900<<10, "largest record (bytes) put on fedsync.committed; a larger change goes out without its fields (change_omitted) and is read from the log")
	c.Raft.RegisterFlags(fs, "127.0.0.1:19504")
	c.AtRest.RegisterFlags(fs)
	c.Backup.RegisterFlags(fs)
	return c, svcrun.Parse(fs, args, c.Validate)
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	if c.Service.DataDir == "" {
		return errors.New("data-dir: statestore needs a directory for its database")
	}
	if c.LogRetention.Count < 1000 {
		return errors.New("log-retention: must be at least 1000")
	}
	if c.LogRetention.Age != 0 && c.LogRetention.Age < time.Minute {
		return errors.New("log-retention-age: 0 (no age bound) or at least 1m")
	}
	if c.LogRetention.Bytes != 0 && c.LogRetention.Bytes < 1<<20 {
		return errors.New("log-retention-bytes: 0 (no size bound) or at least 1 MiB")
	}
	if c.DedupRetention < time.Hour {
		return errors.New("dedup-retention: must be at least 1h")
	}
	if c.PublishWholeMax < 1024 || c.PublishWholeMax > 900<<10 {
		return errors.New("publish.whole-max: must be between 1 KiB and 900 KiB (Kafka's default record limit is 1 MiB)")
	}
	if c.MaxDocBytes < 1024 {
		return errors.New("doc.max-bytes: must be at least 1 KiB")
	}
	if c.PublishMaxRecord < 4096 || c.PublishMaxRecord < c.PublishWholeMax {
		return errors.New("publish.max-record: must be at least 4 KiB and at least publish.whole-max")
	}
	if err := c.Raft.ValidateFor(c.Service.Advertise()); err != nil {
		return err
	}
	if err := c.AtRest.Validate(); err != nil {
		return err
	}
	if err := c.Backup.Validate(); err != nil {
		return err
	}
	if c.MaxQueryLimit < 1 {
		return errors.New("max-query-limit: must be at least 1")
	}
	if err := c.Service.Validate(); err != nil {
		return err
	}
	return c.Kafka.Validate()
}
