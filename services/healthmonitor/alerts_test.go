package healthmonitor

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type sinkRecorder struct {
	mu    sync.Mutex
	got   []string
	fails int // answer 500 to this many requests first
	srv   *httptest.Server
}

func newSinkRecorder(t *testing.T) *sinkRecorder {
	r := &sinkRecorder{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.fails > 0 {
			r.fails--
			w.WriteHeader(500)
			return
		}
		r.got = append(r.got, string(b))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *sinkRecorder) bodies() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// TestHubDownFiresOnceAndResolves: a region whose hub stops answering fires
// regional_hub_down once its For has passed, to both sink formats (a failing
// sink is retried), not again while it stays down, and resolved when it
// answers again; a non-leader replica sends nothing.
func TestHubDownFiresOnceAndResolves(t *testing.T) {
	am, slack := newSinkRecorder(t), newSinkRecorder(t)
	am.fails = 2
	hubs := &hubState{}
	now := time.Unix(1000, 0)
	al := newAlerter([]Rule{hubDownRule(hubs, 30*time.Second)}, []Sink{{"alertmanager", am.srv.URL}, {"slack", slack.srv.URL}}, log.NewNopLogger())
	al.now = func() time.Time { return now }
	ctx := context.Background()
	step := func(d time.Duration) { now = now.Add(d); al.evaluate(ctx) }
	hubs.set(map[string]int{"na": 2, "eu": 2}, map[string]int{"na": 2, "eu": 2})
	step(0)
	hubs.set(map[string]int{"na": 2, "eu": 0}, map[string]int{"na": 2, "eu": 2})
	step(5 * time.Second)
	step(20 * time.Second)
	if len(al.firing) != 0 {
		t.Fatal("fired before 30 s")
	}
	step(10 * time.Second)
	step(10 * time.Second)
	step(10 * time.Second)
	hubs.set(map[string]int{"na": 2, "eu": 2}, map[string]int{"na": 2, "eu": 2})
	step(5 * time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for len(am.bodies()) < 2 || len(slack.bodies()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("alertmanager got %v, slack %v", am.bodies(), slack.bodies())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	amGot, slackGot := am.bodies(), slack.bodies()
	if len(amGot) != 2 || len(slackGot) != 2 {
		t.Fatalf("want one firing and one resolved per sink: alertmanager %v, slack %v", amGot, slackGot)
	}
	var firing, resolved []map[string]any
	for _, b := range amGot {
		var l []map[string]any
		if err := json.Unmarshal([]byte(b), &l); err != nil || len(l) != 1 {
			t.Fatalf("alertmanager body %s", b)
		}
		if l[0]["endsAt"] == nil {
			firing = append(firing, l[0])
		} else {
			resolved = append(resolved, l[0])
		}
	}
	if len(firing) != 1 || len(resolved) != 1 {
		t.Fatalf("alertmanager: %v", amGot)
	}
	labels := firing[0]["labels"].(map[string]any)
	if labels["alertname"] != "regional_hub_down" || labels["region"] != "eu" || labels["severity"] != "critical" {
		t.Fatalf("labels %v", labels)
	}
	if !strings.Contains(slackGot[0]+slackGot[1], "[FIRING] regional_hub_down") || !strings.Contains(slackGot[0]+slackGot[1], "[RESOLVED] regional_hub_down") {
		t.Fatalf("slack %v", slackGot)
	}

	// A replica that is not the leader evaluates but sends nothing.
	quiet := newSinkRecorder(t)
	al2 := newAlerter([]Rule{hubDownRule(hubs, 0)}, []Sink{{"slack", quiet.srv.URL}}, log.NewNopLogger())
	al2.leader = func() bool { return false }
	hubs.set(map[string]int{"eu": 0}, map[string]int{"eu": 2})
	al2.evaluate(ctx)
	time.Sleep(100 * time.Millisecond)
	if len(al2.firing) != 1 || len(quiet.bodies()) != 0 {
		t.Fatalf("non-leader: firing %d, sent %v", len(al2.firing), quiet.bodies())
	}
}

// TestScrapedRules: sync_success_rate under 95 and a p99 of sync_latency over
// the threshold, read from a real /metrics endpoint, fire their rules.
func TestScrapedRules(t *testing.T) {
	reg := prometheus.NewRegistry()
	rate := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sync_success_rate"}, []string{"regional_hub", "sync_type"})
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sync_latency", Buckets: []float64{10, 100, 1000, 10000}}, []string{"source_system", "target_system", "data_type"})
	reg.MustRegister(rate, lat)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	sc := newScraper([]string{srv.URL}, 5*time.Minute)
	rate.WithLabelValues("na", "incremental").Set(99)
	rate.WithLabelValues("eu", "incremental").Set(80)
	now := time.Unix(1000, 0)
	sc.scrape(context.Background(), now)
	for i := 0; i < 100; i++ {
		lat.WithLabelValues("na", "statestore", "note").Observe(5)
		lat.WithLabelValues("na", "hub:eu", "note").Observe(8000)
	}
	sc.scrape(context.Background(), now.Add(time.Minute))
	s := successRule(sc, 95, 0).Eval(now)
	if len(s) != 1 || s[0].Labels["regional_hub"] != "eu" {
		t.Fatalf("sync_failure_spike: %v", s)
	}
	l := latencyRule(sc, 5*time.Second, 0).Eval(now)
	if len(l) != 1 || l[0].Labels["target_system"] != "hub:eu" {
		t.Fatalf("high_sync_latency: %v (p99 %v)", l, sc.p99())
	}
}

// TestConsistencyRule: a hub whose last verification found divergent
// documents fires consistency_divergence for its region, read from a real
// /metrics endpoint with the broadcaster's series; it resolves once a later
// verification finds none.
func TestConsistencyRule(t *testing.T) {
	reg := prometheus.NewRegistry()
	divergent := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fedsync_consistency_divergent_documents"}, []string{"region"})
	repaired := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedsync_consistency_repaired_documents_total"}, []string{"region"})
	reg.MustRegister(divergent, repaired)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	sc := newScraper([]string{srv.URL}, 5*time.Minute)
	divergent.WithLabelValues("na").Set(0)
	divergent.WithLabelValues("eu").Set(2)
	repaired.WithLabelValues("eu").Add(2)
	now := time.Unix(1000, 0)
	sc.scrape(context.Background(), now)
	c := consistencyRule(sc).Eval(now)
	if len(c) != 1 || c[0].Labels["region"] != "eu" {
		t.Fatalf("consistency_divergence: %v", c)
	}
	if v := sc.consistencyViews()["eu"]; v.Divergent != 2 || v.Repaired != 2 {
		t.Fatalf("eu's view: %+v", v)
	}
	divergent.WithLabelValues("eu").Set(0)
	sc.scrape(context.Background(), now.Add(time.Minute))
	if c := consistencyRule(sc).Eval(now); len(c) != 0 {
		t.Fatalf("after a clean verification: %v", c)
	}
}
