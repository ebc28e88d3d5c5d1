package authn

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Middleware decorates a Service.
type Middleware func(Service) Service

type instrumenting struct {
	Service
	issued *prometheus.CounterVec
}

// InstrumentingMiddleware counts tokens issued and refused.
func InstrumentingMiddleware(reg prometheus.Registerer) Middleware {
	issued := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedsync_authn_tokens_total", Help: "Token requests by result (issued or refused).",
	}, []string{"result"})
	reg.MustRegister(issued)
	return func(next Service) Service { return &instrumenting{Service: next, issued: issued} }
}

func (m *instrumenting) IssueToken(ctx context.Context, req *fedsyncv1.IssueTokenRequest) (*fedsyncv1.IssueTokenResponse, error) {
	resp, err := m.Service.IssueToken(ctx, req)
	result := "issued"
	if err != nil {
		result = "refused"
	}
	m.issued.WithLabelValues(result).Inc()
	return resp, err
}
