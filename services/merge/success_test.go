package merge

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestSyncSuccessRate(t *testing.T) {
	s := newSuccessRate(prometheus.NewRegistry())
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	for i := 0; i < 90; i++ {
		s.record("na", true)
	}
	for i := 0; i < 10; i++ {
		s.record("na", false)
	}
	s.record("eu", true)
	if got := testutil.ToFloat64(s.gauge.WithLabelValues("na", "incremental")); got != 90 {
		t.Fatalf("na: %v, want 90", got)
	}
	if got := testutil.ToFloat64(s.gauge.WithLabelValues("eu", "incremental")); got != 100 {
		t.Fatalf("eu: %v, want 100", got)
	}
	// A minute later the failures have left the window.
	now = now.Add(61 * time.Second)
	s.refreshAll()
	if got := testutil.ToFloat64(s.gauge.WithLabelValues("na", "incremental")); got != 100 {
		t.Fatalf("na after the window: %v, want 100", got)
	}
}
