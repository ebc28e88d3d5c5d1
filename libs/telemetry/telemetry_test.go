package telemetry

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestMetricsExposeSeedNames(t *testing.T) {
	m := NewMetrics("test")
	m.NewSyncLatency().WithLabelValues("na", "eu", "note").Observe(12)
	m.QueueDepth.WithLabelValues("fedsync.deltas", "all").Set(3)
	m.Observe("PushState", time.Now(), "ok")
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"sync_latency_bucket", "message_queue_depth", "fedsync_requests_total", "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestSetupTracingWithoutExporter(t *testing.T) {
	stop, err := SetupTracing(context.Background(), Config{SampleRatio: 1}, "svc", "svc-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := (&Config{SampleRatio: 2}).Validate(); err == nil {
		t.Fatal("want an error for sample ratio 2")
	}
}
