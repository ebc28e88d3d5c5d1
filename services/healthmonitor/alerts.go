package healthmonitor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/periodic"
	"github.com/fedsync/fedsync/libs/svcrun"
)

// Alert is one firing (or just resolved) alert of the seed's rules (5.1).
type Alert struct {
	Name     string            // alertname: high_sync_latency, sync_failure_spike, regional_hub_down
	Labels   map[string]string // what it is about (region, regional_hub, target_system)
	Severity string
	Summary  string
	StartsAt time.Time
	EndsAt   time.Time // set once resolved
}

func (a *Alert) key() string {
	keys := make([]string, 0, len(a.Labels))
	for k := range a.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(a.Name)
	for _, k := range keys {
		fmt.Fprintf(&b, ",%s=%s", k, a.Labels[k])
	}
	return b.String()
}

// Condition is a rule's finding at one evaluation: an instance of the alert
// whose condition holds now.
type Condition struct {
	Labels  map[string]string
	Summary string
}

// Rule is one of the seed's alert rules, evaluated by healthmonitor itself.
type Rule struct {
	Name     string
	Severity string
	// For is how long the condition must hold before the alert fires.
	For time.Duration
	// Eval returns the instances whose condition holds now.
	Eval func(now time.Time) []Condition
}

// Sink receives notifications: format "alertmanager" (Alertmanager's
// POST /api/v2/alerts body) or "slack" (an incoming-webhook message).
type Sink struct {
	Format string
	URL    string
}

// alerter evaluates the rules every interval and notifies the sinks of each
// alert when it fires and when it resolves. Only the leader (one healthmonitor
// replica at a time) notifies; every replica evaluates, so a new leader knows
// what is firing.
type alerter struct {
	rules    []Rule
	sinks    []Sink
	client   *http.Client
	logger   log.Logger
	now      func() time.Time
	leader   func() bool
	retryMax time.Duration

	mu      sync.Mutex
	pending map[string]time.Time // condition seen since
	firing  map[string]*Alert
	// sent counts notifications by state, for tests and metrics.
	sent func(state string)
}

func newAlerter(rules []Rule, sinks []Sink, logger log.Logger) *alerter {
	return &alerter{rules: rules, sinks: sinks, client: &http.Client{Timeout: 10 * time.Second}, logger: logger,
		now: time.Now, leader: func() bool { return true }, retryMax: 5 * time.Minute,
		pending: map[string]time.Time{}, firing: map[string]*Alert{}, sent: func(string) {}}
}

// evaluate runs every rule once and notifies what fired or resolved.
func (a *alerter) evaluate(ctx context.Context) {
	now := a.now()
	holding := map[string]*Alert{}
	seen := map[string]bool{}
	for _, r := range a.rules {
		for _, c := range r.Eval(now) {
			al := &Alert{Name: r.Name, Labels: c.Labels, Severity: r.Severity, Summary: c.Summary}
			k := al.key()
			seen[k] = true
			a.mu.Lock()
			since, ok := a.pending[k]
			if !ok {
				since = now
				a.pending[k] = now
			}
			a.mu.Unlock()
			if now.Sub(since) >= r.For {
				al.StartsAt = since
				holding[k] = al
			}
		}
	}
	var fired, resolved []*Alert
	a.mu.Lock()
	for k := range a.pending {
		if !seen[k] {
			delete(a.pending, k) // the condition stopped holding: its For starts over
		}
	}
	for k, al := range holding {
		if _, ok := a.firing[k]; !ok {
			a.firing[k] = al
			fired = append(fired, al)
		}
	}
	for k, al := range a.firing {
		if _, ok := holding[k]; !ok {
			delete(a.firing, k)
			al.EndsAt = now
			resolved = append(resolved, al)
		}
	}
	a.mu.Unlock()
	for _, al := range fired {
		level.Warn(a.logger).Log("msg", "alert firing", "alert", al.Name, "labels", fmt.Sprint(al.Labels), "summary", al.Summary)
		a.notify(ctx, al)
	}
	for _, al := range resolved {
		level.Info(a.logger).Log("msg", "alert resolved", "alert", al.Name, "labels", fmt.Sprint(al.Labels))
		a.notify(ctx, al)
	}
}

// notify sends al to every sink, retrying each with backoff in the background
// for up to retryMax. Only the leader sends.
func (a *alerter) notify(ctx context.Context, al *Alert) {
	if !a.leader() {
		return
	}
	state := "firing"
	if !al.EndsAt.IsZero() {
		state = "resolved"
	}
	for _, s := range a.sinks {
		body, err := encodeAlert(s.Format, al)
		if err != nil {
			level.Error(a.logger).Log("msg", "alert sink format", "sink", s.URL, "err", err)
			continue
		}
		go func() {
			backoff := periodic.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
			deadline := a.now().Add(a.retryMax)
			for {
				err := a.post(ctx, s.URL, body)
				if err == nil {
					a.sent(state)
					return
				}
				if a.now().After(deadline) || !backoff.Wait(ctx) {
					level.Error(a.logger).Log("msg", "alert notification given up", "sink", s.URL, "alert", al.Name, "state", state, "err", err)
					return
				}
				level.Warn(a.logger).Log("msg", "alert notification failed, retrying", "sink", s.URL, "alert", al.Name, "err", err)
			}
		}()
	}
}

func (a *alerter) post(ctx context.Context, url string, body []byte) error {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("sink answered %s", resp.Status)
	}
	return nil
}

// encodeAlert renders al in a sink's format.
func encodeAlert(format string, al *Alert) ([]byte, error) {
	labels := map[string]string{"alertname": al.Name, "severity": al.Severity, "source": "fedsync-healthmonitor"}
	for k, v := range al.Labels {
		labels[k] = v
	}
	switch format {
	case "alertmanager":
		// POST /api/v2/alerts takes a list; Alertmanager deduplicates by the
		// label set, and endsAt in the past resolves.
		type amAlert struct {
			Labels       map[string]string `json:"labels"`
			Annotations  map[string]string `json:"annotations"`
			StartsAt     string            `json:"startsAt"`
			EndsAt       string            `json:"endsAt,omitempty"`
			GeneratorURL string            `json:"generatorURL,omitempty"`
		}
		m := amAlert{Labels: labels, Annotations: map[string]string{"summary": al.Summary}, StartsAt: al.StartsAt.UTC().Format(time.RFC3339Nano)}
		if !al.EndsAt.IsZero() {
			m.EndsAt = al.EndsAt.UTC().Format(time.RFC3339Nano)
		}
		return json.Marshal([]amAlert{m})
	case "slack":
		state, icon := "FIRING", ":rotating_light:"
		if !al.EndsAt.IsZero() {
			state, icon = "RESOLVED", ":white_check_mark:"
		}
		return json.Marshal(map[string]string{"text": fmt.Sprintf("%s [%s] %s (%s): %s", icon, state, al.Name, al.Severity, al.Summary)})
	}
	return nil, fmt.Errorf("unknown sink format %q (alertmanager or slack)", format)
}

// ParseSinks reads "format=url" entries.
func ParseSinks(entries []string) ([]Sink, error) {
	var out []Sink
	for _, e := range entries {
		f, u, ok := strings.Cut(e, "=")
		if !ok || (f != "alertmanager" && f != "slack") || !strings.HasPrefix(u, "http") {
			return nil, fmt.Errorf("alerts.webhooks: %q is not alertmanager=URL or slack=URL", e)
		}
		out = append(out, Sink{Format: f, URL: u})
	}
	return out, nil
}

// startAlerts evaluates the seed's rules every cfg.AlertInterval and sends
// notifications from the leader: the replica the consumer group
// fedsync-healthmonitor-alerts gives partition 0 of fedsync.heartbeats.
func startAlerts(rt *svcrun.Runtime, cfg *Config, hubs *hubState) (*alerter, *scraper, error) {
	sinks, err := ParseSinks(cfg.AlertSinks)
	if err != nil {
		return nil, nil, err
	}
	rules := []Rule{hubDownRule(hubs, cfg.HubDownFor)}
	var sc *scraper
	if len(cfg.AlertScrape) > 0 {
		sc = newScraper(cfg.AlertScrape, 5*time.Minute)
		rules = append(rules, successRule(sc, cfg.SuccessThreshold, cfg.AlertFor), latencyRule(sc, cfg.LatencyThreshold, cfg.AlertFor), consistencyRule(sc))
	}
	al := newAlerter(rules, sinks, log.With(rt.Logger, "component", "alerts"))
	firing := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fedsync_alerts_firing", Help: "Alerts of the seed's rules firing now, by alert name (every healthmonitor replica evaluates)."}, []string{"alert"})
	sent := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedsync_alert_notifications_total", Help: "Alert notifications delivered to sinks, by state (firing, resolved)."}, []string{"state"})
	rt.Metrics.Registry.MustRegister(firing, sent)
	al.sent = func(state string) { sent.WithLabelValues(state).Inc() }
	var leader atomic.Bool
	al.leader = leader.Load
	rt.Go("alert leader", func(ctx context.Context) error {
		return kafkabus.WatchAssignments(ctx, &cfg.Kafka, kafkabus.TopicHeartbeats, "fedsync-healthmonitor-alerts", rt.Logger,
			func(ps []int32) {
				if slices.Contains(ps, 0) {
					leader.Store(true)
				}
			},
			func(ps []int32) {
				if slices.Contains(ps, 0) {
					leader.Store(false)
				}
			})
	})
	rt.Go("alert rules", func(ctx context.Context) error {
		return periodic.Run(ctx, cfg.AlertInterval, func(ctx context.Context) {
			if sc != nil {
				sc.scrape(ctx, time.Now())
			}
			al.evaluate(ctx)
			al.mu.Lock()
			counts := map[string]int{"regional_hub_down": 0, "sync_failure_spike": 0, "high_sync_latency": 0}
			for _, a := range al.firing {
				counts[a.Name]++
			}
			al.mu.Unlock()
			for name, n := range counts {
				firing.WithLabelValues(name).Set(float64(n))
			}
		})
	})
	return al, sc, nil
}
