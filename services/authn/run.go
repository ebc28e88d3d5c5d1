package authn

import (
	"context"
	"errors"
	"time"

	"github.com/go-kit/log/level"
	"google.golang.org/grpc"

	"github.com/fedsync/fedsync/libs/periodic"
	"github.com/fedsync/fedsync/libs/raftgroup"
	"github.com/fedsync/fedsync/libs/svcrun"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Run serves authn until ctx ends.
func Run(ctx context.Context, cfg *Config) error {
	rt, err := svcrun.New(ctx, &cfg.Service)
	if err != nil {
		return err
	}
	st, err := openStore(cfg.Service.DataDir, cfg.BcryptCost)
	if err != nil {
		return err
	}
	rt.OnClose(func() { st.close() })
	var entries []ClientEntry
	if cfg.ClientsFile != "" {
		if entries, err = readClientsFile(cfg.ClientsFile); err != nil {
			return err
		}
	}
	// The registry is replicated: authn's replicas form their own Raft
	// group over stores sealed at rest, and any replica takes a change (a
	// follower hands it to the leader).
	member, err := raftgroup.StartReplica(rt, cfg.Raft, cfg.AtRest, "authn", st.fsm, sealedBuckets)
	if err != nil {
		return err
	}
	member.EnableForwarding(rt.ClientCredentials())
	st.submit, st.catchUp = member.Submit, member.CatchUp

	// Until the group holds a signing key and the bootstrap clients, there is
	// nothing to serve: found them (idempotently, from every replica), and
	// wait for them to be here.
	bctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		bootstrap(bctx, rt, st, member, cfg, entries)
	}()
	rt.OnClose(func() { cancel(); <-done }) // before the member and the store close
	if err := awaitBootstrapped(ctx, rt, st, entries); err != nil {
		return err
	}

	core := newService(st, cfg)
	var svc Service = core
	svc = InstrumentingMiddleware(rt.Metrics.Registry)(svc)
	svc = AuditingMiddleware(rt.Audit)(svc)
	eps := MakeEndpoints(svc, rt.Instrument)
	// The token endpoint's limits are the federation's: requests spread over
	// the replicas, and each replica counts only the ones it sees, so each
	// enforces its share (a guesser gets no more tries for the replicas).
	th := newThrottle()
	replicas := max(len(cfg.Raft.Peers), 1)
	share := func(n int) int { return (n + replicas - 1) / replicas }
	th.FreeAddr, th.FreeID, th.Max = share(cfg.FreeFailuresAddr), share(cfg.FreeFailuresID), cfg.MaxDelay
	th.Rate, th.Burst = cfg.AddrRate/float64(replicas), float64(share(cfg.AddrBurst))
	for name, v := range map[string]float64{"token_free_failures_addr": float64(th.FreeAddr), "token_free_failures_client": float64(th.FreeID),
		"token_max_delay_seconds": th.Max.Seconds(), "token_rate_per_addr": th.Rate, "token_burst_per_addr": th.Burst} {
		rt.Guard.Limit.WithLabelValues(name).Set(v)
	}
	rt.Go("key rotation", func(ctx context.Context) error {
		return member.WhileLeader(ctx, func(ctx context.Context) error { return rotateKeys(ctx, rt, st, cfg) })
	})
	return rt.Run(ctx, svcrun.Servers{
		RegisterGRPC: func(s *grpc.Server) {
			fedsyncv1.RegisterAuthnServiceServer(s, NewGRPCServer(eps))
			fedsyncv1.RegisterRaftServiceServer(s, raftgroup.Server{Node: member.Node})
		},
		HTTP: NewHTTPHandler(eps, core.verifier, HTTPOptions{Throttle: th, ProxyHops: cfg.ProxyHops}),
	})
}

// bootstrap puts a signing key (and a next one) and the clients file's
// clients into the group, retrying until the group takes them. The clients
// are hashed (bcrypt, costly) by the leader; a follower only waits for them
// to arrive, and imports them itself after importWait (a leader whose file
// lists fewer).
func bootstrap(ctx context.Context, rt *svcrun.Runtime, st *store, member *raftgroup.Replica, cfg *Config, entries []ClientEntry) {
	const importWait = 10 * time.Second
	start := time.Now()
	for attempt := 0; ; attempt++ {
		err := st.ensureKeys(ctx, cfg.Service.DataDir)
		added := 0
		if err == nil {
			switch {
			case member.IsLeader() || time.Since(start) > importWait:
				added, err = st.importClients(ctx, entries)
			case !st.hasAll(entries):
				err = errors.New("waiting for the leader to import the clients file")
			}
		}
		if err == nil {
			level.Info(rt.Logger).Log("msg", "registry bootstrapped", "file", cfg.ClientsFile, "clients_added", added, "listed", len(entries))
			return
		}
		if attempt%20 == 0 {
			level.Info(rt.Logger).Log("msg", "registry bootstrap waits for the authn group", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// awaitBootstrapped waits until this replica holds a signing key and every
// bootstrap client (put there by itself or by another replica).
func awaitBootstrapped(ctx context.Context, rt *svcrun.Runtime, st *store, entries []ClientEntry) error {
	start := time.Now()
	for next := 10 * time.Second; ; {
		if st.hasCurrentKey() && st.hasAll(entries) {
			return nil
		}
		if time.Since(start) > next {
			level.Warn(rt.Logger).Log("msg", "waiting for the authn group to hold a signing key and the bootstrap clients (is a majority of the replicas up?)", "waited", time.Since(start).Round(time.Second))
			next += 10 * time.Second
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// rotateKeys, on the leader, rotates the signing key every cfg.KeyRotation
// (measured from the current key's creation) and drops retired keys whose
// tokens have all expired and revocations of expired tokens.
func rotateKeys(ctx context.Context, rt *svcrun.Runtime, st *store, cfg *Config) error {
	return periodic.Run(ctx, time.Minute, func(ctx context.Context) {
		keys, err := st.keys()
		if err != nil {
			return
		}
		for _, k := range keys {
			if k.State != KeyCurrent || time.Since(k.CreatedAt) <= cfg.KeyRotation {
				continue
			}
			if err := st.rotateKeys(ctx); err != nil {
				level.Error(rt.Logger).Log("msg", "rotate signing key", "err", err)
			} else {
				level.Info(rt.Logger).Log("msg", "signing key rotated")
			}
		}
		if err := st.prune(ctx, cfg.TokenTTL); err != nil {
			level.Warn(rt.Logger).Log("msg", "prune expired keys and revocations", "err", err)
		}
	})
}
