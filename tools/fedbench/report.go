package main

import (
	"encoding/json"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Result is one system's run of one scenario (or one step of the max search).
type Result struct {
	System      string     `json:"system"`
	Scenario    string     `json:"scenario"`
	Step        string     `json:"step,omitempty"`
	Info        SystemInfo `json:"info"`
	Agents      int        `json:"agents"`
	Writers     int        `json:"writers"` // writer connections (WritersPerAgent per agent)
	Subscribers int        `json:"subscribers"`
	TargetRate  float64    `json:"target_rate"` // 0 = as fast as acknowledgements allow
	ValueBytes  int        `json:"value_bytes"` // what one write carries
	// DocBytes: the size of the documents the deltas change (growing preset);
	// PartialUpdates: the system can set one field of it (fedsync) rather than
	// put the whole value (etcd, NATS).
	DocBytes       int    `json:"doc_bytes,omitempty"`
	PartialUpdates bool   `json:"partial_updates"`
	Keys           int    `json:"ids"`
	SubscribeMode  string `json:"subscribe_mode"`

	WindowSeconds    float64 `json:"window_seconds"`
	SubscribeSeconds float64 `json:"subscribe_seconds"`
	DrainSeconds     float64 `json:"drain_seconds"`

	AcceptedPerSec  float64 `json:"accepted_per_sec"`
	CommittedPerSec float64 `json:"committed_per_sec"`
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	Latency         Latency `json:"latency"`
	// EventGroups: the subscribers by the events they asked for (whole
	// documents, or what each change set and removed), each group's
	// deliveries, bytes received and latency in the window.
	EventGroups []EventGroup `json:"event_groups,omitempty"`

	// Refusals: writes the system refused to admit (fedsync: 503 unavailable or
	// 429 rate_limited), not counted as errors; the agent waited Retry-After
	// and sent the same delta again. In the window (Refused, RefusedPerSec,
	// RefusedRetryAfter: those with Retry-After) and in the whole run (All).
	// MaxLag: the largest details.lag a refusal reported.
	Refused              int64   `json:"refused"`
	RefusedPerSec        float64 `json:"refused_per_sec"`
	RefusedRetryAfter    int64   `json:"refused_with_retry_after"`
	RefusedAll           int64   `json:"refused_including_warmup_and_drain"`
	RefusedAllRetryAfter int64   `json:"refused_with_retry_after_including_warmup_and_drain"`
	MaxLag               int64   `json:"max_lag_reported,omitempty"`
	// AdmissionOK (overload preset): accepted/s ≤ committed/s + 5% in the window.
	AdmissionOK *bool `json:"accepted_within_committed_plus_5pct,omitempty"`

	Errors      map[string]int64 `json:"errors"`
	ErrorsTotal map[string]int64 `json:"errors_including_warmup_and_drain"`
	Correctness Correctness      `json:"correctness"`

	Conflicts     map[string]float64 `json:"conflicts,omitempty"`      // fedsync: conflict_rate by type/resolution
	MergeOutcomes map[string]float64 `json:"merge_outcomes,omitempty"` // fedsync: merge outcomes in the window
	ReviewQueue   *int               `json:"review_queue_pending,omitempty"`
	// Stages: fedsync's own request metrics in the window, per service and
	// method: calls per second and mean duration (where the time goes).
	Stages map[string]Stage `json:"stages,omitempty"`

	RSSBytes         int64            `json:"rss_bytes"`
	RSSPeakBytes     int64            `json:"rss_peak_bytes"`
	RSSByProcess     map[string]int64 `json:"rss_by_process"`
	CPUCores         float64          `json:"cpu_cores"`          // the system's processes, during the window
	FedbenchCPUCores float64          `json:"fedbench_cpu_cores"` // fedbench itself (clients)
	// CPUSeconds is the CPU time of all of the system's processes in the window
	// (fedsync: every service and the devstack process, which holds the embedded
	// broker and the edges), by process name in CPUSecondsByProcess.
	CPUSeconds          float64            `json:"cpu_seconds"`
	CPUSecondsByProcess map[string]float64 `json:"cpu_seconds_by_process,omitempty"`
	// Committed is the number of deltas committed in the window (fedsync:
	// merge's committed counter; etcd and NATS: acknowledged puts), and
	// CPUMsPerCommit the CPU milliseconds per committed delta (per put for the
	// baselines): CPUSeconds×1000 ÷ Committed; 0 when nothing was committed.
	Committed      float64 `json:"committed"`
	CPUMsPerCommit float64 `json:"cpu_ms_per_commit"`

	Passed   bool     `json:"passed"`
	Failures []string `json:"failures,omitempty"`
}

// judge sets Passed from the correctness verdict.
func (r *Result) judge() {
	c := r.Correctness
	if c.Lost > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d acknowledged deliveries lost (e.g. %s)", c.Lost, strings.Join(c.LostExamples, "; ")))
	}
	if c.Duplicates > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d duplicate deliveries", c.Duplicates))
	}
	if c.OutOfOrder > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d out-of-order deliveries", c.OutOfOrder))
	}
	if c.Gaps > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d versions skipped", c.Gaps))
	}
	if c.Checked && !c.Converged {
		r.Failures = append(r.Failures, fmt.Sprintf("%d (subscriber, id) pairs did not converge on the final version", c.Diverged))
	}
	r.Passed = len(r.Failures) == 0
}

// EventGroup is one group of subscribers, by the events they asked for.
type EventGroup struct {
	Events      string `json:"events"` // "full" or "delta": what the subscribers asked for
	Subscribers int    `json:"subscribers"`
	// DeliveredPerSec and ReceivedMiBPerSec: change messages and their bytes
	// received per second in the window. BytesPerChange: the mean size of the
	// messages of the deltas pushed in the window, whenever they arrived (the
	// WebSocket frame, the gRPC message, or a watch event's key and value).
	DeliveredPerSec   float64 `json:"delivered_per_sec"`
	BytesPerChange    float64 `json:"bytes_per_change"`
	ReceivedMiBPerSec float64 `json:"received_mib_per_sec"`
	// WholeFrames and DeltaFrames: of those messages, the ones that carried the
	// whole value, and those that carried only what changed (set, removed).
	WholeFrames int64   `json:"whole_value_messages"`
	DeltaFrames int64   `json:"delta_messages"`
	Latency     Latency `json:"latency"`
}

// received says what the group's messages carried.
func (g EventGroup) received() string {
	switch {
	case g.WholeFrames > 0 && g.DeltaFrames > 0:
		return fmt.Sprintf("mixed: %s whole, %s set/removed", commas(g.WholeFrames), commas(g.DeltaFrames))
	case g.DeltaFrames > 0:
		return "set/removed"
	case g.WholeFrames > 0:
		return "whole value"
	default:
		return "–"
	}
}

// Stage is one service method's share of the hot path.
type Stage struct {
	PerSec float64 `json:"per_sec"`
	MeanMs float64 `json:"mean_ms"`
}

// Meta describes where and when a report was made.
type Meta struct {
	Date string `json:"date"`
	// Commit is git rev-parse HEAD when the run began; Dirty says whether git
	// status --porcelain (outside the results directory) listed changes, the
	// first of which are in DirtyPaths: results from a dirty tree must not be
	// committed.
	Commit     string   `json:"commit"`
	Dirty      bool     `json:"dirty"`
	DirtyCount int      `json:"dirty_count,omitempty"`
	DirtyPaths []string `json:"dirty_paths,omitempty"`
	GoVersion  string   `json:"go_version"`
	CPUs       int      `json:"cpus"`
	CPUModel   string   `json:"cpu_model"`
	MemoryGiB  float64  `json:"memory_gib"`
	Kernel     string   `json:"kernel"`
	Command    string   `json:"command"`
	// LoadAvg is /proc/loadavg when the run began and ended: the machine is
	// shared, so other work competes for the same cores.
	LoadAvgStart string   `json:"loadavg_start"`
	LoadAvgEnd   string   `json:"loadavg_end,omitempty"`
	Notes        []string `json:"notes,omitempty"`
}

func shortCommit(c string) string { return c[:min(12, len(c))] }

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// commitText is the commit for the report's header line.
func (m Meta) commitText() string {
	if m.Dirty {
		return shortCommit(m.Commit) + " **with uncommitted changes (dirty tree)**"
	}
	return shortCommit(m.Commit) + " (clean tree)"
}

// Ratio compares fedsync with a baseline in one scenario.
type Ratio struct {
	Baseline string `json:"baseline"`
	// Throughput: fedsync accepted/s divided by the baseline's (above 1: fedsync
	// takes more).
	Throughput float64 `json:"throughput"`
	// P50 and P99: fedsync's propagation latency divided by the baseline's
	// (above 1: fedsync is slower).
	P50 float64 `json:"p50_latency"`
	P99 float64 `json:"p99_latency"`
	// CPUPerCommit: fedsync's CPU per committed delta divided by the
	// baseline's CPU per put (above 1: fedsync spends more CPU per change).
	CPUPerCommit float64 `json:"cpu_per_commit"`
}

// Report is one scenario across the systems.
type Report struct {
	Meta     Meta      `json:"meta"`
	Scenario Scenario  `json:"scenario"`
	Results  []*Result `json:"results"`
	// Best: for max, the step per system kept as its result.
	Best    map[string]*Result `json:"best,omitempty"`
	Skipped map[string]string  `json:"skipped,omitempty"`
	// OfferedRate (overload): the load offered to every system; twice
	// ProbeCommittedPerSec, fedsync's committed/s in the probe, unless -rate
	// gave it.
	OfferedRate          float64 `json:"offered_rate,omitempty"`
	ProbeCommittedPerSec float64 `json:"probe_committed_per_sec,omitempty"`
	Ratios               []Ratio `json:"ratios"`
	Passed               bool    `json:"passed"`
}

// headline returns the result that stands for each system (the kept step for max).
func (r *Report) headline() []*Result {
	if r.Best != nil {
		var out []*Result
		for _, s := range systemOrder(r.Results) {
			if b := r.Best[s]; b != nil {
				out = append(out, b)
			}
		}
		return out
	}
	return r.Results
}

func systemOrder(rs []*Result) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range rs {
		if !seen[r.System] {
			seen[r.System] = true
			out = append(out, r.System)
		}
	}
	return out
}

// computeRatios fills Ratios and Passed.
func (r *Report) computeRatios() {
	r.Passed = true
	for _, res := range r.Results {
		if !res.Passed {
			r.Passed = false
		}
	}
	r.Ratios = nil
	var fed *Result
	for _, h := range r.headline() {
		if h.System == "fedsync" {
			fed = h
		}
	}
	if fed == nil {
		return
	}
	for _, h := range r.headline() {
		if h.System == "fedsync" {
			continue
		}
		r.Ratios = append(r.Ratios, Ratio{Baseline: h.System,
			Throughput:   ratio(fed.AcceptedPerSec, h.AcceptedPerSec),
			P50:          ratio(fed.Latency.P50, h.Latency.P50),
			P99:          ratio(fed.Latency.P99, h.Latency.P99),
			CPUPerCommit: ratio(fed.CPUMsPerCommit, h.CPUMsPerCommit)})
	}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(a/b*100) / 100
}

// Base returns the file name stem: <scenario>-<date>.
func (r *Report) Base() string {
	t, err := time.Parse(time.RFC3339, r.Meta.Date)
	if err != nil {
		t = time.Now()
	}
	return r.Scenario.Name + "-" + t.Format("2006-01-02T150405")
}

// Write writes <dir>/<scenario>-<date>.json, .md and .svg.
func (r *Report) Write(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	base := filepath.Join(dir, r.Base())
	j, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	files := []string{base + ".json", base + ".md", base + ".svg"}
	contents := [][]byte{append(j, '\n'), []byte(r.Markdown(filepath.Base(base) + ".svg")), []byte(r.SVG())}
	for i, f := range files {
		if err := os.WriteFile(f, contents[i], 0o644); err != nil {
			return nil, err
		}
	}
	return files, nil
}

func fmtRate(f float64) string {
	if f == 0 {
		return "0"
	}
	return commas(int64(math.Round(f)))
}

func commas(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func fmtMs(f float64) string {
	switch {
	case f == 0:
		return "–"
	case f < 10:
		return fmt.Sprintf("%.2f", f)
	case f < 100:
		return fmt.Sprintf("%.1f", f)
	default:
		return commas(int64(math.Round(f)))
	}
}

// fmtCPUMs formats CPU milliseconds per commit ("–" when not measured).
func fmtCPUMs(f float64) string {
	switch {
	case f == 0:
		return "–"
	case f < 1:
		return fmt.Sprintf("%.3f", f)
	default:
		return fmtMs(f)
	}
}

func fmtRatio(f float64) string {
	if f == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", f)
}

func target(rate float64) string {
	if rate == 0 {
		return "as fast as acks allow"
	}
	return fmtRate(rate) + "/s"
}

func sumErrors(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// Markdown renders the report as a Markdown section.
func (r *Report) Markdown(chart string) string {
	var b strings.Builder
	sc := r.Scenario
	fmt.Fprintf(&b, "## fedbench `%s` — %s\n\n", sc.Name, r.Meta.Date)
	if r.Meta.Dirty {
		shown := r.Meta.DirtyPaths[:min(8, len(r.Meta.DirtyPaths))]
		more := ""
		if r.Meta.DirtyCount > len(shown) {
			more = fmt.Sprintf(", and %d more", r.Meta.DirtyCount-len(shown))
		}
		fmt.Fprintf(&b, "> **Measured on a dirty tree**: commit %s plus %d uncommitted changes (%s%s). %s.\n\n",
			shortCommit(r.Meta.Commit), r.Meta.DirtyCount, "`"+strings.Join(shown, "`, `")+"`", more, capitalize(dirtyWarning))
	}
	if sc.WritersPerAgent > 1 {
		fmt.Fprintf(&b, "%d agents (a token each) writing over %d connections each (%d synchronous writers, every id written by one of them), %d subscribers (%s), ",
			sc.Agents, sc.WritersPerAgent, sc.writers(), sc.Subscribers, describeSubs(sc))
	} else {
		fmt.Fprintf(&b, "%d agents (one connection and token each, synchronous writes), %d subscribers (%s), ", sc.Agents, sc.Subscribers, describeSubs(sc))
	}
	if sc.SharedIDs > 0 {
		fmt.Fprintf(&b, "%d shared ids, ", sc.SharedIDs)
	} else {
		fmt.Fprintf(&b, "%d ids per agent, ", sc.KeysPerAgent)
	}
	if sc.DocBytes > 0 {
		fmt.Fprintf(&b, "documents of about %s (fields of 1 KiB, written before the warm-up), then deltas of about %s that each set one field "+
			"(etcd and NATS have no partial update: the honest equivalent is a put of the whole ~%s value each time, and their watchers receive it whole), ",
			bytesStr(sc.DocBytes), bytesStr(sc.ValueSize), bytesStr(sc.DocBytes))
	} else {
		fmt.Fprintf(&b, "values of about %s, ", bytesStr(sc.ValueSize))
	}
	fmt.Fprintf(&b, "target %s, warm-up %s, measured %s.\n", target(sc.Rate), sc.Warmup, sc.Duration)
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %.0f GiB, %s; commit %s; %s.", r.Meta.CPUs, r.Meta.CPUModel, r.Meta.MemoryGiB, r.Meta.Kernel, r.Meta.commitText(), r.Meta.GoVersion)
	if r.Meta.LoadAvgStart != "" {
		fmt.Fprintf(&b, " Load average (1, 5, 15 min) at the start %s, at the end %s.", r.Meta.LoadAvgStart, r.Meta.LoadAvgEnd)
	}
	b.WriteString("\n\n")

	b.WriteString("| system | step | target | accepted/s | committed/s | delivered/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | lost | dup | out of order | converged | RSS | CPU cores | CPU ms per commit | result |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--:|---:|---:|---:|:--:|\n")
	for _, res := range r.Results {
		c := res.Correctness
		conv := "–"
		if c.Checked {
			conv = map[bool]string{true: "yes", false: fmt.Sprintf("no (%d)", c.Diverged)}[c.Converged]
		}
		result := "pass"
		if !res.Passed {
			result = "**FAIL**"
		}
		step := res.stepLabel()
		if r.Best != nil && r.Best[res.System] == res && !sc.Overload {
			step += " (kept)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %d | %d | %s | %s | %.2f | %s | %s |\n",
			res.System, step, target(res.TargetRate), fmtRate(res.AcceptedPerSec), fmtRate(res.CommittedPerSec), fmtRate(res.DeliveredPerSec),
			fmtMs(res.Latency.P50), fmtMs(res.Latency.P90), fmtMs(res.Latency.P99), fmtMs(res.Latency.P999), fmtMs(res.Latency.Max),
			commas(sumErrors(res.Errors)), c.Lost, c.Duplicates, c.OutOfOrder+c.Gaps, conv, mib(res.RSSPeakBytes), res.CPUCores, fmtCPUMs(res.CPUMsPerCommit), result)
	}
	b.WriteString("\nCPU ms per commit: CPU time of all of the system's processes in the measured window (fedsync: every service and the devstack process, " +
		"which holds the embedded broker and the edges; fedbench's own clients not included) divided by the deltas committed in the window " +
		"(fedsync: merge's committed counter; etcd and NATS: acknowledged puts, so CPU per put).\n\n")
	if sc.Overload {
		r.overloadMarkdown(&b)
	}
	if sc.Events == "delta" || sc.Events == "both" {
		b.WriteString("Subscribers by the events they asked for: full = every change carries the whole document, delta = it carries what the change set and removed " +
			"(fedsync's `\"events\":\"delta\"`; etcd and NATS have no partial update, so both halves of their subscribers receive the whole value). " +
			"Bytes per change: the mean size of the change messages of the deltas pushed in the window (whenever they arrived).\n\n")
		b.WriteString("| system | step | events asked | subscribers | received | delivered/s | bytes per change | received MiB/s | p50 ms | p99 ms | max ms |\n")
		b.WriteString("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|\n")
		for _, res := range r.Results {
			step := res.stepLabel()
			for _, g := range res.EventGroups {
				fmt.Fprintf(&b, "| %s | %s | %s | %d | %s | %s | %s | %.2f | %s | %s | %s |\n", res.System, step, g.Events, g.Subscribers, g.received(),
					fmtRate(g.DeliveredPerSec), fmtRate(g.BytesPerChange), g.ReceivedMiBPerSec, fmtMs(g.Latency.P50), fmtMs(g.Latency.P99), fmtMs(g.Latency.Max))
			}
		}
		b.WriteString("\n")
	}
	if len(r.Ratios) > 0 {
		b.WriteString("Ratios (fedsync ÷ baseline; throughput above 1 = fedsync accepts more, latency above 1 = fedsync is slower, " +
			"CPU per commit above 1 = fedsync spends more CPU per committed delta than the baseline per put):\n\n")
		b.WriteString("| | throughput | p50 latency | p99 latency | CPU per commit |\n|---|---:|---:|---:|---:|\n")
		for _, ra := range r.Ratios {
			fmt.Fprintf(&b, "| fedsync / %s | %.2f | %.2f | %.2f | %s |\n", ra.Baseline, ra.Throughput, ra.P50, ra.P99, fmtRatio(ra.CPUPerCommit))
		}
		b.WriteString("\n")
	}
	for _, res := range r.Results {
		var notes []string
		if len(res.Errors) > 0 {
			notes = append(notes, "errors in the window: "+formatErrors(res.Errors))
		}
		for _, g := range res.EventGroups {
			if g.Events == "delta" && res.PartialUpdates && g.WholeFrames > 0 {
				notes = append(notes, fmt.Sprintf("subscribers that asked for delta events received %s whole documents for the window's deltas "+
					"(a server without incremental events ignores the option)", commas(g.WholeFrames)))
			}
		}
		if res.DocBytes > 0 {
			notes = append(notes, fmt.Sprintf("each write carried about %s", bytesStr(res.ValueBytes)))
		}
		if res.RefusedAll > 0 && !sc.Overload {
			notes = append(notes, fmt.Sprintf("refused admission (503/429, not counted as errors): %s in the window, %s in the run, %s of them with Retry-After",
				commas(res.Refused), commas(res.RefusedAll), commas(res.RefusedAllRetryAfter)))
		}
		if len(res.Conflicts) > 0 {
			var parts []string
			for _, k := range sortedKeys(res.Conflicts) {
				parts = append(parts, fmt.Sprintf("%s %s", k, commas(int64(res.Conflicts[k]))))
			}
			notes = append(notes, "conflicts (merge conflict_rate, type/resolution): "+strings.Join(parts, ", "))
		}
		if len(res.MergeOutcomes) > 0 {
			var parts []string
			for _, k := range sortedKeys(res.MergeOutcomes) {
				parts = append(parts, fmt.Sprintf("%s %s", k, commas(int64(res.MergeOutcomes[k]))))
			}
			notes = append(notes, "merge outcomes in the window: "+strings.Join(parts, ", "))
		}
		if len(res.Stages) > 0 {
			var parts []string
			for _, k := range sortedKeys(res.Stages) {
				st := res.Stages[k]
				parts = append(parts, fmt.Sprintf("%s %s/s × %s ms", k, fmtRate(st.PerSec), fmtMs(st.MeanMs)))
			}
			notes = append(notes, "service stages in the window (calls/s × mean): "+strings.Join(parts, ", "))
		}
		if res.ReviewQueue != nil {
			notes = append(notes, fmt.Sprintf("review queue: %d pending", *res.ReviewQueue))
		}
		if len(res.Correctness.Excused) > 0 {
			var parts []string
			for _, k := range sortedKeys(res.Correctness.Excused) {
				parts = append(parts, fmt.Sprintf("%s %d", k, res.Correctness.Excused[k]))
			}
			notes = append(notes, "acknowledged deltas that produced no change of their own (outcome API): "+strings.Join(parts, ", "))
		}
		if len(res.Correctness.MissingOutcomes) > 0 {
			var parts []string
			for _, k := range sortedKeys(res.Correctness.MissingOutcomes) {
				parts = append(parts, fmt.Sprintf("%s %d", k, res.Correctness.MissingOutcomes[k]))
			}
			notes = append(notes, "outcomes of unseen acknowledged deltas: "+strings.Join(parts, ", "))
		}
		if d := res.Correctness; d.Duplicates > 0 {
			notes = append(notes, fmt.Sprintf("duplicates: %d versions delivered twice, %d deltas delivered as two versions", d.DuplicateVersions, d.DuplicateDeltas))
		}
		if sc.Subscribers >= 1000 || sc.Name == "fanout" {
			notes = append(notes, fmt.Sprintf("subscribing took %.1f s", res.SubscribeSeconds))
		}
		if len(res.RSSByProcess) > 1 {
			var parts []string
			for _, k := range sortedKeys(res.RSSByProcess) {
				parts = append(parts, fmt.Sprintf("%s %s", k, mib(res.RSSByProcess[k])))
			}
			notes = append(notes, "RSS at the end of the window: "+strings.Join(parts, ", "))
		}
		if len(res.CPUSecondsByProcess) > 1 && res.Committed > 0 {
			names := sortedKeys(res.CPUSecondsByProcess)
			sort.SliceStable(names, func(i, j int) bool { return res.CPUSecondsByProcess[names[i]] > res.CPUSecondsByProcess[names[j]] })
			var parts []string
			for _, k := range names {
				parts = append(parts, fmt.Sprintf("%s %s", k, fmtCPUMs(res.CPUSecondsByProcess[k]*1000/res.Committed)))
			}
			notes = append(notes, "CPU ms per commit by process: "+strings.Join(parts, ", "))
		}
		notes = append(notes, fmt.Sprintf("fedbench itself used %.2f CPU cores", res.FedbenchCPUCores))
		for _, f := range res.Failures {
			notes = append(notes, "FAILED: "+f)
		}
		fmt.Fprintf(&b, "- **%s%s**: %s.\n", res.System, labelSuffix(res.Step), strings.Join(notes, "; "))
	}
	b.WriteString("\nSetups and durability:\n\n")
	seen := map[string]bool{}
	for _, res := range r.Results {
		if seen[res.System] {
			continue
		}
		seen[res.System] = true
		fmt.Fprintf(&b, "- **%s** (%s): %s. Durability: %s.\n", res.System, res.Info.Version, res.Info.Config, res.Info.Durability)
	}
	for _, s := range sortedKeys(r.Skipped) {
		fmt.Fprintf(&b, "- **%s** skipped: %s.\n", s, r.Skipped[s])
	}
	for _, n := range r.Meta.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	if chart != "" {
		fmt.Fprintf(&b, "\n![push-to-subscriber latency percentiles](%s)\n", chart)
	}
	return b.String()
}

// overloadMarkdown renders the overload preset's table: what was offered,
// accepted, committed and refused, and the admission check.
func (r *Report) overloadMarkdown(b *strings.Builder) {
	switch {
	case r.ProbeCommittedPerSec > 0:
		fmt.Fprintf(b, "Offered load: **%s/s**, twice fedsync's maximum (%s committed/s in the probe, written as fast as acknowledgements allow); "+
			"the baselines get the same offered load. ", fmtRate(r.OfferedRate), fmtRate(r.ProbeCommittedPerSec))
	case r.OfferedRate > 0:
		fmt.Fprintf(b, "Offered load: **%s/s** (-rate) for every system. ", fmtRate(r.OfferedRate))
	}
	b.WriteString("Refused: writes refused admission (HTTP 503 unavailable or 429 rate_limited; gRPC Unavailable or ResourceExhausted with fedsync's error details), " +
		"counted apart from errors; the agent waits Retry-After (plus up to 10% jitter; 200 ms when there is none) and sends the same delta again. " +
		"Attempted: accepted + refused + failed writes per second (synchronous writers offer no more than their acknowledgements and pauses allow). " +
		"p99: push-to-subscriber latency of the accepted deltas (from the accepted attempt). Check: accepted/s ≤ committed/s + 5% in the window.\n\n")
	b.WriteString("| system | step | offered/s | attempted/s | accepted/s | committed/s | refused/s | refused in the run | all with Retry-After | largest lag reported | p99 ms | accepted ≤ committed + 5% | lost |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|:--:|---:|---:|:--:|---:|\n")
	for _, res := range r.Results {
		step := res.stepLabel()
		withRA := "–"
		if res.RefusedAll > 0 {
			withRA = "yes"
			if n := res.RefusedAll - res.RefusedAllRetryAfter; n > 0 {
				withRA = fmt.Sprintf("**no** (%s without)", commas(n))
			}
		}
		check := "–"
		if res.AdmissionOK != nil {
			check = map[bool]string{true: "yes", false: "**no**"}[*res.AdmissionOK]
		}
		lag := "–"
		if res.MaxLag > 0 {
			lag = commas(res.MaxLag)
		}
		attempted := res.AcceptedPerSec + res.RefusedPerSec
		if res.WindowSeconds > 0 {
			attempted += float64(sumErrors(res.Errors)) / res.WindowSeconds
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", res.System, step, target(res.TargetRate),
			fmtRate(attempted), fmtRate(res.AcceptedPerSec), fmtRate(res.CommittedPerSec), fmtRate(res.RefusedPerSec), commas(res.RefusedAll), withRA, lag,
			fmtMs(res.Latency.P99), check, res.Correctness.Lost)
	}
	b.WriteString("\n")
}

func describeSubs(sc Scenario) string {
	switch {
	case sc.SharedIDs > 0:
		return "each on the shared prefix"
	case sc.SubscribeMode == "agent" && sc.DirectSubscribe:
		return "each on one agent's prefix; fedsync's connect to the broadcasters directly, not through the edge"
	case sc.SubscribeMode == "agent":
		return "each on one agent's prefix"
	default:
		return "each on every id"
	}
}

func bytesStr(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	case n <= 0:
		return "60 B"
	default:
		return fmt.Sprintf("%d B", n)
	}
}

var chartColors = map[string]string{"fedsync": "#1f77b4", "fedsync-1": "#9467bd", "etcd": "#2ca02c", "nats": "#d62728"}

// SVG renders the push-to-subscriber latency percentile curves of the headline
// results: x on the "nines" scale (50, 90, 99, 99.9, ... equidistant), y log ms.
func (r *Report) SVG() string {
	const W, H = 760, 440
	const left, right, top, bottom = 70, 150, 40, 60
	pw, ph := float64(W-left-right), float64(H-top-bottom)
	results := r.headline()
	maxNines, lo, hi := 3.0, math.Inf(1), 0.0
	for _, res := range results {
		for _, p := range res.Latency.Curve {
			if p[1] > 0 {
				lo, hi = math.Min(lo, p[1]), math.Max(hi, p[1])
			}
		}
		if n := res.Latency.Count; n > 0 {
			maxNines = math.Max(maxNines, math.Min(5, math.Floor(math.Log10(float64(n)))))
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 10
	}
	yLo := math.Pow(10, math.Floor(math.Log10(math.Max(lo, 0.01))))
	yHi := math.Pow(10, math.Ceil(math.Log10(math.Max(hi, yLo*10))))
	x := func(p float64) float64 {
		n := 0.0
		if p >= 100 {
			n = maxNines
		} else {
			n = math.Min(maxNines, -math.Log10(1-p/100))
		}
		return float64(left) + n/maxNines*pw
	}
	y := func(ms float64) float64 {
		ms = math.Max(ms, yLo)
		return float64(top) + ph - (math.Log10(ms)-math.Log10(yLo))/(math.Log10(yHi)-math.Log10(yLo))*ph
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14" font-weight="bold">%s</text>`+"\n", left,
		html.EscapeString(fmt.Sprintf("fedbench %s: push-to-subscriber latency by percentile (%s)", r.Scenario.Name, r.Meta.Date)))
	// grid: y decades
	for d := yLo; d <= yHi*1.0001; d *= 10 {
		yy := y(d)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, yy, float64(left)+pw, yy)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, yy+4, msLabel(d))
	}
	for n := 0.0; n <= maxNines; n++ {
		p := 100 * (1 - math.Pow(10, -n))
		xx := x(p)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", xx, top, xx, float64(top)+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", xx, float64(top)+ph+18, pctLabel(p))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#888"/>`+"\n", left, top, pw, ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">percentile (the right edge is the maximum)</text>`+"\n", float64(left)+pw/2, H-18)
	fmt.Fprintf(&b, `<text x="16" y="%.1f" text-anchor="middle" transform="rotate(-90 16 %.1f)">latency (ms, log scale)</text>`+"\n", float64(top)+ph/2, float64(top)+ph/2)
	for i, res := range results {
		color := chartColors[res.System]
		if color == "" {
			color = "#555"
		}
		var pts []string
		for _, p := range res.Latency.Curve {
			if p[0] > 100*(1-math.Pow(10, -maxNines)) && p[0] < 100 {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p[0]), y(p[1])))
		}
		if len(pts) > 0 {
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		}
		ly := top + 10 + i*40
		lx := W - right + 14
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", lx, ly, lx+20, ly, color)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", lx+26, ly+4, html.EscapeString(res.System))
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10" fill="#555">%s/s, p99 %s ms</text>`+"\n", lx+26, ly+18,
			fmtRate(res.AcceptedPerSec), fmtMs(res.Latency.P99))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func msLabel(ms float64) string {
	switch {
	case ms >= 1000:
		return fmt.Sprintf("%gs", ms/1000)
	default:
		return fmt.Sprintf("%gms", ms)
	}
}

func pctLabel(p float64) string {
	if p == 0 {
		return "p0"
	}
	s := fmt.Sprintf("%.4f", p)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return "p" + s
}

// stepLabel is the step column of a result: its step, or "–" for none.
func (r *Result) stepLabel() string {
	if r.Step == "" {
		return "–"
	}
	return r.Step
}
