package healthmonitor

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Middleware decorates a Service.
type Middleware func(Service) Service

type instrumenting struct {
	Service
	services *prometheus.GaugeVec
}

// InstrumentingMiddleware exports the healthy instances of each service seen by
// the last health request.
func InstrumentingMiddleware(reg prometheus.Registerer) Middleware {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fedsync_healthmonitor_healthy_instances", Help: "Healthy instances per service at the last health request.",
	}, []string{"service"})
	reg.MustRegister(g)
	return func(next Service) Service { return &instrumenting{Service: next, services: g} }
}

func (m *instrumenting) GetHealth(ctx context.Context, req *fedsyncv1.GetHealthRequest) (*fedsyncv1.GetHealthResponse, error) {
	resp, err := m.Service.GetHealth(ctx, req)
	for name, s := range resp.GetServices() {
		m.services.WithLabelValues(name).Set(float64(s.GetHealthyInstances()))
	}
	return resp, err
}
