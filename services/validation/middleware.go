package validation

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/audit"
	"github.com/fedsync/fedsync/libs/authtoken"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Middleware decorates a Service.
type Middleware func(Service) Service

type rateLimiting struct {
	Service
	hub         *rate.Limiter
	clientRate  rate.Limit
	clientBurst int
	mu          sync.Mutex
	clients     map[string]*rate.Limiter
}

// RateLimitingMiddleware enforces the seed's per-AI-system and per-hub request
// rates (section 4.3), answering 429 rate_limited with Retry-After.
func RateLimitingMiddleware(clientRate, clientBurst, hubRate, hubBurst float64) Middleware {
	return func(next Service) Service {
		return &rateLimiting{
			Service: next, hub: rate.NewLimiter(rate.Limit(hubRate), int(hubBurst)),
			clientRate: rate.Limit(clientRate), clientBurst: int(clientBurst), clients: map[string]*rate.Limiter{},
		}
	}
}

func (m *rateLimiting) allow(ctx context.Context) error {
	c, _ := authtoken.FromContext(ctx)
	if c != nil {
		m.mu.Lock()
		l, ok := m.clients[c.Subject]
		if !ok {
			l = rate.NewLimiter(m.clientRate, m.clientBurst)
			m.clients[c.Subject] = l
		}
		m.mu.Unlock()
		if !l.Allow() {
			return apierr.New(apierr.RateLimited, "Client %s is over its rate of %v requests per second.", c.Subject, float64(m.clientRate)).WithRetryAfter(time.Second)
		}
	}
	if !m.hub.Allow() {
		return apierr.New(apierr.RateLimited, "This regional hub is over its request rate.").WithRetryAfter(time.Second)
	}
	return nil
}

func (m *rateLimiting) PushState(ctx context.Context, req *fedsyncv1.PushStateRequest) (*fedsyncv1.PushStateResponse, error) {
	if err := m.allow(ctx); err != nil {
		return nil, err
	}
	return m.Service.PushState(ctx, req)
}

type instrumenting struct {
	Service
	admitted *prometheus.CounterVec
}

// InstrumentingMiddleware counts admitted deltas by consistency and status.
func InstrumentingMiddleware(reg prometheus.Registerer) Middleware {
	admitted := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedsync_validation_deltas_total", Help: "Deltas answered, by consistency and outcome (accepted, committed or an error code).",
	}, []string{"consistency", "outcome"})
	reg.MustRegister(admitted)
	return func(next Service) Service { return &instrumenting{Service: next, admitted: admitted} }
}

func (m *instrumenting) PushState(ctx context.Context, req *fedsyncv1.PushStateRequest) (*fedsyncv1.PushStateResponse, error) {
	resp, err := m.Service.PushState(ctx, req)
	outcome := resp.GetStatus()
	if err != nil {
		outcome = string(apierr.As(err).Code)
	}
	consistency := req.GetConsistency()
	if _, ok := consistencies[consistency]; !ok {
		if consistency == "" {
			consistency = "default"
		} else {
			consistency = "invalid"
		}
	}
	m.admitted.WithLabelValues(consistency, outcome).Inc()
	return resp, err
}

type auditing struct {
	Service
	log *audit.Log
}

// AuditingMiddleware records pause and resume in the audit log.
func AuditingMiddleware(l *audit.Log) Middleware {
	return func(next Service) Service { return &auditing{Service: next, log: l} }
}

func (m *auditing) SetPaused(ctx context.Context, req SetPausedRequest) (*PauseResult, error) {
	st, err := m.Service.SetPaused(ctx, req)
	action, result := "admin.control.resume", "success"
	if req.Paused {
		action = "admin.control.pause"
	}
	if err != nil {
		result = "failure:" + string(apierr.As(err).Code)
	}
	m.log.Record(ctx, audit.Record{Actor: req.By, Action: action, Data: "federation writes", Result: result, Detail: req.Reason})
	return st, err
}
