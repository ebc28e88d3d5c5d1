package broadcaster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/periodic"
	"github.com/fedsync/fedsync/libs/svcrun"
	"github.com/fedsync/fedsync/libs/telemetry"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Run serves the broadcaster until ctx ends.
func Run(ctx context.Context, cfg *Config) error {
	rt, err := svcrun.New(ctx, &cfg.Service)
	if err != nil {
		return err
	}
	if err := kafkabus.EnsureAll(ctx, &cfg.Kafka); err != nil {
		return err
	}
	store, err := rt.Peer("statestore")
	if err != nil {
		return err
	}
	verifier, err := rt.Verifier()
	if err != nil {
		return fmt.Errorf("token verifier: %w", err)
	}
	commitLog := logClient{peer: store}
	opts := DefaultOptions()
	opts.Limits = Limits{Changes: cfg.SubscriberBuffer, Bytes: cfg.SubscriberBufferBytes}
	opts.DocCacheBytes = cfg.DocCacheBytes
	opts.MaxPerClient = cfg.SubscriptionsPerClient
	opts.NoView = cfg.ConsistencyInterval == 0
	for name, v := range map[string]int{"subscriptions_per_socket": cfg.SubscriptionsPerSocket,
		"subscriptions_per_client": cfg.SubscriptionsPerClient, "registrations_per_client": cfg.RegistrationsPerClient} {
		rt.Guard.Limit.WithLabelValues(name).Set(float64(v))
	}
	core := NewService(commitLog, opts)
	var svc Service = core
	svc = InstrumentingMiddleware(rt.Metrics.NewSyncLatency(), cfg.Service.Region)(svc)
	reg := NewRegistry(svc, log.With(rt.Logger, "component", "webhooks"))
	reg.MaxPerClient = cfg.RegistrationsPerClient
	reg.DeadAfter = cfg.WebhookDeadAfter
	reg.Disabled = verifier.ClientDisabled
	for _, c := range cfg.WebhookAllow {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return fmt.Errorf("webhooks.allow-cidrs: %w", err)
		}
		reg.Policy.Allow = append(reg.Policy.Allow, p)
	}
	// Registrations live in the compacted topic fedsync.webhooks: every
	// replica reads it whole; the group fedsync-webhooks shares its
	// partitions out, and a replica delivers the webhooks of its partitions.
	regProducer := kafkabus.NewProducer(&cfg.Kafka, kafkabus.TopicWebhooks)
	rt.OnClose(func() { regProducer.Close() })
	reg.Log = regLog{regProducer}
	regReader, err := kafkabus.NewTailerFrom(&cfg.Kafka, kafkabus.TopicWebhooks, kafkabus.StartEarliest, rt.Logger)
	if err != nil {
		return err
	}
	rt.OnClose(func() { regReader.Close() })
	rt.OnClose(reg.Close)
	rt.Go("registrations reader", func(ctx context.Context) error {
		return regReader.Run(ctx, func(_ context.Context, m kafkabus.Message) error {
			reg.Load(string(m.Key), m.Value, int32(m.Partition))
			return nil
		})
	})
	rt.Go("webhook assignment", func(ctx context.Context) error {
		owned := map[int32]bool{}
		set := func() {
			parts := make([]int32, 0, len(owned))
			for p := range owned {
				parts = append(parts, p)
			}
			reg.SetOwned(parts)
		}
		return kafkabus.WatchAssignments(ctx, &cfg.Kafka, kafkabus.TopicWebhooks, "fedsync-webhooks", rt.Logger,
			func(ps []int32) {
				for _, p := range ps {
					owned[p] = true
				}
				set()
			},
			func(ps []int32) {
				for _, p := range ps {
					delete(owned, p)
				}
				set()
			})
	})
	eps := MakeEndpoints(reg, rt.Instrument)
	conns := rt.Metrics.NewActiveConnections()

	// Anti-entropy: start "now" at statestore's head, then fill from the commit
	// log any change Kafka did not bring (a consumer that joined late).
	rt.Go("anti-entropy", func(ctx context.Context) error {
		return periodic.Run(ctx, cfg.SyncInterval, func(ctx context.Context) {
			if err := svc.Sync(ctx); err != nil && ctx.Err() == nil {
				level.Warn(rt.Logger).Log("msg", "sync with commit log", "err", err)
			}
		})
	})
	if cfg.ConsistencyInterval > 0 {
		m := NewConsistencyMetrics(rt.Metrics.Registry, cfg.Service.Region)
		rt.Go("consistency verification", func(ctx context.Context) error {
			return verifyEvery(ctx, core, commitLog, cfg.ConsistencyInterval, m, rt.Logger)
		})
	}
	var faults http.Handler
	if cfg.FaultInjection {
		level.Warn(rt.Logger).Log("msg", "fault injection is on: POST /debug/consistency/corrupt damages this hub's view")
		faults = NewFaultInjectionHandler(core)
	}
	if cfg.PublicGRPCAddr != "" {
		if err := servePublic(rt, cfg, svc, verifier, conns.WithLabelValues(cfg.Service.Region, "public-grpc")); err != nil {
			return err
		}
	}
	// Every hub fans out every change and fills gaps from the commit log, so
	// it tails the topic without a consumer group (none is orphaned by a
	// rollout, and no offsets are committed that nobody reads).
	consumer, err := kafkabus.NewTailer(&cfg.Kafka, kafkabus.TopicCommitted, rt.Logger)
	if err != nil {
		return err
	}
	rt.OnClose(func() { consumer.Close() })
	rt.Go("committed consumer", func(ctx context.Context) error {
		return consumer.RunBatch(ctx, kafkaHandler(svc, rt.Logger), cfg.Batch)
	})
	lag := rt.Metrics.QueueDepth.WithLabelValues(kafkabus.TopicCommitted, "all")
	rt.Go("lag gauge", func(ctx context.Context) error { return kafkabus.ReportLag(ctx, lag, consumer) })
	return rt.Run(ctx, svcrun.Servers{
		GRPCOptions: append(GRPCServerOptions(), grpc.ChainStreamInterceptor(verifier.StreamServerInterceptor())),
		RegisterGRPC: func(s *grpc.Server) {
			fedsyncv1.RegisterBroadcasterServiceServer(s, NewGRPCServer(svc, verifier, conns.WithLabelValues(cfg.Service.Region, "grpc")))
		},
		HTTP: NewHTTPHandler(svc, reg, eps, verifier, HTTPOptions{
			PingInterval: cfg.PingInterval, PingTimeout: cfg.PingTimeout, Logger: rt.Logger,
			Connections:  conns.WithLabelValues(cfg.Service.Region, "websocket"),
			MaxPerSocket: cfg.SubscriptionsPerSocket, OriginPatterns: cfg.AllowedOrigins,
			FaultInjection: faults,
		}),
	})
}

// regLog keeps registrations in fedsync.webhooks.
type regLog struct{ p *kafkabus.Producer }

func (l regLog) Put(ctx context.Context, key string, value []byte) error {
	return l.p.Publish(ctx, kafkabus.Record{Key: []byte(key), Value: value})
}

// verifyEvery runs a consistency verification at start-up (once the hub knows
// statestore's head) and then every interval, logging what it finds.
func verifyEvery(ctx context.Context, core *service, src DigestSource, interval time.Duration, m *ConsistencyMetrics, logger log.Logger) error {
	check := func(ctx context.Context) bool {
		start := time.Now()
		res, err := core.Verify(ctx, src)
		m.Record(res, err, time.Since(start))
		switch {
		case err != nil:
			if ctx.Err() == nil {
				level.Warn(logger).Log("msg", "consistency verification failed; next at the interval", "err", err)
			}
			return false
		case res.Result == "divergent":
			for _, d := range res.Divergent {
				level.Error(logger).Log("msg", "view diverged from statestore; repaired", "id", d.ID, "hub", leafString(d.Hub), "statestore", leafString(d.Store))
			}
		case res.Result == "loaded":
			level.Info(logger).Log("msg", "view of the committed state loaded from statestore", "documents", res.Documents, "took", time.Since(start))
		}
		return true
	}
	// The first check loads the view: retry it soon until it succeeds.
	backoff := periodic.Backoff{Min: 500 * time.Millisecond, Max: min(interval, 30*time.Second)}
	for !check(ctx) {
		if !backoff.Wait(ctx) {
			return nil
		}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			check(ctx)
		}
	}
}

func leafString(l *fedsyncv1.Leaf) string {
	if l == nil {
		return "absent"
	}
	return fmt.Sprintf("v%d/%016x", l.GetVersion(), l.GetValueHash())
}

// servePublic starts the agents' gRPC endpoint (transport_public.go).
func servePublic(rt *svcrun.Runtime, cfg *Config, svc Service, verifier *authtoken.Verifier, conns prometheus.Gauge) error {
	var creds credentials.TransportCredentials
	if cfg.PublicTLSCert != "" {
		var err error
		if creds, err = credentials.NewServerTLSFromFile(cfg.PublicTLSCert, cfg.PublicTLSKey); err != nil {
			return fmt.Errorf("public-tls: %w", err)
		}
	}
	validation, err := rt.Peer("validation")
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.PublicGRPCAddr)
	if err != nil {
		return fmt.Errorf("public-grpc-addr: %w", err)
	}
	s := NewPublicGRPCServer(svc, verifier, validationClient{peer: validation}, conns, creds, telemetry.GRPCServerOptions()...)
	level.Info(rt.Logger).Log("msg", "public gRPC endpoint for agents", "addr", lis.Addr(), "tls", creds != nil)
	rt.Go("public grpc", func(ctx context.Context) error {
		go func() {
			<-ctx.Done()
			s.Stop()
		}()
		if err := s.Serve(lis); err != nil && ctx.Err() == nil {
			return err
		}
		return nil
	})
	return nil
}
