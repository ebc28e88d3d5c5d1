package authn

import (
	"context"

	"google.golang.org/grpc"

	"github.com/fedsync/fedsync/libs/svcrun"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Run serves authn until ctx ends.
func Run(ctx context.Context, cfg *Config) error {
	rt, err := svcrun.New(ctx, &cfg.Service)
	if err != nil {
		return err
	}
	clients, err := loadRegistry(cfg.ClientsFile)
	if err != nil {
		return err
	}
	kid, key, err := loadOrCreateKey(cfg.Service.DataDir)
	if err != nil {
		return err
	}
	var svc Service = newService(clients, kid, key, cfg)
	svc = InstrumentingMiddleware(rt.Metrics.Registry)(svc)
	eps := MakeEndpoints(svc, rt.Instrument)
	return rt.Run(ctx, svcrun.Servers{
		RegisterGRPC: func(s *grpc.Server) { fedsyncv1.RegisterAuthnServiceServer(s, NewGRPCServer(eps)) },
		HTTP:         NewHTTPHandler(eps),
	})
}
