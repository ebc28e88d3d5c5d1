package healthmonitor

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// hubState is the prober's view of each region's hub after its last round.
type hubState struct {
	mu        sync.Mutex
	up, total map[string]int
}

func (h *hubState) set(up, total map[string]int) {
	h.mu.Lock()
	h.up, h.total = up, total
	h.mu.Unlock()
}

// hubDownRule is regional_hub_down: no instance of a region's hub answers
// its health checks (the hub's heartbeat) for `for`.
func hubDownRule(h *hubState, forDur time.Duration) Rule {
	return Rule{Name: "regional_hub_down", Severity: "critical", For: forDur, Eval: func(time.Time) []Condition {
		h.mu.Lock()
		defer h.mu.Unlock()
		var out []Condition
		for r, n := range h.total {
			if n > 0 && h.up[r] == 0 {
				out = append(out, Condition{Labels: map[string]string{"region": r},
					Summary: fmt.Sprintf("regional hub %s: none of its %d instances has answered its health checks for %s", r, n, forDur)})
			}
		}
		return out
	}}
}

// scraper reads the seed's metrics from services' /metrics endpoints (merge
// exports sync_success_rate and sync_latency) and keeps sync_latency's
// buckets for the latency window.
type scraper struct {
	urls   []string
	client *http.Client
	window time.Duration

	mu      sync.Mutex
	success map[rateKey]float64 // from the last scrape
	history []latencySample     // oldest first, within the window
	// consistency is each region's hub's last verification (the
	// broadcasters' fedsync_consistency_* series).
	consistency map[string]ConsistencyView
}

// ConsistencyView is what a region's hub reported of its last verification
// of its view of the committed state against statestore.
type ConsistencyView struct {
	Divergent float64 `json:"divergent_documents"`
	Repaired  float64 `json:"repaired_documents_total"`
	Documents float64 `json:"view_documents"`
	LastCheck string  `json:"last_check,omitempty"`
	Checks    float64 `json:"checks_total"`
}

// rateKey names one sync_success_rate series.
type rateKey struct{ hub, syncType string }

type latencySample struct {
	at      time.Time
	buckets map[string]map[float64]float64 // target_system -> le -> cumulative count
	// committed and conflicts are merge's counters, lag its consumer lag.
	committed, conflicts, lag float64
}

func newScraper(urls []string, window time.Duration) *scraper {
	return &scraper{urls: urls, client: &http.Client{Timeout: 5 * time.Second}, window: window}
}

// scrape reads every endpoint once; unreachable ones are skipped.
func (s *scraper) scrape(ctx context.Context, now time.Time) {
	success := map[rateKey]float64{}
	consistency := map[string]ConsistencyView{}
	buckets := map[string]map[float64]float64{}
	var committed, conflicts, lag float64
	for _, u := range s.urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			continue
		}
		resp, err := s.client.Do(req)
		if err != nil {
			continue
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		if err != nil {
			continue
		}
		if mf := mfs["sync_success_rate"]; mf != nil {
			for _, m := range mf.GetMetric() {
				success[rateKey{label(m, "regional_hub"), label(m, "sync_type")}] = m.GetGauge().GetValue()
			}
		}
		scrapeConsistency(mfs, consistency)
		if mf := mfs["fedsync_merge_deltas_total"]; mf != nil {
			for _, m := range mf.GetMetric() {
				if label(m, "outcome") == "committed" {
					committed += m.GetCounter().GetValue()
				}
			}
		}
		if mf := mfs["conflict_rate"]; mf != nil {
			for _, m := range mf.GetMetric() {
				conflicts += m.GetCounter().GetValue()
			}
		}
		if mf := mfs["message_queue_depth"]; mf != nil {
			for _, m := range mf.GetMetric() {
				if label(m, "queue_name") == "fedsync.deltas" {
					lag += m.GetGauge().GetValue()
				}
			}
		}
		if mf := mfs["sync_latency"]; mf != nil {
			for _, m := range mf.GetMetric() {
				t := label(m, "target_system")
				if buckets[t] == nil {
					buckets[t] = map[float64]float64{}
				}
				for _, b := range m.GetHistogram().GetBucket() {
					if !math.IsInf(b.GetUpperBound(), 1) { // +Inf is the sample count, added below
						buckets[t][b.GetUpperBound()] += float64(b.GetCumulativeCount())
					}
				}
				buckets[t][math.Inf(1)] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	s.mu.Lock()
	s.success = success
	s.consistency = consistency
	s.history = append(s.history, latencySample{at: now, buckets: buckets, committed: committed, conflicts: conflicts, lag: lag})
	for len(s.history) > 1 && now.Sub(s.history[1].at) >= s.window {
		s.history = s.history[1:]
	}
	s.mu.Unlock()
}

// scrapeConsistency adds the consistency series of one endpoint, by region.
func scrapeConsistency(mfs map[string]*dto.MetricFamily, out map[string]ConsistencyView) {
	each := func(name string, fn func(v *ConsistencyView, m *dto.Metric)) {
		if mf := mfs[name]; mf != nil {
			for _, m := range mf.GetMetric() {
				r := label(m, "region")
				v := out[r]
				fn(&v, m)
				out[r] = v
			}
		}
	}
	each("fedsync_consistency_divergent_documents", func(v *ConsistencyView, m *dto.Metric) { v.Divergent += m.GetGauge().GetValue() })
	each("fedsync_consistency_repaired_documents_total", func(v *ConsistencyView, m *dto.Metric) { v.Repaired += m.GetCounter().GetValue() })
	each("fedsync_consistency_view_documents", func(v *ConsistencyView, m *dto.Metric) { v.Documents = max(v.Documents, m.GetGauge().GetValue()) })
	each("fedsync_consistency_checks_total", func(v *ConsistencyView, m *dto.Metric) { v.Checks += m.GetCounter().GetValue() })
	each("fedsync_consistency_last_check_timestamp_seconds", func(v *ConsistencyView, m *dto.Metric) {
		if ts := m.GetGauge().GetValue(); ts > 0 {
			t := time.Unix(0, int64(ts*1e9)).UTC().Format(time.RFC3339)
			if t > v.LastCheck {
				v.LastCheck = t
			}
		}
	})
}

// consistencyViews returns each region's last verification.
func (s *scraper) consistencyViews() map[string]ConsistencyView {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]ConsistencyView, len(s.consistency))
	for r, v := range s.consistency {
		out[r] = v
	}
	return out
}

// consistencyRule is consistency_divergence: a region's hub found, at its
// last verification, documents on which its view and statestore differed
// (seed 8.2). They were repaired; the alert resolves when a later
// verification finds none.
func consistencyRule(s *scraper) Rule {
	return Rule{Name: "consistency_divergence", Severity: "warning", Eval: func(time.Time) []Condition {
		var out []Condition
		for r, v := range s.consistencyViews() {
			if v.Divergent > 0 {
				out = append(out, Condition{Labels: map[string]string{"region": r},
					Summary: fmt.Sprintf("the last consistency verification of region %s's hub found %.0f documents diverged from statestore; they were repaired (%.0f repaired in all)", r, v.Divergent, v.Repaired)})
			}
		}
		return out
	}}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// rates returns committed deltas/s and conflicts/s between the last two
// scrapes, and merge's consumer lag at the last.
func (s *scraper) rates() (committed, conflicts, lag float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.history)
	if n == 0 {
		return 0, 0, 0
	}
	last := s.history[n-1]
	if n < 2 {
		return 0, 0, last.lag
	}
	prev := s.history[n-2]
	secs := last.at.Sub(prev.at).Seconds()
	if secs <= 0 {
		return 0, 0, last.lag
	}
	return max(last.committed-prev.committed, 0) / secs, max(last.conflicts-prev.conflicts, 0) / secs, last.lag
}

// p99 returns the 99th percentile (ms) of each target_system's sync_latency
// over the window, as histogram_quantile does over the buckets' increase.
func (s *scraper) p99() map[string]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]float64{}
	if len(s.history) < 2 {
		return out
	}
	first, last := s.history[0].buckets, s.history[len(s.history)-1].buckets
	for t, lb := range last {
		type bucket struct{ le, n float64 }
		var bs []bucket
		for le, n := range lb {
			bs = append(bs, bucket{le, n - first[t][le]})
		}
		sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
		total := bs[len(bs)-1].n
		if total <= 0 {
			continue
		}
		rank := 0.99 * total
		prevLE, prevN := 0.0, 0.0
		for _, b := range bs {
			if b.n >= rank {
				if math.IsInf(b.le, 1) {
					out[t] = prevLE // the highest finite bucket, as Prometheus does
				} else {
					out[t] = prevLE + (b.le-prevLE)*(rank-prevN)/(b.n-prevN)
				}
				break
			}
			prevLE, prevN = b.le, b.n
		}
	}
	return out
}

// successRule is sync_failure_spike: sync_success_rate under the threshold.
func successRule(s *scraper, threshold float64, forDur time.Duration) Rule {
	return Rule{Name: "sync_failure_spike", Severity: "critical", For: forDur, Eval: func(time.Time) []Condition {
		s.mu.Lock()
		defer s.mu.Unlock()
		var out []Condition
		for k, v := range s.success {
			if v < threshold {
				out = append(out, Condition{Labels: map[string]string{"regional_hub": k.hub, "sync_type": k.syncType},
					Summary: fmt.Sprintf("sync success rate of hub %s (%s) is %.1f %%", k.hub, k.syncType, v)})
			}
		}
		return out
	}}
}

// latencyRule is high_sync_latency: p99 of sync_latency over the window
// above the threshold.
func latencyRule(s *scraper, threshold time.Duration, forDur time.Duration) Rule {
	return Rule{Name: "high_sync_latency", Severity: "warning", For: forDur, Eval: func(time.Time) []Condition {
		var out []Condition
		for t, ms := range s.p99() {
			if ms > float64(threshold.Milliseconds()) {
				out = append(out, Condition{Labels: map[string]string{"target_system": t},
					Summary: fmt.Sprintf("p99 sync latency to %s is %.0f ms (over %s)", t, ms, threshold)})
			}
		}
		return out
	}}
}
