package main

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

func testResult(system string, accepted, p50, p99 float64) *Result {
	h := hdrhistogram.New(histMin, histMax, histDigits)
	for i := 1; i <= 1000; i++ {
		us := int64(p50 * 1000)
		if i > 980 {
			us = int64(p99 * 1000)
		}
		h.RecordValue(us)
	}
	r := &Result{System: system, Scenario: "steady", Info: SystemInfo{Version: system + " 1.0", Config: "test", Durability: "fsync"},
		Agents: 53, Subscribers: 4, TargetRate: 5000, AcceptedPerSec: accepted, CommittedPerSec: accepted, DeliveredPerSec: 4 * accepted,
		Latency: Summarize(h), Errors: map[string]int64{}, RSSPeakBytes: 300 << 20, CPUCores: 1.5}
	r.Correctness = Correctness{Acked: 1000, Expected: 4000, Observations: 4000, Converged: true, Checked: true}
	r.judge()
	return r
}

func testReport() *Report {
	sc := presets()["steady"]
	r := &Report{Meta: Meta{Date: "2026-11-26T09:30:00Z", Commit: "abc1234", GoVersion: "go1.26.8", CPUs: 2, CPUModel: "test CPU", MemoryGiB: 23.4, Kernel: "Linux 6"},
		Scenario: sc}
	fed := testResult("fedsync", 2500, 40, 80)
	fed.Errors = map[string]int64{"429 rate_limited": 3}
	fed.Conflicts = map[string]float64{"write_write/lww": 12}
	etcd := testResult("etcd", 5000, 10, 20)
	nats := testResult("nats", 5000, 2, 8)
	nats.Correctness.Lost = 2
	nats.Correctness.LostExamples = []string{"ai-001:k0 (writer 0, seq 1) at subscriber 0"}
	nats.judge()
	r.Results = []*Result{fed, etcd, nats}
	r.computeRatios()
	return r
}

func TestSummarize(t *testing.T) {
	h := hdrhistogram.New(histMin, histMax, histDigits)
	for i := int64(1); i <= 1000; i++ {
		h.RecordValue(i * 1000) // 1 ms .. 1000 ms
	}
	l := Summarize(h)
	near := func(got, want float64) bool { return got > want*0.99 && got < want*1.01 }
	if l.Count != 1000 || !near(l.P50, 500) || !near(l.P90, 900) || !near(l.P99, 990) || !near(l.P999, 999) || !near(l.Max, 1000) {
		t.Fatalf("summary = %+v", l)
	}
	if len(l.Curve) != 101 || l.Curve[0][0] != 0 || l.Curve[100][0] != 100 {
		t.Fatalf("curve has %d points from %v to %v", len(l.Curve), l.Curve[0], l.Curve[len(l.Curve)-1])
	}
	for i := 1; i < len(l.Curve); i++ {
		if l.Curve[i][0] < l.Curve[i-1][0] || l.Curve[i][1] < l.Curve[i-1][1] {
			t.Fatalf("curve not monotonic at %d: %v then %v", i, l.Curve[i-1], l.Curve[i])
		}
	}
	if empty := Summarize(hdrhistogram.New(histMin, histMax, histDigits)); empty.Count != 0 || empty.Curve != nil {
		t.Fatalf("empty summary = %+v", empty)
	}
}

func TestRatiosAndVerdict(t *testing.T) {
	r := testReport()
	if r.Passed {
		t.Fatal("a report with lost deliveries passed")
	}
	want := []Ratio{{Baseline: "etcd", Throughput: 0.5, P50: 4, P99: 4}, {Baseline: "nats", Throughput: 0.5, P50: 20, P99: 10}}
	if len(r.Ratios) != 2 {
		t.Fatalf("ratios = %+v", r.Ratios)
	}
	for i, w := range want {
		if g := r.Ratios[i]; g.Baseline != w.Baseline || g.Throughput != w.Throughput || g.P50 < w.P50*0.98 || g.P50 > w.P50*1.02 || g.P99 < w.P99*0.98 || g.P99 > w.P99*1.02 {
			t.Errorf("ratio %d = %+v, want about %+v", i, g, w)
		}
	}
}

func TestMarkdown(t *testing.T) {
	r := testReport()
	md := r.Markdown("steady.svg")
	for _, want := range []string{
		"## fedbench `steady` — 2026-11-26T09:30:00Z",
		"53 agents", "target 5,000/s",
		"| system | step | target | accepted/s | committed/s | delivered/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
		"| fedsync | – | 5,000/s | 2,500 | 2,500 | 10,000 | 40.0 |",
		"| etcd | – | 5,000/s | 5,000 |",
		"| nats | – | 5,000/s | 5,000 | 5,000 | 20,000 | 2.00 |",
		"**FAIL**",
		"| fedsync / etcd | 0.50 | 4.00 | 4.00 |",
		"errors in the window: 3 (429 rate_limited: 3)",
		"write_write/lww 12",
		"FAILED: 2 acknowledged deliveries lost",
		"Durability: fsync",
		"![push-to-subscriber latency percentiles](steady.svg)",
		"commit abc1234",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	// Every table row has as many cells as the header.
	var cols int
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "| system") && !strings.HasPrefix(line, "| fedsync |") && !strings.HasPrefix(line, "| etcd |") && !strings.HasPrefix(line, "| nats |") {
			continue
		}
		n := strings.Count(line, "|")
		if cols == 0 {
			cols = n
		} else if n != cols {
			t.Errorf("row has %d separators, header %d: %s", n, cols, line)
		}
	}
}

func TestMaxMarksKeptStep(t *testing.T) {
	r := testReport()
	r.Scenario = presets()["max"]
	step := testResult("fedsync", 300, 100, 500)
	step.Step, step.TargetRate = "300/s", 300
	r.Results = append(r.Results, step)
	r.Best = map[string]*Result{"fedsync": step, "etcd": r.Results[1], "nats": r.Results[2]}
	r.computeRatios()
	if md := r.Markdown(""); !strings.Contains(md, "| fedsync | 300/s (kept) | 300/s | 300 |") {
		t.Fatalf("kept step not marked:\n%s", md)
	}
	if r.Ratios[0].Throughput != 0.06 {
		t.Fatalf("ratio must use the kept step: %+v", r.Ratios[0])
	}
}

func TestSVGIsWellFormed(t *testing.T) {
	svg := testReport().SVG()
	dec := xml.NewDecoder(strings.NewReader(svg))
	polylines := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			polylines++
		}
	}
	if polylines != 3 {
		t.Fatalf("want one curve per system (3), got %d", polylines)
	}
	for _, want := range []string{"fedsync", "etcd", "nats", "p99.9", "latency (ms, log scale)"} {
		if !strings.Contains(svg, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
}

func TestWriteFiles(t *testing.T) {
	dir := t.TempDir()
	r := testReport()
	files, err := r.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, ext := range []string{".json", ".md", ".svg"} {
		if files[i] != filepath.Join(dir, "steady-2026-11-26T093000"+ext) {
			t.Errorf("file %d = %s", i, files[i])
		}
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != 3 || back.Results[2].Correctness.Lost != 2 || back.Passed || back.Scenario.Name != "steady" {
		t.Fatalf("JSON round trip: %+v", back)
	}
}

func TestPromLineAndErrors(t *testing.T) {
	labels, v := promLine(`conflict_rate{conflict_type="write_write",resolution_method="lww"} 42`)
	if labels["conflict_type"] != "write_write" || labels["resolution_method"] != "lww" || v != 42 {
		t.Fatalf("promLine = %v %v", labels, v)
	}
	if got := formatErrors(map[string]int64{"503 unavailable": 2, "429 rate_limited": 1}); got != "3 (429 rate_limited: 1, 503 unavailable: 2)" {
		t.Fatalf("formatErrors = %q", got)
	}
	if errCode(&codeError{code: "409 version_conflict"}) != "409 version_conflict" || retryAfter(&codeError{retryAfter: time.Second}) != time.Second {
		t.Fatal("codeError")
	}
	if commas(1234567) != "1,234,567" || commas(-1000) != "-1,000" || commas(999) != "999" {
		t.Fatal("commas")
	}
}

func TestStatsWindow(t *testing.T) {
	s := NewStats()
	t0 := time.Now()
	s.Accepted(t0.UnixNano()) // before the window: not counted
	s.StartWindow(t0.Add(time.Second))
	in := t0.Add(2 * time.Second).UnixNano()
	s.Accepted(in)
	s.Error("503 unavailable", in)
	s.Delivered(Delivery{Sub: 0, PushNs: in, RecvNs: in + int64(5*time.Millisecond), First: true, Bytes: 1000})
	s.Delivered(Delivery{Sub: 1, Group: groupDelta, PushNs: in, RecvNs: in + int64(7*time.Millisecond), Bytes: 100, Delta: true}) // not a first sight: no latency
	s.EndWindow(t0.Add(3 * time.Second))
	s.Accepted(t0.Add(4 * time.Second).UnixNano())
	if s.accepted.Load() != 1 || s.acceptedAll.Load() != 3 {
		t.Fatalf("accepted = %d of %d", s.accepted.Load(), s.acceptedAll.Load())
	}
	if h := s.Histogram(); h.TotalCount() != 1 || h.Max() < 4990 || h.Max() > 5010 {
		t.Fatalf("histogram = %d values, max %d µs", h.TotalCount(), h.Max())
	}
	w, all := s.Errors()
	if w["503 unavailable"] != 1 || all["503 unavailable"] != 1 {
		t.Fatalf("errors = %v %v", w, all)
	}
}

func TestCPUPerCommit(t *testing.T) {
	before := map[int]int64{10: 100, 11: 50, 12: 999, 13: 500}
	after := map[int]int64{10: 350, 11: 50, 14: 20, 13: 30} // 12 ended; 14 started; 13 is a reused pid
	names := map[int]string{10: "validation", 11: "validation", 12: "merge", 13: "statestore", 14: "merge"}
	total, byName := cpuWindow(before, after, names)
	if total != 250+0+20+30 || byName["validation"] != 250 || byName["merge"] != 20 || byName["statestore"] != 30 {
		t.Fatalf("cpuWindow = %d %v", total, byName)
	}
	// 1,190 ticks of 10 ms = 11.9 CPU-seconds over 1,000 commits: 11.9 ms each.
	if got := cpuPerCommit(1190, 1000); got != 11.9 {
		t.Fatalf("cpuPerCommit(1190, 1000) = %v", got)
	}
	// 0.58 cores for 8 s at 4,120 puts/s: 464 ticks over 32,960 puts.
	if got := cpuPerCommit(464, 32960); got < 0.1407 || got > 0.1408 {
		t.Fatalf("cpuPerCommit(464, 32960) = %v", got)
	}
	if cpuPerCommit(100, 0) != 0 {
		t.Fatal("no commits must give 0 (not measured)")
	}

	r := testReport()
	fed, etcd, nats := r.Results[0], r.Results[1], r.Results[2]
	fed.CPUMsPerCommit, fed.Committed, fed.CPUSecondsByProcess = 6, 2000, map[string]float64{"statestore": 4, "devstack (edges + broker)": 6, "validation": 2}
	etcd.CPUMsPerCommit, nats.CPUMsPerCommit = 0.14, 0
	r.computeRatios()
	if r.Ratios[0].Baseline != "etcd" || r.Ratios[0].CPUPerCommit != 42.86 || r.Ratios[1].CPUPerCommit != 0 {
		t.Fatalf("ratios = %+v", r.Ratios)
	}
	md := r.Markdown("")
	for _, want := range []string{
		"| CPU cores | CPU ms per commit | result |",
		"| 1.50 | 6.00 | pass |",  // fedsync
		"| 1.50 | 0.140 | pass |", // etcd
		"| 1.50 | – | **FAIL** |", // nats: not measured
		"| | throughput | p50 latency | p99 latency | CPU per commit |",
		"| fedsync / etcd | 0.50 | 4.00 | 4.00 | 42.86 |",
		"| fedsync / nats | 0.50 | 20.02 | 10.01 | – |", // not measured for nats
		"CPU ms per commit by process: devstack (edges + broker) 3.00, statestore 2.00, validation 1.00",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	b, _ := json.Marshal(r)
	for _, want := range []string{`"cpu_ms_per_commit":6`, `"cpu_ms_per_commit":0.14`, `"cpu_per_commit":42.86`, `"committed":2000`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s", want)
		}
	}
}
