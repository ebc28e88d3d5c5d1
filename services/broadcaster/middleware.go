package broadcaster

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Middleware decorates a Service.
type Middleware func(Service) Service

type instrumenting struct {
	Service
	latency *prometheus.HistogramVec
	region  string
}

// InstrumentingMiddleware observes the seed's sync_latency, from admission of a
// delta to the moment its committed change reaches this regional hub's fan-out.
func InstrumentingMiddleware(latency *prometheus.HistogramVec, region string) Middleware {
	return func(next Service) Service { return &instrumenting{Service: next, latency: latency, region: region} }
}

func (m *instrumenting) Publish(ctx context.Context, c *fedsyncv1.Change) error {
	err := m.Service.Publish(ctx, c)
	if err == nil {
		m.observe(time.Now().UnixNano(), c)
	}
	return err
}

func (m *instrumenting) PublishBatch(ctx context.Context, cs []*fedsyncv1.Change) error {
	err := m.Service.PublishBatch(ctx, cs)
	if err == nil {
		now := time.Now().UnixNano()
		for _, c := range cs {
			m.observe(now, c)
		}
	}
	return err
}

func (m *instrumenting) observe(now int64, c *fedsyncv1.Change) {
	if c.GetAdmittedAt() > 0 {
		ms := float64(now-c.GetAdmittedAt()) / 1e6
		m.latency.WithLabelValues(c.GetRegion(), m.region, c.GetState().GetDataType()).Observe(max(ms, 0))
	}
}
