package backup

import (
	"context"
	"errors"
	"flag"
	"path/filepath"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// Config is where and how often a service exports its backups.
type Config struct {
	// Target is a directory, file:///PATH or s3://BUCKET/PREFIX; empty is
	// DIR/backups of the service's data directory.
	Target string
	// Interval is how often the leader exports one (0: only on demand).
	Interval time.Duration
	// Retention is how long backups are kept (the newest always is).
	Retention time.Duration
	S3        S3Options
}

// RegisterFlags registers the -backup.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Target, "backup.target", "", "where cold backups go: a directory, file:///PATH, or s3://BUCKET/PREFIX through the S3 API (default: backups/ in the data directory)")
	fs.DurationVar(&c.Interval, "backup.interval", 24*time.Hour, "how often the leader exports a backup (0: only when asked: fedctl backup create)")
	fs.DurationVar(&c.Retention, "backup.retention", 90*24*time.Hour, "how long backups are kept; the newest is never deleted")
	fs.StringVar(&c.S3.Endpoint, "backup.s3-endpoint", "s3.amazonaws.com", "S3 API endpoint (host[:port]) of an s3:// target")
	fs.StringVar(&c.S3.Region, "backup.s3-region", "", "S3 region of the bucket (default: asked of the endpoint)")
	fs.BoolVar(&c.S3.Insecure, "backup.s3-insecure", false, "talk plain HTTP to the S3 endpoint (a server on loopback only)")
	fs.StringVar(&c.S3.AccessKey, "backup.s3-access-key", "", "S3 access key id (default: AWS_ACCESS_KEY_ID, then the instance's IAM role); set it through FEDSYNC_BACKUP_S3_ACCESS_KEY from a Secret")
	fs.StringVar(&c.S3.SecretKey, "backup.s3-secret-key", "", "S3 secret key (default: AWS_SECRET_ACCESS_KEY); set it through FEDSYNC_BACKUP_S3_SECRET_KEY from a Secret, never on a command line")
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	if c.Interval != 0 && c.Interval < time.Minute {
		return errors.New("backup.interval: 0 (on demand only) or at least 1m")
	}
	if c.Retention < time.Hour {
		return errors.New("backup.retention: must be at least 1h")
	}
	if (c.S3.AccessKey == "") != (c.S3.SecretKey == "") {
		return errors.New("backup.s3-access-key and backup.s3-secret-key go together")
	}
	_, err := Open(c.target("/data"), c.S3)
	return err
}

func (c *Config) target(dataDir string) string {
	if c.Target == "" {
		return filepath.Join(dataDir, "backups")
	}
	return c.Target
}

// Store opens the configured store for a service with data in dataDir.
func (c *Config) Store(dataDir string) (Store, error) { return Open(c.target(dataDir), c.S3) }

// Schedule runs create every Interval and then prunes what is older than
// Retention, until ctx ends; the first one an Interval after the last
// backup in st (at once when there is none or it is older), so a leader
// change does not export twice.
func (c *Config) Schedule(ctx context.Context, st Store, service string, create func(context.Context) (Manifest, error), logger log.Logger) error {
	if c.Interval == 0 {
		<-ctx.Done()
		return nil
	}
	for {
		wait := time.Duration(0)
		if all, err := List(ctx, st); err == nil {
			for _, m := range all {
				if m.Service == service {
					wait = time.Until(m.CreatedAt.Add(c.Interval))
					break
				}
			}
		}
		if wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		start := time.Now()
		m, err := create(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			level.Error(logger).Log("msg", "scheduled backup failed; next try in a minute", "where", st, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Minute):
			}
			continue
		}
		level.Info(logger).Log("msg", "backup exported", "id", m.ID, "where", st, "bytes", m.Size, "documents", m.Documents, "took", time.Since(start).Round(time.Millisecond))
		gone, err := Prune(ctx, st, service, c.Retention, time.Now())
		if err != nil {
			level.Warn(logger).Log("msg", "prune old backups", "err", err)
		} else if len(gone) > 0 {
			level.Info(logger).Log("msg", "deleted backups past retention", "retention", c.Retention, "ids", len(gone))
		}
	}
}
