package merge

import (
	"context"
	"fmt"

	"github.com/go-kit/log"
	"google.golang.org/grpc"

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
	var svc Service = NewService(storeClient{peer: peer}, cfg.MaxCASRetries)
	svc = InstrumentingMiddleware(rt.Metrics.Registry, rt.Metrics.NewSyncLatency())(svc)
	eps := MakeEndpoints(svc, rt.Instrument)
	strong := eps.CommitStrong
	eps.CommitStrong = func(ctx context.Context, req any) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, cfg.StrongTimeout)
		defer cancel()
		return strong(ctx, req)
	}

	rejected := rt.Metrics.Requests.MustCurryWith(map[string]string{"method": "ConsumeDelta"})
	logger := log.With(rt.Logger, "component", "deltas-consumer")
	handler := kafkaHandler(eps, logger, func(reason string) { rejected.WithLabelValues("rejected_" + reason).Inc() })
	lag := rt.Metrics.QueueDepth.WithLabelValues(kafkabus.TopicDeltas, "all")
	consumers := make([]*kafkabus.Consumer, cfg.Consumers)
	for i := range consumers {
		c := kafkabus.NewConsumer(&cfg.Kafka, kafkabus.TopicDeltas, cfg.Group, kafkabus.StartEarliest, logger)
		consumers[i] = c
		rt.OnClose(func() { c.Close() })
		rt.Go(fmt.Sprintf("deltas consumer %d", i), func(ctx context.Context) error { return c.Run(ctx, handler) })
	}
	rt.Go("lag gauge", func(ctx context.Context) error { return kafkabus.ReportLag(ctx, lag, consumers...) })
	return rt.Run(ctx, svcrun.Servers{
		RegisterGRPC: func(s *grpc.Server) { fedsyncv1.RegisterMergeServiceServer(s, NewGRPCServer(eps)) },
	})
}
