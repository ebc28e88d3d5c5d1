package validation

import (
	"context"
	"fmt"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"google.golang.org/grpc"

	"github.com/fedsync/fedsync/libs/datatypes"
	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/svcrun"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Run serves validation until ctx ends.
func Run(ctx context.Context, cfg *Config) error {
	rt, err := svcrun.New(ctx, &cfg.Service)
	if err != nil {
		return err
	}
	if err := kafkabus.EnsureAll(ctx, &cfg.Kafka); err != nil {
		return err
	}
	deltas := kafkabus.NewProducer(&cfg.Kafka, kafkabus.TopicDeltas)
	heartbeats := kafkabus.NewCopyProducer(&cfg.Kafka, kafkabus.TopicHeartbeats)
	rt.OnClose(func() { deltas.Close(); heartbeats.Close() })
	mergePeer, err := rt.Peer("merge")
	if err != nil {
		return err
	}
	verifier, err := rt.Verifier()
	if err != nil {
		return fmt.Errorf("token verifier: %w", err)
	}
	types, err := datatypes.NewWatcher(cfg.DataTypes, nil, log.With(rt.Logger, "component", "datatypes"))
	if err != nil {
		return err
	}
	rt.Go("datatypes reload", func(ctx context.Context) error { return types.Run(ctx, cfg.ReloadInterval) })
	storePeer, err := rt.Peer("statestore")
	if err != nil {
		return err
	}
	core := NewService(types, deltas, heartbeats, mergeClient{peer: mergePeer}, cfg.Service.Region, cfg.ProduceTimeout, cfg.StrongTimeout).
		WithControl(controlClient{peer: storePeer})
	core.beats.every = cfg.HeartbeatEvery
	rt.Guard.Limit.WithLabelValues("heartbeat_min_interval_seconds").Set(cfg.HeartbeatEvery.Seconds())
	rt.Go("control state", func(ctx context.Context) error { return core.control.run(ctx, cfg.ControlPoll) })
	if cfg.AdmitWindow > 0 {
		adm := newAdmission(kafkabus.NewLagReader(&cfg.Kafka, kafkabus.TopicDeltas, cfg.MergeGroup), cfg.AdmitWindow, cfg.AdmitFloor, cfg.AdmitMax,
			log.With(rt.Logger, "component", "admission"))
		adm.gauge = rt.Metrics.QueueDepth.WithLabelValues("admission:"+kafkabus.TopicDeltas, "all")
		core.WithAdmission(adm)
		rt.Go("admission", func(ctx context.Context) error { return adm.run(ctx, cfg.AdmitPoll) })
	}
	if self, err := rt.Peer("validation"); err == nil {
		core.WithFanout(func(ctx context.Context) ([]string, map[string]error) {
			return self.Each(ctx, func(ctx context.Context, cc grpc.ClientConnInterface) (any, error) {
				return fedsyncv1.NewValidationServiceClient(cc).SyncControl(ctx, &fedsyncv1.SyncControlRequest{})
			})
		})
	} else {
		level.Warn(rt.Logger).Log("msg", "no discovery of the other validation instances: a pause reaches them within -control-poll", "err", err)
	}
	var svc Service = core
	svc = RateLimitingMiddleware(cfg.ClientRate, cfg.ClientBurst, cfg.HubRate, cfg.HubBurst)(svc)
	svc = InstrumentingMiddleware(rt.Metrics.Registry)(svc)
	svc = AuditingMiddleware(rt.Audit)(svc)
	eps := MakeEndpoints(svc, rt.Instrument)
	return rt.Run(ctx, svcrun.Servers{
		GRPCOptions: []grpc.ServerOption{
			grpc.ChainUnaryInterceptor(verifier.UnaryServerInterceptor(fedsyncv1.ValidationService_SyncControl_FullMethodName)),
			grpc.MaxRecvMsgSize(int(cfg.MaxBody) + 4096),
		},
		RegisterGRPC: func(s *grpc.Server) { fedsyncv1.RegisterValidationServiceServer(s, NewGRPCServer(eps)) },
		HTTP:         NewHTTPHandler(eps, verifier, cfg.MaxBody),
	})
}
