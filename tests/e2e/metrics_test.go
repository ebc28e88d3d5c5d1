package e2e

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fedsync/fedsync/tools/devstack"
)

// TestAlertRulesNameExportedMetrics: every metric the Prometheus rules in
// deploy/prometheus and the Grafana dashboard in deploy/grafana use is
// exported by a running mesh (scraped from /metrics), so neither can silently
// watch nothing; the dashboard must parse.
func TestAlertRulesNameExportedMetrics(t *testing.T) {
	s := startStack(t)
	a := newAgent(t, s, "ai-001", "na")
	if st, b := a.push(`{"id":"ai-001:m","data_type":"note","patch":{"x":1}}`); st != 202 {
		t.Fatalf("push: %d %v", st, b)
	}
	a.waitVersion("ai-001:m", 1, 20*time.Second)
	// A write-write conflict, so conflict_rate has a series: b writes the
	// same field based on version 0 after a's version 1.
	b := newAgent(t, s, "ai-002", "na")
	if st, body := a.push(`{"id":"shared-metrics","data_type":"note","patch":{"f":1}}`); st != 202 {
		t.Fatalf("push: %d %v", st, body)
	}
	a.waitVersion("shared-metrics", 1, 20*time.Second)
	if st, body := b.push(`{"id":"shared-metrics","data_type":"note","base_version":0,"patch":{"f":2}}`); st != 202 {
		t.Fatalf("push: %d %v", st, body)
	}
	a.waitVersion("shared-metrics", 2, 20*time.Second)
	rules, err := os.ReadFile(repoRoot + "/deploy/prometheus/fedsync-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, m := range regexp.MustCompile(`(?s)expr: \|\n(.*?)\n\s+for:`).FindAllStringSubmatch(string(rules), -1) {
		exprs = append(exprs, m[1])
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	raw, err := os.ReadFile(repoRoot + "/deploy/grafana/fedsync-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("the Grafana dashboard does not parse: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	if len(exprs) < 3+10 {
		t.Fatalf("found only %d expressions", len(exprs))
	}
	// Scrape until every name used shows up (series appear with the first
	// observation: merge's after it settled the deltas above, healthmonitor's
	// after its first probe round), or 20 s have passed.
	var exported map[string]bool
	missing := func() []string {
		var out []string
		for _, e := range exprs {
			for _, m := range metricNames(e) {
				if !exported[m] {
					out = append(out, m)
				}
			}
		}
		return out
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		exported = scrapeNames(t, s)
		if len(missing()) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, e := range exprs {
		names := metricNames(e)
		if len(names) == 0 {
			t.Errorf("no metric in %q", e)
		}
		for _, m := range names {
			if !exported[m] {
				t.Errorf("%q uses %s, which no service exports", e, m)
			}
		}
	}
}

// metricNames returns the metric names a PromQL expression selects: its
// identifiers outside label matchers, ranges and by/without lists that are
// not functions or keywords.
func metricNames(expr string) []string {
	for _, re := range []string{`\{[^}]*\}`, `\[[^\]]*\]`, `(by|without|on|ignoring)\s*\([^)]*\)`, `"[^"]*"`} {
		expr = regexp.MustCompile(re).ReplaceAllString(expr, " ")
	}
	keywords := map[string]bool{"by": true, "without": true, "bool": true, "and": true, "or": true, "unless": true, "offset": true, "on": true, "ignoring": true}
	var out []string
	for _, m := range regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`).FindAllString(expr, -1) {
		if strings.HasSuffix(m, "(") || keywords[m] {
			continue // a function or keyword
		}
		out = append(out, m)
	}
	return out
}

// scrapeNames returns the metric names every service's /metrics exposes.
func scrapeNames(t *testing.T, s *devstack.Stack) map[string]bool {
	exported := map[string]bool{}
	for _, svc := range []string{"merge", "healthmonitor", "broadcaster-na", "validation-na", "statestore", "authn"} {
		resp, err := http.Get("http://" + s.HTTPAddr(svc) + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
				exported[strings.FieldsFunc(line, func(r rune) bool { return r == '{' || r == ' ' })[0]] = true
			}
		}
		resp.Body.Close()
	}
	return exported
}
