package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestRoutesNamesSpanByPattern: the span of a request is named by the route
// that served it, not by the outer mux's catch-all.
func TestRoutesNamesSpanByPattern(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	old := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	defer otel.SetTracerProvider(old)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/sync/state", func(w http.ResponseWriter, r *http.Request) {})
	inner := Routes(mux)
	wrapped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), authKey{}, 1)))
	})
	// As svcrun serves it: under an outer mux whose pattern is "/".
	outer := http.NewServeMux()
	outer.Handle("/", HTTPHandler("validation", wrapped))
	h := outer
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/api/v1/sync/state", nil))
	spans := rec.Ended()
	if len(spans) != 1 || spans[0].Name() != "POST /api/v1/sync/state" {
		for _, s := range spans {
			t.Logf("span %q", s.Name())
		}
		t.Fatalf("%d spans", len(spans))
	}
}

// authKey stands for a middleware's context key.
type authKey struct{}
