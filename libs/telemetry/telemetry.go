// Package telemetry sets up OpenTelemetry tracing and the Prometheus metrics every
// fedsync service exposes, including the seed's metrics (section 5.1).
package telemetry

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// Config says where traces go.
type Config struct {
	OTLPEndpoint string
	SampleRatio  float64
}

// RegisterFlags registers the telemetry flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.OTLPEndpoint, "otel.endpoint", "", "OTLP/gRPC collector address (host:port); empty keeps spans in-process only")
	fs.Float64Var(&c.SampleRatio, "otel.sample-ratio", 1, "fraction of new traces to sample, 0..1")
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		return fmt.Errorf("otel.sample-ratio: must be in [0,1], got %v", c.SampleRatio)
	}
	return nil
}

// SetupTracing installs the global tracer provider and the W3C trace-context
// propagator. Spans are exported over OTLP only when an endpoint is configured;
// trace context is propagated either way. The returned function flushes and stops.
func SetupTracing(ctx context.Context, c Config, service, instance string) (func(context.Context) error, error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	res := resource.NewSchemaless(
		attribute.String("service.name", service),
		attribute.String("service.instance.id", instance),
	)
	// With nowhere to send spans, none is recorded: trace context still
	// propagates (the audit log and logs carry trace ids), but no span costs
	// attributes, timestamps and allocations per delta.
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.NeverSample()),
	}
	if c.OTLPEndpoint != "" {
		opts[1] = sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio)))
		exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(c.OTLPEndpoint), otlptracegrpc.WithInsecure())
		if err != nil {
			return nil, fmt.Errorf("create otlp exporter for %s: %w", c.OTLPEndpoint, err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	return func(ctx context.Context) error {
		return errors.Join(tp.ForceFlush(ctx), tp.Shutdown(ctx))
	}, nil
}

// The seed's span attributes (section 5.2), on every span that handles one
// delta: the writing agent, the document's data type and the kind of sync.
const (
	AttrAISystemID = "ai_system_id"
	AttrDataType   = "data_type"
	AttrSyncType   = "sync_type"
	// SyncIncremental is the sync_type of every delta: a patch of fields, as in
	// the seed's trace example.
	SyncIncremental = "incremental"
)

// DeltaAttributes are the seed's attributes of a span about one delta.
func DeltaAttributes(aiSystemID, dataType string) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String(AttrAISystemID, aiSystemID),
		attribute.String(AttrDataType, dataType),
		attribute.String(AttrSyncType, SyncIncremental),
	}
}

// Tracer is fedsync's tracer.
func Tracer() trace.Tracer { return otel.Tracer("github.com/fedsync/fedsync") }

// HTTPHandler traces every request h serves, continuing the caller's trace
// (W3C traceparent). The span starts named by the method; Routes renames it
// to the route pattern once the service's mux has matched one, so a document
// id never becomes an operation name.
func HTTPHandler(service string, h http.Handler) http.Handler {
	otel := otelhttp.NewHandler(h, service, otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
		if rt, ok := r.Context().Value(routeKey{}).(*route); ok && rt.pattern != "" {
			return rt.pattern
		}
		return r.Method
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otel.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeKey{}, &route{})))
	})
}

// route carries the pattern that Routes matched out to HTTPHandler's span
// name (otelhttp names the span after the handler returns, from its own copy
// of the request).
type route struct{ pattern string }

type routeKey struct{}

// Routes serves mux and names the request's span by the pattern that matched
// ("POST /api/v1/sync/state"). Every service wraps its route mux in it; with
// tracing off the span is not recording and this costs one check.
func Routes(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r)
		if rt, ok := r.Context().Value(routeKey{}).(*route); ok {
			rt.pattern = r.Pattern
		}
		if span := trace.SpanFromContext(r.Context()); span.IsRecording() && r.Pattern != "" {
			span.SetName(r.Pattern)
		}
	})
}

// GRPCServerOptions traces every RPC a server handles.
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler())}
}

// GRPCDialOptions traces every RPC a client makes.
func GRPCDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler())}
}
