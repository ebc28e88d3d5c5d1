package merge

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
	outcomes  *prometheus.CounterVec
	conflicts *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	success   *successRate
}

// ConflictRate registers the seed's conflict_rate counter.
func ConflictRate(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conflict_rate", Help: "Conflicts found by merge, by conflict type and resolution method (seed 5.1).",
	}, []string{"conflict_type", "resolution_method"})
	reg.MustRegister(c)
	return c
}

// InstrumentingMiddleware counts merge outcomes and conflicts and observes the
// seed's sync_latency from admission to commit (target_system "statestore").
func InstrumentingMiddleware(reg prometheus.Registerer, latency *prometheus.HistogramVec, conflicts *prometheus.CounterVec) Middleware {
	outcomes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedsync_merge_deltas_total", Help: "Deltas merged, by consistency and outcome.",
	}, []string{"consistency", "outcome"})
	reg.MustRegister(outcomes)
	success := newSuccessRate(reg)
	return func(next Service) Service {
		return &instrumenting{Service: next, outcomes: outcomes, conflicts: conflicts, latency: latency, success: success}
	}
}

func (m *instrumenting) Merge(ctx context.Context, d *fedsyncv1.Delta) (*MergeResult, error) {
	res, err := m.Service.Merge(ctx, d)
	if err == nil {
		m.outcomes.WithLabelValues(d.GetConsistency().String(), res.Outcome).Inc()
		m.success.record(d.GetRegion(), res.Outcome != Rejected)
		m.count(res.Conflicts)
		if res.Outcome == Committed {
			m.observe(d)
		}
	}
	return res, err
}

func (m *instrumenting) MergeBatch(ctx context.Context, req *MergeBatchRequest) (*MergeBatchResponse, error) {
	resp, err := m.Service.MergeBatch(ctx, req)
	if err == nil {
		for i, res := range resp.Results {
			d := req.Deltas[i]
			m.outcomes.WithLabelValues(d.GetConsistency().String(), res.Outcome).Inc()
			m.success.record(d.GetRegion(), res.Outcome != Rejected)
			m.count(res.Conflicts)
			if res.Outcome == Committed {
				m.observe(d)
			}
		}
	}
	return resp, err
}

func (m *instrumenting) count(cs []*fedsyncv1.Conflict) {
	for _, c := range cs {
		m.conflicts.WithLabelValues(c.GetType(), c.GetResolution()).Inc()
	}
}

func (m *instrumenting) CommitStrong(ctx context.Context, req *fedsyncv1.CommitStrongRequest) (*fedsyncv1.CommitStrongResponse, error) {
	resp, err := m.Service.CommitStrong(ctx, req)
	if err == nil {
		m.outcomes.WithLabelValues(fedsyncv1.Consistency_CONSISTENCY_STRONG.String(), Committed).Inc()
		m.success.record(req.GetDelta().GetRegion(), true)
		m.observe(req.GetDelta())
	}
	return resp, err
}

func (m *instrumenting) observe(d *fedsyncv1.Delta) {
	ms := float64(time.Now().UnixNano()-d.GetHlc()) / 1e6
	m.latency.WithLabelValues(d.GetRegion(), "statestore", d.GetDataType()).Observe(max(ms, 0))
}
