package healthmonitor

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

//go:embed dashboard.html
var dashboardHTML []byte

//go:embed openapi.json
var openAPI []byte

// dashboard serves the operators' live view: GET /dashboard (the page, plain
// HTML and JavaScript embedded in the binary, no network at build or run time)
// and GET /dashboard/events (server-sent events, one snapshot a second, for
// any valid token: L1 may view). Acting (pause, resolve a conflict) goes
// through the public API with the viewer's own token, so L3 is checked there.
type dashboard struct {
	svc      Service
	agents   *agents
	alerts   *alerter
	scraper  *scraper
	pipeline *pipeline
	verifier *authtoken.Verifier
	every    time.Duration
}

type agentView struct {
	ID       string `json:"id"`
	Region   string `json:"region"`
	LastSeen string `json:"last_seen"`
	Healthy  bool   `json:"healthy"`
}

type alertView struct {
	Name     string            `json:"name"`
	Severity string            `json:"severity"`
	Labels   map[string]string `json:"labels"`
	Summary  string            `json:"summary"`
	Since    string            `json:"since"`
}

type snapshot struct {
	Time     string                     `json:"time"`
	Status   string                     `json:"status"`
	Services map[string]componentHealth `json:"services"`
	Regions  map[string]componentHealth `json:"regions"`
	Agents   []agentView                `json:"agents"`
	Healthy  int                        `json:"agents_healthy"`
	Silent   int                        `json:"agents_unhealthy"`
	// Rates from merge's metrics (the scrape of -alerts.scrape).
	Committed float64            `json:"committed_per_s"`
	Conflicts float64            `json:"conflicts_per_s"`
	Lag       float64            `json:"lag"`
	P99       map[string]float64 `json:"p99_ms"`
	// Consistency is each region's hub's last verification against statestore.
	Consistency map[string]ConsistencyView `json:"consistency"`
	Alerts      []alertView                `json:"alerts"`
	Issues      []issue                    `json:"issues"`
}

func (d *dashboard) snapshot(ctx context.Context) snapshot {
	resp, _ := d.svc.GetHealth(ctx, &fedsyncv1.GetHealthRequest{})
	s := snapshot{Time: time.Now().UTC().Format(time.RFC3339), Status: resp.GetStatus(), Services: components(resp.GetServices()),
		Regions: components(resp.GetRegions()), Issues: issues(resp.GetIssues()), Agents: []agentView{}, Alerts: []alertView{}, P99: map[string]float64{},
		Consistency: map[string]ConsistencyView{}}
	d.agents.mu.Lock()
	now := d.agents.now()
	for id, t := range d.agents.lastSeen {
		ok := now.Sub(t) <= d.agents.timeout
		if ok {
			s.Healthy++
		} else {
			s.Silent++
		}
		s.Agents = append(s.Agents, agentView{ID: id, Region: d.agents.region[id], LastSeen: t.UTC().Format(time.RFC3339), Healthy: ok})
	}
	d.agents.mu.Unlock()
	sort.Slice(s.Agents, func(i, j int) bool { return s.Agents[i].ID < s.Agents[j].ID })
	if len(s.Agents) > 200 {
		s.Agents = s.Agents[:200]
	}
	if d.alerts != nil {
		d.alerts.mu.Lock()
		for _, a := range d.alerts.firing {
			s.Alerts = append(s.Alerts, alertView{Name: a.Name, Severity: a.Severity, Labels: a.Labels, Summary: a.Summary, Since: a.StartsAt.UTC().Format(time.RFC3339)})
		}
		d.alerts.mu.Unlock()
		sort.Slice(s.Alerts, func(i, j int) bool { return s.Alerts[i].Name < s.Alerts[j].Name })
	}
	if d.scraper != nil {
		s.Committed, s.Conflicts, s.Lag = d.scraper.rates()
		s.P99 = d.scraper.p99()
		s.Consistency = d.scraper.consistencyViews()
	}
	return s
}

// token is the viewer's: the Authorization header, or access_token in the
// query (EventSource cannot set headers).
func (d *dashboard) token(r *http.Request) string {
	if tok, err := authtoken.FromRequest(r); err == nil && tok != "" {
		return tok
	}
	return r.URL.Query().Get("access_token")
}

func (d *dashboard) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /dashboard", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'")
		w.Write(dashboardHTML)
	})
	mux.HandleFunc("GET /dashboard/events", func(w http.ResponseWriter, r *http.Request) {
		if _, err := d.verifier.Verify(r.Context(), d.token(r)); err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		rc := http.NewResponseController(w)
		t := time.NewTicker(d.every)
		defer t.Stop()
		for {
			b, _ := json.Marshal(d.snapshot(r.Context()))
			if _, err := fmt.Fprintf(w, "event: snapshot\ndata: %s\n\n", b); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
			}
		}
	})
}
