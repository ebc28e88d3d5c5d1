package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedsync/fedsync/tools/devstack"
)

// metricValue reads one series of a service's /metrics: the sum of the samples
// of name whose labels contain every one of labels (e.g. `result="loaded"`).
func metricValue(t *testing.T, s *devstack.Stack, svc, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.HTTPAddr(svc) + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
lines:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue lines
			}
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

// TestInjectedDivergenceIsFoundRepairedAndAlerted: with verification every
// 2 s (the seed's 5 minutes is the default), damaging region eu's hub's view
// of the committed state (through the test-only fault-injection endpoint)
// is found at the next verification, repaired from statestore, counted on
// /metrics, and raises one consistency_divergence alert for eu at an
// Alertmanager-format sink the test runs; the alert resolves when the next
// verification finds the view whole again. Region na's hub is untouched and
// raises nothing.
func TestInjectedDivergenceIsFoundRepairedAndAlerted(t *testing.T) {
	sink := newAlertSink(t)
	t.Setenv("FEDSYNC_ALERTS_INTERVAL", "250ms")
	t.Setenv("FEDSYNC_CONSISTENCY_INTERVAL", "2s")
	t.Setenv("FEDSYNC_CONSISTENCY_FAULT_INJECTION", "true")
	s := startStack(t)

	writer := newAgent(t, s, "ai-007", "na")
	for i := 1; i <= 5; i++ {
		if st, body := writer.pushPatiently(fmt.Sprintf(`{"id":"ai-007:cons-%d","data_type":"note","patch":{"n":%d}}`, i, i)); st != http.StatusAccepted {
			t.Fatalf("push: %d %v", st, body)
		}
	}
	for i := 1; i <= 5; i++ {
		writer.waitVersion(fmt.Sprintf("ai-007:cons-%d", i), 1, 20*time.Second)
	}
	waitFor := func(what string, timeout time.Duration, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s (sink got %v)", what, timeout, sink.all())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Both hubs hold the five documents and have verified them once.
	for _, hub := range []string{"broadcaster-na", "broadcaster-eu"} {
		before := metricValue(t, s, hub, "fedsync_consistency_checks_total", `result="consistent"`)
		waitFor(hub+" verified its view", 20*time.Second, func() bool {
			return metricValue(t, s, hub, "fedsync_consistency_view_documents") >= 5 &&
				metricValue(t, s, hub, "fedsync_consistency_checks_total", `result="consistent"`) > before
		})
		if n := metricValue(t, s, hub, "fedsync_consistency_repaired_documents_total"); n != 0 {
			t.Fatalf("%s repaired %v documents of an undamaged view", hub, n)
		}
	}

	// Damage eu's view: a version statestore never had, and a lost document.
	// Only a federation admin (L4) may; an agent's token is refused.
	corrupt := func(token, body string) int {
		req, _ := http.NewRequest("POST", "http://"+s.HTTPAddr("broadcaster-eu")+"/debug/consistency/corrupt", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := corrupt(writer.token, `{"id":"ai-007:cons-2","version":42}`); st != http.StatusForbidden {
		t.Fatalf("an agent's token damaged the view: %d", st)
	}
	admin := newAgent(t, s, "admin", "na")
	if st := corrupt(admin.token, `{"version":42}`); st != http.StatusBadRequest {
		t.Fatalf("a request without id: %d", st)
	}
	for _, body := range []string{`{"id":"ai-007:cons-2","version":42}`, `{"id":"ai-007:cons-3","version":0}`} {
		if st := corrupt(admin.token, body); st != http.StatusNoContent {
			t.Fatalf("corrupt %s: %d", body, st)
		}
	}
	alerts := func(region string, resolved bool) int { return sink.count("consistency_divergence", region, resolved) }
	waitFor("eu's repair", 20*time.Second, func() bool {
		return metricValue(t, s, "broadcaster-eu", "fedsync_consistency_repaired_documents_total") == 2
	})
	waitFor("consistency_divergence firing for eu", 20*time.Second, func() bool { return alerts("eu", false) >= 1 })
	waitFor("consistency_divergence resolved for eu", 20*time.Second, func() bool { return alerts("eu", true) >= 1 })
	if n := alerts("eu", false); n != 1 {
		t.Errorf("%d firing notifications for one divergence", n)
	}
	if n := alerts("na", false); n != 0 {
		t.Errorf("region na, not damaged, raised %d consistency_divergence alerts", n)
	}
	if n := metricValue(t, s, "broadcaster-eu", "fedsync_consistency_divergent_documents"); n != 0 {
		t.Errorf("after the repair the last verification found %v divergent documents", n)
	}
	// The repaired view agrees with statestore from then on.
	before := metricValue(t, s, "broadcaster-eu", "fedsync_consistency_checks_total", `result="consistent"`)
	waitFor("a consistent verification after the repair", 20*time.Second, func() bool {
		return metricValue(t, s, "broadcaster-eu", "fedsync_consistency_checks_total", `result="consistent"`) > before
	})
	if n := metricValue(t, s, "broadcaster-eu", "fedsync_consistency_repaired_documents_total"); n != 2 {
		t.Errorf("%v documents repaired in all; want 2", n)
	}
}
