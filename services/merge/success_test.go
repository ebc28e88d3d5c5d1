package merge

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestSyncSuccessRate(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := newSuccessRate(reg)
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	for i := 0; i < 90; i++ {
		s.record("na", true)
	}
	for i := 0; i < 10; i++ {
		s.record("na", false)
	}
	s.record("eu", true)
	if got := s.rate("na"); got != 90 {
		t.Fatalf("na: %v, want 90", got)
	}
	if got := s.rate("eu"); got != 100 {
		t.Fatalf("eu: %v, want 100", got)
	}
	// A minute later the failures have left the window.
	now = now.Add(61 * time.Second)
	if got := s.rate("na"); got != 100 {
		t.Fatalf("na after the window: %v, want 100", got)
	}
	if n, err := testutil.GatherAndCount(reg, "sync_success_rate"); err != nil || n != 2 {
		t.Fatalf("exported series: %d, %v", n, err)
	}
}
