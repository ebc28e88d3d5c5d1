package merge

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// successRate is the seed's sync_success_rate{regional_hub,sync_type}: the
// percentage of the deltas a regional hub admitted in the last minute that
// merge settled successfully (committed, superseded by a later write,
// a duplicate of one that did, or waiting for its causes) rather than
// rejected. Every fedsync write is a patch, so sync_type is "incremental", as
// in the seed's trace example. With nothing settled in the window the rate is
// 100.
type successRate struct {
	desc   *prometheus.Desc
	window time.Duration
	now    func() time.Time

	mu   sync.Mutex
	hubs map[string]*rateWindow
}

// rateWindow counts per second over the window.
type rateWindow struct {
	ok, failed []int64 // ring of per-second counts
	at         []int64 // the Unix second each slot counts
}

const rateSlots = 60

// newSuccessRate registers the gauge. It is a collector: the rate is computed
// from the window when /metrics is read, so nothing runs per delta but a
// count, and an idle hub's rate recovers without a timer.
func newSuccessRate(reg prometheus.Registerer) *successRate {
	s := &successRate{
		desc: prometheus.NewDesc("sync_success_rate",
			"Percentage of the deltas admitted by a regional hub in the last minute that merge settled without rejecting them (seed 5.1).",
			[]string{"regional_hub", "sync_type"}, nil),
		window: time.Minute, now: time.Now, hubs: map[string]*rateWindow{},
	}
	reg.MustRegister(s)
	return s
}

// record counts one settled delta of hub.
func (s *successRate) record(hub string, ok bool) {
	if hub == "" {
		hub = "unknown"
	}
	sec := s.now().Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.hubs[hub]
	if w == nil {
		w = &rateWindow{ok: make([]int64, rateSlots), failed: make([]int64, rateSlots), at: make([]int64, rateSlots)}
		s.hubs[hub] = w
	}
	i := sec % rateSlots
	if w.at[i] != sec {
		w.at[i], w.ok[i], w.failed[i] = sec, 0, 0
	}
	if ok {
		w.ok[i]++
	} else {
		w.failed[i]++
	}
}

// rate is hub's percentage over the window; 100 with nothing settled in it.
func (s *successRate) rate(hub string) float64 {
	sec := s.now().Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.hubs[hub]
	var ok, failed int64
	for i := range rateSlots {
		if w != nil && sec-w.at[i] < int64(s.window/time.Second) {
			ok += w.ok[i]
			failed += w.failed[i]
		}
	}
	if ok+failed == 0 {
		return 100
	}
	return 100 * float64(ok) / float64(ok+failed)
}

func (s *successRate) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

func (s *successRate) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	hubs := make([]string, 0, len(s.hubs))
	for h := range s.hubs {
		hubs = append(hubs, h)
	}
	s.mu.Unlock()
	for _, h := range hubs {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, s.rate(h), h, "incremental")
	}
}
