package authn

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/audit"
	"github.com/fedsync/fedsync/libs/authtoken"
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

type auditing struct {
	Service
	log *audit.Log
}

// AuditingMiddleware records every token issue and refusal, revocation and
// administration act in the audit log (seed 6.3).
func AuditingMiddleware(l *audit.Log) Middleware {
	return func(next Service) Service { return &auditing{Service: next, log: l} }
}

func result(err error) string {
	if err == nil {
		return "success"
	}
	e := apierr.As(err)
	if why, ok := e.Details["reason"].(string); ok {
		return "failure:" + why
	}
	return "failure:" + string(e.Code)
}

func actor(ctx context.Context) string {
	if c, ok := authtoken.FromContext(ctx); ok {
		return c.Subject
	}
	return "anonymous"
}

func (m *auditing) IssueToken(ctx context.Context, req *fedsyncv1.IssueTokenRequest) (*fedsyncv1.IssueTokenResponse, error) {
	resp, err := m.Service.IssueToken(ctx, req)
	m.log.Record(ctx, audit.Record{Actor: req.GetClientId(), Action: "token.issue", Data: req.GetClientId(), Result: result(err)})
	return resp, err
}

func (m *auditing) Revoke(ctx context.Context, req RevokeRequest) (struct{}, error) {
	resp, err := m.Service.Revoke(ctx, req)
	m.log.Record(ctx, audit.Record{Actor: req.ClientID, Action: "token.revoke", Data: req.ClientID, Result: result(err)})
	return resp, err
}

func (m *auditing) CreateClient(ctx context.Context, req CreateClientRequest) (ClientWithSecret, error) {
	resp, err := m.Service.CreateClient(ctx, req)
	m.log.Record(ctx, audit.Record{Actor: actor(ctx), Action: "admin.client.create", Data: req.ClientID, Result: result(err), Detail: req.Role + " " + req.Level})
	return resp, err
}

func (m *auditing) SetClientDisabled(ctx context.Context, req SetDisabledRequest) (*Client, error) {
	resp, err := m.Service.SetClientDisabled(ctx, req)
	action := "admin.client.enable"
	if req.Disabled {
		action = "admin.client.disable"
	}
	m.log.Record(ctx, audit.Record{Actor: actor(ctx), Action: action, Data: req.ClientID, Result: result(err)})
	return resp, err
}

func (m *auditing) RotateClientSecret(ctx context.Context, id string) (ClientWithSecret, error) {
	resp, err := m.Service.RotateClientSecret(ctx, id)
	m.log.Record(ctx, audit.Record{Actor: actor(ctx), Action: "admin.client.rotate_secret", Data: id, Result: result(err)})
	return resp, err
}

func (m *auditing) RotateKeys(ctx context.Context, x struct{}) ([]KeyInfo, error) {
	resp, err := m.Service.RotateKeys(ctx, x)
	m.log.Record(ctx, audit.Record{Actor: actor(ctx), Action: "admin.keys.rotate", Data: "signing keys", Result: result(err)})
	return resp, err
}
