package endpoints

import (
	"context"
	"errors"
	"testing"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/telemetry"
)

func TestBusinessErrorsTravelInResponse(t *testing.T) {
	ep := Make(func(_ context.Context, id string) (string, error) {
		switch id {
		case "missing":
			return "", apierr.New(apierr.NotFound, "no %s", id)
		case "broken":
			return "", errors.New("disk failed")
		}
		return "v-" + id, nil
	})
	resp, err := ep(context.Background(), "missing")
	if err != nil {
		t.Fatalf("a business error was returned as an endpoint error: %v", err)
	}
	if resp.(Response[string]).Failed() == nil {
		t.Fatal("Failed() is nil for a business error")
	}
	if _, err := ep(context.Background(), "broken"); err == nil {
		t.Fatal("an infrastructure error must be returned as an error")
	}
	if v, err := Call[string](context.Background(), ep, "a"); err != nil || v != "v-a" {
		t.Fatalf("Call = %q, %v", v, err)
	}
	if _, err := Call[string](context.Background(), ep, "missing"); apierr.As(err).Code != apierr.NotFound {
		t.Fatalf("Call lost the error code: %v", err)
	}
	if _, err := Call[string](context.Background(), ep, "broken"); apierr.As(err).Code != apierr.Internal {
		t.Fatalf("want internal, got %v", err)
	}
}

func TestInstrumentCountsOutcomes(t *testing.T) {
	m := telemetry.NewMetrics("t")
	ep := Instrument("Get", log.NewNopLogger(), m)(Make(func(_ context.Context, id string) (string, error) {
		if id == "missing" {
			return "", apierr.New(apierr.NotFound, "no")
		}
		return id, nil
	}))
	ep(context.Background(), "a")
	ep(context.Background(), "missing")
	if got := testutil.ToFloat64(m.Requests.WithLabelValues("Get", "ok")); got != 1 {
		t.Errorf("ok count %v", got)
	}
	if got := testutil.ToFloat64(m.Requests.WithLabelValues("Get", "not_found")); got != 1 {
		t.Errorf("not_found count %v", got)
	}
}
