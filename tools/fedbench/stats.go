package main

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to 1 hour, 3 significant
// digits.
const (
	histMin    = 1
	histMax    = int64(time.Hour / time.Microsecond)
	histDigits = 3
	shards     = 16
)

type histShard struct {
	mu    sync.Mutex
	all   *hdrhistogram.Histogram // push time inside the measured window
	win   *hdrhistogram.Histogram // everything since the last progress line
	group [nGroups]*hdrhistogram.Histogram
}

// Subscribers are in one of two groups, by the events they asked for: whole
// documents (groupFull, the default) or what each change set and removed
// (groupDelta). Each group has its own deliveries, bytes and latency.
const (
	groupFull = iota
	groupDelta
	nGroups
)

var groupNames = [nGroups]string{"full", "delta"}

func groupOf(events string) int {
	if events == "delta" {
		return groupDelta
	}
	return groupFull
}

// groupCounters count one group's change messages: received in the window
// (delivered, bytes), and the messages of the deltas pushed in the window,
// whenever they arrived (changes, changeBytes, and what they carried), so
// that a backlog does not hide them.
type groupCounters struct {
	delivered   atomic.Int64
	bytes       atomic.Int64
	changes     atomic.Int64
	changeBytes atomic.Int64
	wholeFrames atomic.Int64 // messages that carried the whole value
	deltaFrames atomic.Int64 // messages that carried only what changed
}

// Stats collects the measures of one run: acknowledged deltas, deliveries,
// propagation latency and errors by code. Writers and subscribers call it
// concurrently.
type Stats struct {
	shards [shards]histShard

	winStart, winEnd atomic.Int64 // unix ns of the measured window; 0 = not yet

	accepted     atomic.Int64 // acknowledged inside the window
	acceptedAll  atomic.Int64
	delivered    atomic.Int64 // changes received inside the window
	deliveredAll atomic.Int64

	groups [nGroups]groupCounters

	// Refusals (admission refused: the write was not taken), in the window and
	// in all; RA: those that carried Retry-After. maxLag: the largest lag a
	// refusal reported.
	refused, refusedAll     atomic.Int64
	refusedRA, refusedAllRA atomic.Int64
	maxLag                  atomic.Int64

	errMu     sync.Mutex
	errWindow map[string]int64
	errAll    map[string]int64
}

// NewStats returns empty stats.
func NewStats() *Stats {
	s := &Stats{errWindow: map[string]int64{}, errAll: map[string]int64{}}
	for i := range s.shards {
		s.shards[i].all = hdrhistogram.New(histMin, histMax, histDigits)
		s.shards[i].win = hdrhistogram.New(histMin, histMax, histDigits)
		for g := range s.shards[i].group {
			s.shards[i].group[g] = hdrhistogram.New(histMin, histMax, histDigits)
		}
	}
	return s
}

// StartWindow opens the measured window now.
func (s *Stats) StartWindow(now time.Time) { s.winStart.Store(now.UnixNano()) }

// EndWindow closes it.
func (s *Stats) EndWindow(now time.Time) { s.winEnd.Store(now.UnixNano()) }

func (s *Stats) inWindow(ns int64) bool {
	start := s.winStart.Load()
	if start == 0 || ns < start {
		return false
	}
	end := s.winEnd.Load()
	return end == 0 || ns < end
}

// Accepted records an acknowledgement received at ns.
func (s *Stats) Accepted(ns int64) {
	s.acceptedAll.Add(1)
	if s.inWindow(ns) {
		s.accepted.Add(1)
	}
}

// Refused records a write the system refused to admit at ns; lag < 0: none reported.
func (s *Stats) Refused(ns int64, retryAfter bool, lag int64) {
	s.refusedAll.Add(1)
	if retryAfter {
		s.refusedAllRA.Add(1)
	}
	if s.inWindow(ns) {
		s.refused.Add(1)
		if retryAfter {
			s.refusedRA.Add(1)
		}
	}
	for {
		cur := s.maxLag.Load()
		if lag <= cur || s.maxLag.CompareAndSwap(cur, lag) {
			return
		}
	}
}

// Error records a failed request by code.
func (s *Stats) Error(code string, ns int64) {
	s.errMu.Lock()
	s.errAll[code]++
	if s.inWindow(ns) {
		s.errWindow[code]++
	}
	s.errMu.Unlock()
}

// Delivery is one change message a subscriber received.
type Delivery struct {
	Sub    int   // subscriber index (spreads the histograms' locks)
	Group  int   // groupFull or groupDelta: what the subscriber asked for
	PushNs int64 // when the delta was pushed (0: not a fedbench delta)
	RecvNs int64
	// First: the subscriber's first sight of this delta (only those count for
	// latency).
	First bool
	Bytes int  // size of the message
	Delta bool // it carried only what changed, not the whole value
}

// Delivered records a change message a subscriber received.
func (s *Stats) Delivered(d Delivery) {
	s.deliveredAll.Add(1)
	g := &s.groups[d.Group]
	if s.inWindow(d.RecvNs) {
		s.delivered.Add(1)
		g.delivered.Add(1)
		g.bytes.Add(int64(d.Bytes))
	}
	if d.PushNs > 0 && s.inWindow(d.PushNs) {
		g.changes.Add(1)
		g.changeBytes.Add(int64(d.Bytes))
		if d.Delta {
			g.deltaFrames.Add(1)
		} else {
			g.wholeFrames.Add(1)
		}
	}
	if !d.First || d.PushNs <= 0 {
		return
	}
	shard, pushNs, recvNs := d.Sub, d.PushNs, d.RecvNs
	us := max((recvNs-pushNs)/1000, histMin)
	us = min(us, histMax)
	sh := &s.shards[shard%shards]
	in := s.inWindow(pushNs)
	sh.mu.Lock()
	sh.win.RecordValue(us)
	if in {
		sh.all.RecordValue(us)
		sh.group[d.Group].RecordValue(us)
	}
	sh.mu.Unlock()
}

// Window returns the p99 of deliveries since the last call, and resets it.
func (s *Stats) Window() time.Duration {
	h := hdrhistogram.New(histMin, histMax, histDigits)
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		h.Merge(sh.win)
		sh.win.Reset()
		sh.mu.Unlock()
	}
	return time.Duration(h.ValueAtQuantile(99)) * time.Microsecond
}

// Histogram merges the measured window's latencies.
func (s *Stats) Histogram() *hdrhistogram.Histogram {
	h := hdrhistogram.New(histMin, histMax, histDigits)
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		h.Merge(sh.all)
		sh.mu.Unlock()
	}
	return h
}

// GroupHistogram merges one group's latencies of the measured window.
func (s *Stats) GroupHistogram(g int) *hdrhistogram.Histogram {
	h := hdrhistogram.New(histMin, histMax, histDigits)
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		h.Merge(sh.group[g])
		sh.mu.Unlock()
	}
	return h
}

// Errors returns the errors of the window and of the whole run.
func (s *Stats) Errors() (window, all map[string]int64) {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	window, all = map[string]int64{}, map[string]int64{}
	for k, v := range s.errWindow {
		window[k] = v
	}
	for k, v := range s.errAll {
		all[k] = v
	}
	return window, all
}

// Latency is a latency summary in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
	// Curve is the percentile curve for the chart: [percentile, ms] pairs.
	Curve [][2]float64 `json:"curve,omitempty"`
}

func usToMs(v int64) float64 { return math.Round(float64(v)/10) / 100 }

// Summarize turns a histogram into a Latency with a percentile curve of points
// spread evenly on the "nines" scale (0, 90, 99, 99.9, 99.99 are equidistant).
func Summarize(h *hdrhistogram.Histogram) Latency {
	l := Latency{Count: h.TotalCount()}
	if l.Count == 0 {
		return l
	}
	l.P50, l.P90, l.P99 = usToMs(h.ValueAtQuantile(50)), usToMs(h.ValueAtQuantile(90)), usToMs(h.ValueAtQuantile(99))
	l.P999, l.Max, l.Mean = usToMs(h.ValueAtQuantile(99.9)), usToMs(h.Max()), math.Round(h.Mean()/10)/100
	for i := 0; i <= 100; i++ {
		nines := float64(i) * 0.05 // 0 .. 5 nines
		p := 100 * (1 - math.Pow(10, -nines))
		if i == 100 {
			p = 100
		}
		l.Curve = append(l.Curve, [2]float64{math.Round(p*10000) / 10000, usToMs(h.ValueAtQuantile(p))})
	}
	return l
}

// codeError is an error with a stable code for the "errors by code" table.
type codeError struct {
	code       string
	retryAfter time.Duration
}

func (e *codeError) Error() string { return e.code }

func errCode(err error) string {
	var ce *codeError
	if errors.As(err, &ce) {
		return ce.code
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "deadline exceeded") || strings.Contains(msg, "timeout"):
		return "timeout"
	case strings.Contains(msg, "connection refused"):
		return "connection_refused"
	case strings.Contains(msg, "connection reset"), strings.Contains(msg, "EOF"):
		return "connection_reset"
	}
	if len(msg) > 40 {
		msg = msg[:40]
	}
	return msg
}

func retryAfter(err error) time.Duration {
	var ce *codeError
	if errors.As(err, &ce) {
		return ce.retryAfter
	}
	return 0
}

func formatErrors(errs map[string]int64) string {
	if len(errs) == 0 {
		return "0"
	}
	var parts []string
	var total int64
	for code, n := range errs {
		parts = append(parts, fmt.Sprintf("%s: %d", code, n))
		total += n
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}
