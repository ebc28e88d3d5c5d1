// Package endpoints is the go-kit endpoint layer every service shares: one way to
// turn a Service method into an endpoint, one instrumenting middleware for all of
// them, and one generic call for transports. Business errors (answers such as
// not_found or version_conflict) travel inside the response, so they neither trip
// circuit breakers nor count as failures; infrastructure errors are returned.
package endpoints

import (
	"context"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/telemetry"
)

// Response is the response of every endpoint: the value, or the business error.
type Response[T any] struct {
	Value T
	Err   error
}

// Failed implements go-kit's endpoint.Failer.
func (r Response[T]) Failed() error { return r.Err }

// Make turns a service method into an endpoint.
func Make[Req, Resp any](fn func(ctx context.Context, req Req) (Resp, error)) endpoint.Endpoint {
	return func(ctx context.Context, req any) (any, error) {
		v, err := fn(ctx, req.(Req))
		if apierr.IsInfrastructure(err) {
			return nil, err
		}
		return Response[Resp]{Value: v, Err: err}, nil
	}
}

// Call runs an endpoint made by Make and returns its value or error, whichever
// kind. Errors that are not API errors become internal errors so that callers
// never see a cause they cannot act on.
func Call[Resp any](ctx context.Context, ep endpoint.Endpoint, req any) (Resp, error) {
	var zero Resp
	resp, err := ep(ctx, req)
	if err != nil {
		return zero, apierr.As(err)
	}
	r := resp.(Response[Resp])
	if r.Err != nil {
		return zero, apierr.As(r.Err)
	}
	return r.Value, nil
}

// Instrument returns the middleware that logs and measures every call of an
// endpoint named method.
func Instrument(method string, logger log.Logger, m *telemetry.Metrics) endpoint.Middleware {
	return func(next endpoint.Endpoint) endpoint.Endpoint {
		return func(ctx context.Context, req any) (resp any, err error) {
			begin := time.Now()
			defer func() {
				outcome := "ok"
				failure := err
				if f, ok := resp.(endpoint.Failer); ok && f.Failed() != nil {
					failure = f.Failed()
				}
				if failure != nil {
					outcome = string(apierr.As(failure).Code)
				}
				m.Observe(method, begin, outcome)
				switch {
				case err != nil:
					level.Warn(logger).Log("method", method, "took", time.Since(begin), "err", err)
				case failure != nil:
					level.Debug(logger).Log("method", method, "took", time.Since(begin), "outcome", outcome, "err", failure)
				}
			}()
			return next(ctx, req)
		}
	}
}
