package e2e

import (
	"bufio"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestAlertRulesNameExportedMetrics: every metric the Prometheus rules in
// deploy/prometheus use is exported by a running mesh (scraped from /metrics),
// so the rules cannot silently watch nothing.
func TestAlertRulesNameExportedMetrics(t *testing.T) {
	s := startStack(t)
	a := newAgent(t, s, "ai-001", "na")
	if st, b := a.push(`{"id":"ai-001:m","data_type":"note","patch":{"x":1}}`); st != 202 {
		t.Fatalf("push: %d %v", st, b)
	}
	a.waitVersion("ai-001:m", 1, 20*time.Second)
	exported := map[string]bool{}
	deadline := time.Now().Add(15 * time.Second)
	for _, svc := range []string{"merge", "healthmonitor", "broadcaster-na", "validation-na", "statestore"} {
		for {
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
			// The health monitor's region gauges appear after its first probe round.
			if svc != "healthmonitor" || exported["fedsync_region_healthy_instances"] || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	raw, err := os.ReadFile(repoRoot + "/deploy/prometheus/fedsync-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	used := regexp.MustCompile(`\b(sync_latency_bucket|sync_success_rate|fedsync_[a-z_]+)\b`).FindAllString(string(raw), -1)
	if len(used) < 3 {
		t.Fatalf("found only %v in the rules", used)
	}
	for _, m := range used {
		if !exported[m] {
			t.Errorf("the rules use %s, which no service exports", m)
		}
	}
}
