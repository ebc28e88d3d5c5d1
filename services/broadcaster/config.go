package broadcaster

import (
	"errors"
	"flag"
	"time"

	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/svcrun"
)

// Config configures a broadcaster instance (one regional hub's fan-out).
type Config struct {
	Service svcrun.Config
	Kafka   kafkabus.Config
	// SubscriberBuffer is how many changes may wait for one subscriber before it
	// is dropped as too slow (it resumes from its cursor).
	SubscriberBuffer int
	// PingInterval is how often WebSocket connections are pinged; a connection
	// that misses a pong for PingTimeout is closed.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// SyncInterval is how often the hub checks the commit log for changes Kafka
	// has not delivered.
	SyncInterval time.Duration
}

// ParseConfig reads the configuration from flags and FEDSYNC_* variables.
func ParseConfig(fs *flag.FlagSet, args []string) (*Config, error) {
	c := &Config{}
	c.Service.RegisterFlags(fs, "broadcaster", "127.0.0.1:19105", "127.0.0.1:19205")
	c.Kafka.RegisterFlags(fs)
	fs.IntVar(&c.SubscriberBuffer, "subscriber-buffer", 4096, "changes buffered per subscriber before it is dropped as too slow")
	fs.DurationVar(&c.PingInterval, "ping-interval", 20*time.Second, "WebSocket ping interval")
	fs.DurationVar(&c.PingTimeout, "ping-timeout", 20*time.Second, "WebSocket pong deadline")
	fs.DurationVar(&c.SyncInterval, "sync-interval", time.Second, "interval of the anti-entropy check against the commit log")
	return c, svcrun.Parse(fs, args, c.Validate)
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch {
	case c.SubscriberBuffer < 16:
		return errors.New("subscriber-buffer: must be at least 16")
	case c.SyncInterval < 10*time.Millisecond:
		return errors.New("sync-interval: must be at least 10ms")
	case c.PingInterval <= 0 || c.PingTimeout <= 0:
		return errors.New("ping-interval and ping-timeout: must be positive")
	case c.PingInterval+c.PingTimeout > 60*time.Second:
		return errors.New("ping-interval + ping-timeout: must be at most 60s, the contract's bound for closing dead connections")
	}
	if err := c.Service.Validate(); err != nil {
		return err
	}
	return c.Kafka.Validate()
}
