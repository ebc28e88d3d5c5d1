// Package telemetry sets up OpenTelemetry tracing and the Prometheus metrics every
// fedsync service exposes, including the seed's metrics (section 5.1).
package telemetry

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
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
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio))),
	}
	if c.OTLPEndpoint != "" {
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

// GRPCServerOptions traces every RPC a server handles.
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler())}
}

// GRPCDialOptions traces every RPC a client makes.
func GRPCDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler())}
}
