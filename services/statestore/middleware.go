package statestore

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Middleware decorates a Service.
type Middleware func(Service) Service

// instrumenting counts commits and duplicate applies.
type instrumenting struct {
	Service
	commits *prometheus.CounterVec
}

// InstrumentingMiddleware counts commits by data type and duplicates suppressed
// by message id.
func InstrumentingMiddleware(reg prometheus.Registerer) Middleware {
	commits := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedsync_statestore_commits_total", Help: "Apply calls by data type and result (committed or duplicate).",
	}, []string{"data_type", "result"})
	reg.MustRegister(commits)
	return func(next Service) Service { return &instrumenting{Service: next, commits: commits} }
}

func (m *instrumenting) Apply(ctx context.Context, req *fedsyncv1.ApplyRequest) (*fedsyncv1.ApplyResponse, error) {
	resp, err := m.Service.Apply(ctx, req)
	if err == nil {
		result := "committed"
		if resp.GetDuplicate() {
			result = "duplicate"
		}
		m.commits.WithLabelValues(req.GetDataType(), result).Inc()
	}
	return resp, err
}
