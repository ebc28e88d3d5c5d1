package healthmonitor

import (
	"errors"
	"flag"
	"time"

	"github.com/fedsync/fedsync/libs/flagenv"
	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/svcrun"
)

// Config configures a healthmonitor instance.
type Config struct {
	Service svcrun.Config
	Kafka   kafkabus.Config
	// Watch lists the services whose instances are probed.
	Watch flagenv.StringList
	// ProbeInterval is how often each instance is probed.
	ProbeInterval time.Duration
	// FailureThreshold consecutive failed probes mark an instance down (seed 4.1: 3).
	FailureThreshold int
	// AgentTimeout is how long an agent may miss heartbeats before it counts as
	// unhealthy (seed 4.1: 30 s).
	AgentTimeout time.Duration
}

// ParseConfig reads the configuration from flags and FEDSYNC_* variables.
func ParseConfig(fs *flag.FlagSet, args []string) (*Config, error) {
	c := &Config{}
	c.Service.RegisterFlags(fs, "healthmonitor", "127.0.0.1:19106", "127.0.0.1:19206")
	c.Kafka.RegisterFlags(fs)
	c.Watch = flagenv.StringList{"authn", "validation", "merge", "statestore", "broadcaster", "healthmonitor"}
	fs.Var(&c.Watch, "watch", "comma-separated services to probe")
	fs.DurationVar(&c.ProbeInterval, "probe-interval", 5*time.Second, "interval between probes of an instance")
	fs.IntVar(&c.FailureThreshold, "failure-threshold", 3, "consecutive failed probes that mark an instance down")
	fs.DurationVar(&c.AgentTimeout, "agent-timeout", 30*time.Second, "heartbeat silence after which an agent is unhealthy")
	return c, svcrun.Parse(fs, args, c.Validate)
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch {
	case len(c.Watch) == 0:
		return errors.New("watch: at least one service is required")
	case c.ProbeInterval < 100*time.Millisecond:
		return errors.New("probe-interval: must be at least 100ms")
	case c.FailureThreshold < 1:
		return errors.New("failure-threshold: must be at least 1")
	case c.AgentTimeout <= 0:
		return errors.New("agent-timeout: must be positive")
	}
	if err := c.Service.Validate(); err != nil {
		return err
	}
	return c.Kafka.Validate()
}
