package validation

import (
	"errors"
	"flag"
	"time"

	"github.com/fedsync/fedsync/libs/httpjson"
	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/svcrun"
)

// Config configures a validation instance (one regional hub ingress).
type Config struct {
	Service svcrun.Config
	Kafka   kafkabus.Config
	// MaxBody is the largest accepted request body.
	MaxBody int64
	// HeartbeatEvery is the shortest interval between two admitted
	// heartbeats of one agent.
	HeartbeatEvery time.Duration
	// ProduceTimeout bounds the wait for Kafka's acknowledgement.
	ProduceTimeout time.Duration
	// StrongTimeout bounds a strong write (seed 3.1: 10 s).
	StrongTimeout time.Duration
	// Rate limits of seed 4.3: per AI system and per regional hub.
	ClientRate, ClientBurst float64
	HubRate, HubBurst       float64
	// DataTypes is the data-type registry file.
	DataTypes string
	// ReloadInterval is how often the registry file is checked for changes.
	ReloadInterval time.Duration
	// ControlPoll is how often the shared pause state is read.
	ControlPoll time.Duration
	// Back-pressure: admitted work merge has not finished is bounded by the
	// work it finishes in AdmitWindow, at least AdmitFloor and at most
	// AdmitMax deltas, read every AdmitPoll.
	AdmitWindow time.Duration
	AdmitFloor  int64
	AdmitMax    int64
	AdmitPoll   time.Duration
	// MergeGroup is merge's consumer group, whose lag is read.
	MergeGroup string
}

// ParseConfig reads the configuration from flags and FEDSYNC_* variables.
func ParseConfig(fs *flag.FlagSet, args []string) (*Config, error) {
	c := &Config{}
	c.Service.RegisterFlags(fs, "validation", "127.0.0.1:19102", "127.0.0.1:19202")
	c.Kafka.RegisterFlags(fs)
	fs.Int64Var(&c.MaxBody, "max-body", httpjson.DefaultMaxBody, "largest request body in bytes (larger gets 413)")
	fs.DurationVar(&c.HeartbeatEvery, "heartbeat.min-interval", time.Second, "shortest interval between two heartbeats of one agent; sooner ones get 429 rate_limited with Retry-After (0: no limit)")
	fs.DurationVar(&c.ProduceTimeout, "produce-timeout", 10*time.Second, "longest wait for Kafka to acknowledge a delta")
	fs.DurationVar(&c.StrongTimeout, "strong-timeout", 10*time.Second, "longest a strong write may take before 503")
	fs.StringVar(&c.DataTypes, "datatypes", "config/datatypes.yaml", "data-type registry file (reloaded when it changes)")
	fs.DurationVar(&c.ReloadInterval, "datatypes-reload", 2*time.Second, "interval between checks of the registry file")
	fs.DurationVar(&c.ControlPoll, "control-poll", 500*time.Millisecond, "interval between reads of the federation's pause state")
	fs.Float64Var(&c.ClientRate, "rate.client", 1000, "requests per second per client")
	fs.Float64Var(&c.ClientBurst, "rate.client-burst", 2000, "burst per client")
	fs.Float64Var(&c.HubRate, "rate.hub", 10000, "requests per second of this regional hub")
	fs.Float64Var(&c.HubBurst, "rate.hub-burst", 20000, "burst of this regional hub")
	fs.DurationVar(&c.AdmitWindow, "admission.window", time.Second, "back-pressure: refuse deltas (503, Retry-After) while more is admitted than merge finishes in this long (0: off)")
	fs.Int64Var(&c.AdmitFloor, "admission.floor", 200, "back-pressure: a backlog of up to this many deltas is always admitted (also the bound until merge's rate is known)")
	fs.Int64Var(&c.AdmitMax, "admission.max", 50000, "back-pressure: a backlog of more than this many deltas is never admitted")
	fs.DurationVar(&c.AdmitPoll, "admission.poll", 100*time.Millisecond, "back-pressure: interval between reads of merge's lag")
	fs.StringVar(&c.MergeGroup, "admission.merge-group", "fedsync-merge", "back-pressure: merge's consumer group on fedsync.deltas")
	return c, svcrun.Parse(fs, args, c.Validate)
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch {
	case c.MaxBody < 1024:
		return errors.New("max-body: must be at least 1024")
	case c.ProduceTimeout <= 0 || c.StrongTimeout <= 0:
		return errors.New("produce-timeout and strong-timeout: must be positive")
	case c.DataTypes == "" || c.ReloadInterval <= 0:
		return errors.New("datatypes: a registry file and a positive reload interval are required")
	case c.ControlPoll < 10*time.Millisecond:
		return errors.New("control-poll: must be at least 10ms")
	case c.ClientRate <= 0 || c.ClientBurst < 1 || c.HubRate <= 0 || c.HubBurst < 1:
		return errors.New("rate.*: must be positive")
	case c.AdmitWindow < 0 || c.AdmitFloor < 1 || c.AdmitMax < c.AdmitFloor:
		return errors.New("admission.*: window must not be negative, 1 <= floor <= max")
	case c.AdmitWindow > 0 && (c.AdmitPoll < 10*time.Millisecond || c.MergeGroup == ""):
		return errors.New("admission.poll: must be at least 10ms, and admission.merge-group must name merge's group")
	}
	if err := c.Service.Validate(); err != nil {
		return err
	}
	return c.Kafka.Validate()
}
