package broadcaster

import (
	"context"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/telemetry"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Each committed change continues the trace of the delta that made it: the
// record of fedsync.committed carries the trace context of its commit
// (statestore's span). The fan-out of a change is a span of that trace, and so
// is the writing of every subscriber's frame. Nothing here runs when the
// batch is not traced (no exporter configured, or not sampled).

type changeTracesKey struct{}

// changeTraces maps each change of a batch to its record's span context.
type changeTraces map[*fedsyncv1.Change]trace.SpanContext

// withRecordTrace notes in traces (created on first use) the trace that m
// carries for c, when the batch is traced.
func withRecordTrace(ctx context.Context, traces changeTraces, c *fedsyncv1.Change, m kafkabus.Message) changeTraces {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return traces
	}
	sc := trace.SpanContextFromContext(kafkabus.RecordContext(ctx, m))
	if !sc.IsValid() {
		return traces
	}
	if traces == nil {
		traces = changeTraces{}
	}
	traces[c] = sc
	return traces
}

func contextWithChangeTraces(ctx context.Context, traces changeTraces) context.Context {
	if traces == nil {
		return ctx
	}
	return context.WithValue(ctx, changeTracesKey{}, traces)
}

// startFanOut starts the fan-out span of c, if c is traced.
func startFanOut(ctx context.Context, c *fedsyncv1.Change, subscribers int) trace.Span {
	traces, _ := ctx.Value(changeTracesKey{}).(changeTraces)
	sc, ok := traces[c]
	if !ok {
		return nil
	}
	st := c.GetState()
	_, span := telemetry.Tracer().Start(trace.ContextWithRemoteSpanContext(ctx, sc), "broadcaster fan-out",
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(telemetry.DeltaAttributes(st.GetUpdatedBy(), st.GetDataType())...),
		trace.WithAttributes(attribute.String("fedsync.id", st.GetId()), attribute.String("fedsync.message_id", c.GetMessageId()),
			attribute.Int64("fedsync.version", st.GetVersion()), attribute.String("fedsync.seq", strconv.FormatUint(c.GetSeq(), 10)),
			attribute.Int("fedsync.subscribers", subscribers)))
	return span
}

// traceFrame starts the span of one subscriber's frame of ev, over transport,
// and returns what ends it.
func traceFrame(ev Event, transport, subID string) func(error) {
	if ev.frame == nil || !ev.frame.sc.IsSampled() {
		return func(error) {}
	}
	st := ev.Change.GetState()
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), ev.frame.sc)
	_, span := telemetry.Tracer().Start(ctx, "broadcaster frame "+transport, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(telemetry.DeltaAttributes(st.GetUpdatedBy(), st.GetDataType())...),
		trace.WithAttributes(attribute.String("fedsync.subscription_id", subID), attribute.String("fedsync.transport", transport),
			attribute.Int64("fedsync.version", st.GetVersion())))
	return func(err error) {
		if err != nil {
			span.RecordError(err)
		}
		span.End()
	}
}
