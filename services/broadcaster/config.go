package broadcaster

import (
	"errors"
	"flag"
	"time"

	"github.com/fedsync/fedsync/libs/flagenv"
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
	// SubscriberBufferBytes bounds the same queue by bytes (the changes' size in
	// the subscriber's form); whichever bound is reached first drops it.
	SubscriberBufferBytes int64
	// DocCacheBytes bounds the cache of latest documents used to rebuild the
	// documents statestore leaves out of large changes.
	DocCacheBytes int64
	// Batch shapes the batches fedsync.committed is consumed in. The defaults
	// (256 records, no linger) come from BenchmarkCommittedBacklog and
	// BenchmarkCommittedSteady (bench_test.go): batches cut the CPU per change
	// by a third while records wait, and any linger only adds latency.
	Batch kafkabus.BatchOptions
	// PingInterval is how often WebSocket connections are pinged; a connection
	// that misses a pong for PingTimeout is closed.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// SyncInterval is how often the hub checks the commit log for changes Kafka
	// has not delivered.
	SyncInterval time.Duration
	// SubscriptionsPerSocket, SubscriptionsPerClient and
	// RegistrationsPerClient bound what one client may hold of the hub.
	SubscriptionsPerSocket int
	SubscriptionsPerClient int
	RegistrationsPerClient int
	// AllowedOrigins are the browser origins, besides the edge's own host,
	// that may open a WebSocket stream.
	AllowedOrigins flagenv.StringList
	// Webhooks: the callback ranges allowed besides public addresses, and
	// how long a callback may fail before its webhook is dead.
	WebhookAllow     flagenv.StringList
	WebhookDeadAfter time.Duration
	// ConsistencyInterval is how often the hub's view of the committed state
	// is verified against statestore (seed 8.2: 5 minutes); 0 keeps no view.
	ConsistencyInterval time.Duration
	// FaultInjection serves POST /debug/consistency/corrupt, which damages
	// the view on purpose (for tests of verification and repair).
	FaultInjection bool
	// PublicGRPCAddr is the agents' gRPC endpoint (bearer token, no client
	// certificate; transport_public.go); empty serves none. PublicTLSCert and
	// PublicTLSKey make it TLS; without them it is plaintext.
	PublicGRPCAddr, PublicTLSCert, PublicTLSKey string
}

// ParseConfig reads the configuration from flags and FEDSYNC_* variables.
func ParseConfig(fs *flag.FlagSet, args []string) (*Config, error) {
	c := &Config{}
	c.Service.RegisterFlags(fs, "broadcaster", "127.0.0.1:19105", "127.0.0.1:19205")
	c.Kafka.RegisterFlags(fs)
	fs.IntVar(&c.SubscriberBuffer, "subscriber-buffer", 4096, "changes buffered per subscriber before it is dropped as too slow")
	fs.Int64Var(&c.SubscriberBufferBytes, "subscriber-buffer-bytes", 64<<20, "bytes buffered per subscriber before it is dropped as too slow")
	fs.Int64Var(&c.DocCacheBytes, "doc-cache-bytes", 64<<20, "bytes of latest documents kept to rebuild large documents whose changes come without them")
	fs.IntVar(&c.Batch.MaxRecords, "batch.max-records", 256, "most fedsync.committed records fanned out as one batch")
	fs.IntVar(&c.Batch.MaxBytes, "batch.max-bytes", 8<<20, "most bytes of fedsync.committed records in one batch")
	fs.DurationVar(&c.Batch.Linger, "batch.linger", 0, "longest wait for more records once a batch holds one (0: take only what has arrived)")
	fs.DurationVar(&c.PingInterval, "ping-interval", 20*time.Second, "WebSocket ping interval")
	fs.DurationVar(&c.PingTimeout, "ping-timeout", 20*time.Second, "WebSocket pong deadline")
	fs.DurationVar(&c.SyncInterval, "sync-interval", time.Second, "interval of the anti-entropy check against the commit log")
	fs.DurationVar(&c.ConsistencyInterval, "consistency.interval", 5*time.Minute, "interval of the verification of this hub's view of the committed state against statestore, by digests (seed 8.2); the first runs at start-up; 0 turns it off and keeps no view")
	fs.StringVar(&c.PublicGRPCAddr, "public-grpc-addr", "", "address of the agents' gRPC endpoint (bearer token only: Subscribe, PushState, Heartbeat, AgentService.Sync, health, reflection); empty serves none")
	fs.StringVar(&c.PublicTLSCert, "public-tls.cert", "", "server certificate (PEM) of the public gRPC endpoint; without it the endpoint is plaintext")
	fs.StringVar(&c.PublicTLSKey, "public-tls.key", "", "private key (PEM) of -public-tls.cert")
	fs.BoolVar(&c.FaultInjection, "consistency.fault-injection", false, "serve POST /debug/consistency/corrupt, which damages the hub's view on purpose (tests only; never in production)")
	fs.IntVar(&c.SubscriptionsPerSocket, "limits.subscriptions-per-socket", 1000, "most subscriptions open on one WebSocket connection")
	fs.IntVar(&c.SubscriptionsPerClient, "limits.subscriptions-per-client", 5000, "most subscriptions one client may have open on this hub (sockets, gRPC streams and webhooks together)")
	fs.IntVar(&c.RegistrationsPerClient, "limits.registrations-per-client", 100, "most subscriptions (webhooks and named filters) one client may register with POST /api/v1/sync/subscribe")
	fs.Var(&c.WebhookAllow, "webhooks.allow-cidrs", "comma-separated address ranges (CIDR) webhooks may call besides public addresses, e.g. 127.0.0.0/8 for a local receiver; loopback, link-local and private ranges are refused otherwise")
	fs.DurationVar(&c.WebhookDeadAfter, "webhooks.dead-after", time.Hour, "how long a webhook's callback may keep failing before the webhook is marked dead and no longer tried")
	fs.Var(&c.AllowedOrigins, "ws.allowed-origins", "comma-separated browser origins (host patterns such as *.example.com) allowed to open /stream besides the edge's own host; requests without Origin are not affected")
	return c, svcrun.Parse(fs, args, c.Validate)
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch {
	case c.SubscriberBuffer < 16:
		return errors.New("subscriber-buffer: must be at least 16")
	case c.SubscriberBufferBytes < 64<<10:
		return errors.New("subscriber-buffer-bytes: must be at least 65536")
	case c.DocCacheBytes < 1<<20:
		return errors.New("doc-cache-bytes: must be at least 1048576")
	case c.Batch.MaxRecords < 1:
		return errors.New("batch.max-records: must be at least 1")
	case c.Batch.MaxBytes < 0:
		return errors.New("batch.max-bytes: must not be negative")
	case c.Batch.Linger < 0 || c.Batch.Linger > time.Second:
		return errors.New("batch.linger: must be between 0 and 1s")
	case c.SubscriptionsPerSocket < 1 || c.SubscriptionsPerClient < 1 || c.RegistrationsPerClient < 1:
		return errors.New("limits.subscriptions-per-socket, limits.subscriptions-per-client and limits.registrations-per-client: must be at least 1")
	case c.WebhookDeadAfter < time.Second:
		return errors.New("webhooks.dead-after: must be at least 1s")
	case c.ConsistencyInterval < 0 || (c.ConsistencyInterval > 0 && c.ConsistencyInterval < 100*time.Millisecond):
		return errors.New("consistency.interval: must be 0 (off) or at least 100ms")
	case (c.PublicTLSCert == "") != (c.PublicTLSKey == ""):
		return errors.New("public-tls.cert and public-tls.key: give both or neither")
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
