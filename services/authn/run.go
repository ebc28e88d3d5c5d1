package authn

import (
	"context"
	"time"

	"github.com/go-kit/log/level"
	"google.golang.org/grpc"

	"github.com/fedsync/fedsync/libs/periodic"
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
	if cfg.ClientsFile != "" {
		entries, err := readClientsFile(cfg.ClientsFile)
		if err != nil {
			return err
		}
		added, err := st.importClients(entries)
		if err != nil {
			return err
		}
		level.Info(rt.Logger).Log("msg", "clients imported", "file", cfg.ClientsFile, "added", added, "listed", len(entries))
	}
	if err := st.ensureKeys(cfg.Service.DataDir); err != nil {
		return err
	}
	core := newService(st, cfg)
	var svc Service = core
	svc = InstrumentingMiddleware(rt.Metrics.Registry)(svc)
	svc = AuditingMiddleware(rt.Audit)(svc)
	eps := MakeEndpoints(svc, rt.Instrument)
	th := newThrottle()
	th.FreeAddr, th.FreeID, th.Max, th.Rate, th.Burst = cfg.FreeFailuresAddr, cfg.FreeFailuresID, cfg.MaxDelay, cfg.AddrRate, float64(cfg.AddrBurst)
	for name, v := range map[string]float64{"token_free_failures_addr": float64(th.FreeAddr), "token_free_failures_client": float64(th.FreeID),
		"token_max_delay_seconds": th.Max.Seconds(), "token_rate_per_addr": th.Rate, "token_burst_per_addr": th.Burst} {
		rt.Guard.Limit.WithLabelValues(name).Set(v)
	}
	rt.Go("key rotation", func(ctx context.Context) error { return rotateKeys(ctx, rt, st, cfg) })
	return rt.Run(ctx, svcrun.Servers{
		RegisterGRPC: func(s *grpc.Server) { fedsyncv1.RegisterAuthnServiceServer(s, NewGRPCServer(eps)) },
		HTTP:         NewHTTPHandler(eps, core.verifier, HTTPOptions{Throttle: th, ProxyHops: cfg.ProxyHops}),
	})
}

// rotateKeys rotates the signing key every cfg.KeyRotation (measured from the
// current key's creation) and drops retired keys whose tokens have all expired.
func rotateKeys(ctx context.Context, rt *svcrun.Runtime, st *store, cfg *Config) error {
	return periodic.Run(ctx, time.Minute, func(context.Context) {
		keys, err := st.keys()
		if err != nil {
			return
		}
		for _, k := range keys {
			if k.State != KeyCurrent || time.Since(k.CreatedAt) <= cfg.KeyRotation {
				continue
			}
			if err := st.rotateKeys(); err != nil {
				level.Error(rt.Logger).Log("msg", "rotate signing key", "err", err)
			} else {
				level.Info(rt.Logger).Log("msg", "signing key rotated")
			}
		}
		_ = st.dropExpiredKeys(cfg.TokenTTL)
	})
}
