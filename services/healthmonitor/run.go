package healthmonitor

import (
	"context"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/periodic"
	"github.com/fedsync/fedsync/libs/svcrun"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Run serves the healthmonitor until ctx ends.
func Run(ctx context.Context, cfg *Config) error {
	rt, err := svcrun.New(ctx, &cfg.Service)
	if err != nil {
		return err
	}
	if err := kafkabus.EnsureAll(ctx, &cfg.Kafka); err != nil {
		return err
	}
	alerts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedsync_alerts_total", Help: "Alerts raised, by alert name (instance_down, heartbeat_missing).",
	}, []string{"alert"})
	rt.Metrics.Registry.MustRegister(alerts)
	alert := func(name string, _ ...string) { alerts.WithLabelValues(name).Inc() }

	p := newProber(cfg.ProbeInterval, cfg.FailureThreshold, log.With(rt.Logger, "component", "prober"), alert)
	p.creds = rt.ClientCredentials()
	for _, name := range cfg.Watch {
		inst, err := rt.Discovery.Instancer(name)
		if err != nil {
			return err
		}
		rt.OnClose(inst.Stop)
		rt.Go("follow "+name, func(ctx context.Context) error { p.follow(ctx, name, inst); return nil })
	}
	regionUp := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fedsync_region_healthy_instances", Help: "Instances of a region's hub answering their health checks, after the last probe round (0: the regional hub is down).",
	}, []string{"region"})
	regionTotal := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fedsync_region_instances", Help: "Instances of a region's hub known from discovery, after the last probe round.",
	}, []string{"region"})
	rt.Metrics.Registry.MustRegister(regionUp, regionTotal)
	hubs := &hubState{}
	p.regions = func(up, total map[string]int) {
		for r, n := range total {
			regionUp.WithLabelValues(r).Set(float64(up[r]))
			regionTotal.WithLabelValues(r).Set(float64(n))
		}
		hubs.set(up, total)
	}
	al, sc, err := startAlerts(rt, cfg, hubs)
	if err != nil {
		return err
	}
	rt.Go("prober", p.run)
	ag := newAgents(cfg.AgentTimeout, log.With(rt.Logger, "component", "agents"), alert)
	// Every replica needs every heartbeat and none resumes from Kafka: a
	// tailer, no consumer group (so none is orphaned by a rollout).
	hb, err := kafkabus.NewTailer(&cfg.Kafka, kafkabus.TopicHeartbeats, rt.Logger)
	if err != nil {
		return err
	}
	rt.OnClose(func() { hb.Close() })
	rt.Go("heartbeats consumer", func(ctx context.Context) error { return hb.Run(ctx, ag.handler()) })

	core := newService(p, ag, cfg.Watch)
	if cfg.PipelineInterval > 0 {
		store, err := rt.Peer("statestore")
		if err != nil {
			return err
		}
		probe := &kafkaProbe{
			merge:     kafkabus.NewLagReader(&cfg.Kafka, kafkabus.TopicDeltas, cfg.MergeGroup),
			committed: kafkabus.NewLagReader(&cfg.Kafka, kafkabus.TopicCommitted, ""),
			dlq:       kafkabus.NewLagReader(&cfg.Kafka, kafkabus.TopicDLQ, ""),
			store:     store,
		}
		core.pipeline = newPipeline(probe, cfg.PipelineStall, cfg.DLQWindow, log.With(rt.Logger, "component", "pipeline"))
		rt.Go("pipeline watch", func(ctx context.Context) error {
			return periodic.Run(ctx, cfg.PipelineInterval, core.pipeline.check)
		})
	}
	var svc Service = core
	svc = InstrumentingMiddleware(rt.Metrics.Registry)(svc)
	eps := MakeEndpoints(svc, rt.Instrument)
	verifier, err := rt.Verifier()
	if err != nil {
		return err
	}
	dash := &dashboard{svc: core, agents: ag, alerts: al, scraper: sc, pipeline: core.pipeline, verifier: verifier, every: time.Second}
	return rt.Run(ctx, svcrun.Servers{
		RegisterGRPC: func(s *grpc.Server) { fedsyncv1.RegisterHealthMonitorServiceServer(s, NewGRPCServer(eps)) },
		HTTP:         NewHTTPHandler(eps, dash),
	})
}
