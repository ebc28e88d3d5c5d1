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
	// Pipeline watch (pipeline.go).
	PipelineInterval, PipelineStall, DLQWindow time.Duration
	MergeGroup                                 string
	// Alerts (alerts.go): where notifications go, what is scraped for the
	// seed's metrics, and the rules' thresholds.
	AlertSinks, AlertScrape             flagenv.StringList
	AlertInterval, HubDownFor, AlertFor time.Duration
	LatencyThreshold                    time.Duration
	SuccessThreshold                    float64
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
	fs.DurationVar(&c.PipelineInterval, "pipeline.interval", 5*time.Second, "interval between checks of the data path (merge's consumer, the outbox, the dead-letter topic); 0 turns them off")
	fs.DurationVar(&c.PipelineStall, "pipeline.stall", 30*time.Second, "how long merge's consumer or statestore's outbox may stand still with work waiting before health is degraded")
	fs.DurationVar(&c.DLQWindow, "pipeline.dlq-window", 5*time.Minute, "health is degraded while records reached the dead-letter topic within this window")
	fs.StringVar(&c.MergeGroup, "pipeline.merge-group", "fedsync-merge", "merge's consumer group on fedsync.deltas")
	fs.Var(&c.AlertSinks, "alerts.webhooks", "comma-separated alert sinks, each alertmanager=URL (Alertmanager's /api/v2/alerts) or slack=URL (an incoming webhook); firing and resolved are both sent")
	fs.Var(&c.AlertScrape, "alerts.scrape", "comma-separated /metrics URLs read for sync_success_rate and sync_latency (merge's) and the consistency verification (each broadcaster's); without them only regional_hub_down is evaluated")
	fs.DurationVar(&c.AlertInterval, "alerts.interval", 5*time.Second, "interval between evaluations of the alert rules")
	fs.DurationVar(&c.HubDownFor, "alerts.hub-down-for", 30*time.Second, "regional_hub_down: how long no instance of a region's hub may answer before the alert fires (seed: 30 s)")
	fs.DurationVar(&c.AlertFor, "alerts.for", time.Minute, "high_sync_latency and sync_failure_spike: how long the condition must hold before the alert fires")
	fs.DurationVar(&c.LatencyThreshold, "alerts.latency-p99", 5*time.Second, "high_sync_latency: p99 of sync_latency over 5 minutes above this (seed: 5 s)")
	fs.Float64Var(&c.SuccessThreshold, "alerts.success-rate", 95, "sync_failure_spike: sync_success_rate under this percentage (seed: 95)")
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
	case c.AlertInterval < 100*time.Millisecond || c.HubDownFor < 0 || c.AlertFor < 0:
		return errors.New("alerts.interval must be at least 100ms; alerts.hub-down-for and alerts.for must not be negative")
	case c.PipelineInterval < 0 || c.PipelineStall <= 0 || c.DLQWindow <= 0:
		return errors.New("pipeline.interval must not be negative; pipeline.stall and pipeline.dlq-window must be positive")
	}
	if err := c.Service.Validate(); err != nil {
		return err
	}
	return c.Kafka.Validate()
}
