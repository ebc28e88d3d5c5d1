package statestore

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedsync/fedsync/libs/audit"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Middleware decorates a Service.
type Middleware func(Service) Service

// instrumenting counts commits and duplicate applies.
type instrumenting struct {
	Service
	commits *prometheus.CounterVec
	audit   *audit.Log
}

// InstrumentingMiddleware counts commits by data type and duplicates suppressed
// by message id, and records every committed change in the audit log.
func InstrumentingMiddleware(reg prometheus.Registerer, log *audit.Log) Middleware {
	commits := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedsync_statestore_commits_total", Help: "Apply calls by data type and result (committed or duplicate).",
	}, []string{"data_type", "result"})
	reg.MustRegister(commits)
	return func(next Service) Service { return &instrumenting{Service: next, commits: commits, audit: log} }
}

func (m *instrumenting) Apply(ctx context.Context, req *fedsyncv1.ApplyRequest) (*fedsyncv1.ApplyResponse, error) {
	resp, err := m.Service.Apply(ctx, req)
	if err == nil {
		result := "committed"
		if resp.GetDuplicate() {
			result = "duplicate"
		}
		m.commits.WithLabelValues(req.GetDataType(), result).Inc()
		if !resp.GetDuplicate() {
			m.audit.Record(ctx, audit.Record{Actor: req.GetWriter(), Action: "state.commit", Data: fmt.Sprintf("%s@%d", req.GetId(), resp.GetVersion()), Result: "success", Detail: req.GetMessageId()})
		}
	}
	return resp, err
}
