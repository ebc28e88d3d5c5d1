package merge

import (
	"context"
	"fmt"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/fedsync/fedsync/libs/datatypes"
	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/svcrun"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Run serves merge until ctx ends.
func Run(ctx context.Context, cfg *Config) error {
	rt, err := svcrun.New(ctx, &cfg.Service)
	if err != nil {
		return err
	}
	if err := kafkabus.EnsureAll(ctx, &cfg.Kafka); err != nil {
		return err
	}
	peer, err := rt.Peer("statestore")
	if err != nil {
		return err
	}
	verifier, err := rt.Verifier()
	if err != nil {
		return fmt.Errorf("token verifier: %w", err)
	}
	resolvers := NewResolvers()
	types, err := datatypes.NewWatcher(cfg.DataTypes, resolvers.Known, log.With(rt.Logger, "component", "datatypes"))
	if err != nil {
		return err
	}
	rt.Go("datatypes reload", func(ctx context.Context) error { return types.Run(ctx, cfg.ReloadInterval) })
	queue, err := openCausalQueue(cfg.Service.DataDir, cfg.CausalBuffer, cfg.CausalTimeout, log.With(rt.Logger, "component", "causal"))
	if err != nil {
		return err
	}
	rt.OnClose(func() { queue.close() })
	queue.maxPerWriter = cfg.CausalPerWriter
	rt.Guard.Limit.WithLabelValues("causal_buffer").Set(float64(cfg.CausalBuffer))
	rt.Guard.Limit.WithLabelValues("causal_buffer_per_writer").Set(float64(cfg.CausalPerWriter))

	core := NewService(storeClient{peer: peer}, types, resolvers, queue, cfg.MaxCASRetries).WithDocCache(cfg.DocCache)
	var svc Service = core
	svc = InstrumentingMiddleware(rt.Metrics.Registry, rt.Metrics.NewSyncLatency(), ConflictRate(rt.Metrics.Registry))(svc)
	eps := MakeEndpoints(svc, rt.Instrument)
	strong := eps.CommitStrong
	eps.CommitStrong = func(ctx context.Context, req any) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, cfg.StrongTimeout)
		defer cancel()
		return strong(ctx, req)
	}

	rejected := rt.Metrics.Requests.MustCurryWith(map[string]string{"method": "ConsumeDelta"})
	onReject := func(reason string) { rejected.WithLabelValues("rejected_" + reason).Inc() }
	queue.onReject = onReject
	rt.Go("causal buffer", func(ctx context.Context) error { return queue.run(ctx, core, cfg.CausalPoll) })
	causalDepth := rt.Metrics.QueueDepth.WithLabelValues("causal_buffer", "all")

	logger := log.With(rt.Logger, "component", "deltas-consumer")
	dlq := kafkabus.NewProducer(&cfg.Kafka, kafkabus.TopicDLQ)
	rt.OnClose(func() { dlq.Close() })
	deadLettered := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedsync_merge_dead_letters_total", Help: "Records of fedsync.deltas sent to fedsync.deltas.dlq, by reason.",
	}, []string{"reason"})
	rt.Metrics.Registry.MustRegister(deadLettered)
	handler := batchHandler(eps, core, dlq, cfg.DLQAfter, logger, func(reason string) { deadLettered.WithLabelValues(reason).Inc() })
	consumers := make([]kafkabus.Lagger, cfg.Consumers)
	for i := range consumers {
		c := kafkabus.NewConsumer(&cfg.Kafka, kafkabus.TopicDeltas, cfg.Group, kafkabus.StartEarliest, logger)
		consumers[i] = c
		rt.OnClose(func() { c.Close() })
		rt.Go(fmt.Sprintf("deltas consumer %d", i), func(ctx context.Context) error { return c.RunBatch(ctx, handler, cfg.Batch) })
	}
	lag := rt.Metrics.QueueDepth.WithLabelValues(kafkabus.TopicDeltas, "all")
	rt.Go("lag gauge", func(ctx context.Context) error {
		return kafkabus.ReportLag(ctx, gaugeFunc(func(v float64) { lag.Set(v); causalDepth.Set(float64(queue.Len())) }), consumers...)
	})
	return rt.Run(ctx, svcrun.Servers{
		RegisterGRPC: func(s *grpc.Server) { fedsyncv1.RegisterMergeServiceServer(s, NewGRPCServer(eps, verifier)) },
		HTTP:         NewHTTPHandler(eps, verifier),
	})
}

// gaugeFunc adapts a function to the Set of a gauge.
type gaugeFunc func(float64)

func (f gaugeFunc) Set(v float64) { f(v) }
