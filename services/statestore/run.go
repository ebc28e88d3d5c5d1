package statestore

import (
	"context"
	"fmt"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"google.golang.org/grpc"

	"github.com/fedsync/fedsync/libs/backup"
	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/periodic"
	"github.com/fedsync/fedsync/libs/raftgroup"
	"github.com/fedsync/fedsync/libs/svcrun"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Run serves the statestore until ctx ends.
func Run(ctx context.Context, cfg *Config) error {
	rt, err := svcrun.New(ctx, &cfg.Service)
	if err != nil {
		return err
	}
	st, err := openStore(cfg.Service.DataDir)
	if err != nil {
		return err
	}
	st.maxDoc = cfg.MaxDocBytes
	rt.OnClose(func() { st.close() })
	if err := kafkabus.EnsureAll(ctx, &cfg.Kafka); err != nil {
		return err
	}
	producer := kafkabus.NewCopyProducer(&cfg.Kafka, kafkabus.TopicCommitted)
	conflicts := kafkabus.NewProducer(&cfg.Kafka, kafkabus.TopicConflicts)
	rt.OnClose(func() { producer.Close(); conflicts.Close() })

	core := newService(st, cfg.MaxQueryLimit)
	// The replicas form a Raft group over stores sealed at rest.
	member, err := raftgroup.StartReplica(rt, cfg.Raft, cfg.AtRest, "statestore", core.fsm.BoltFSM, sealedBuckets)
	if err != nil {
		return err
	}
	node := node{member.Node}
	core.repl = node
	store, err := cfg.Backup.Store(cfg.Service.DataDir)
	if err != nil {
		return err
	}
	core.backups = &backups{store: store, vault: member.Vault, node: member.Node, dir: cfg.Service.DataDir}
	// The leader exports a backup every -backup.interval and drops those
	// past -backup.retention.
	rt.Go("backups", func(ctx context.Context) error {
		return node.WhileLeader(ctx, func(ctx context.Context) error {
			return cfg.Backup.Schedule(ctx, store, "statestore", func(ctx context.Context) (backup.Manifest, error) {
				return core.exportBackup(ctx, core.backups)
			}, log.With(rt.Logger, "component", "backup"))
		})
	})

	var svc Service = core
	svc = InstrumentingMiddleware(rt.Metrics.Registry, rt.Audit)(svc)
	svc = LeaderRoutingMiddleware(node, rt.ClientCredentials())(svc)
	rt.OnClose(svc.(*leaderRouting).close)
	eps := MakeEndpoints(svc, rt.Instrument)
	pub := &publisher{
		store: st, repl: node, producer: producer, conflicts: conflicts, wake: core.committed, retention: cfg.LogRetention, wholeMax: cfg.PublishWholeMax, maxRecord: cfg.PublishMaxRecord, saveEvery: time.Second,
		logger:  log.With(rt.Logger, "component", "outbox"),
		pending: rt.Metrics.QueueDepth.WithLabelValues("outbox:"+kafkabus.TopicCommitted, "all"),
	}
	// Only the leader publishes fedsync.committed and sweeps; a new leader
	// resumes from the replicated published position, and consumers drop
	// what is published twice by seq.
	rt.Go("outbox publisher", func(ctx context.Context) error { return node.WhileLeader(ctx, pub.run) })
	rt.Go("dedup sweep", func(ctx context.Context) error {
		return node.WhileLeader(ctx, func(ctx context.Context) error {
			return periodic.Run(ctx, 10*time.Minute, func(ctx context.Context) {
				if n, err := core.sweep(ctx, cfg.DedupRetention); err != nil {
					level.Warn(rt.Logger).Log("msg", "sweep applied message ids", "err", err)
				} else if n > 0 {
					level.Info(rt.Logger).Log("msg", "forgot old message ids and outcomes", "removed", n)
				}
			})
		})
	})
	verifier, err := rt.Verifier()
	if err != nil {
		return fmt.Errorf("token verifier: %w", err)
	}
	return rt.Run(ctx, svcrun.Servers{
		// Batches of commits (ApplyBatch) are larger than gRPC's 4 MiB default.
		GRPCOptions:  []grpc.ServerOption{grpc.MaxRecvMsgSize(maxGRPCMessage)},
		RegisterGRPC: func(s *grpc.Server) { fedsyncv1.RegisterStateStoreServiceServer(s, NewGRPCServer(eps)) },
		HTTP:         NewHTTPHandler(eps, verifier),
	})
}
