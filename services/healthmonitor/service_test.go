package healthmonitor

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/fedsync/fedsync/libs/svcrun"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

func serveHealth(t *testing.T, region string) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus(svcrun.RegionHealthPrefix+region, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, h)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func health200(t *testing.T, svc Service) (int, healthBody) {
	eps := MakeEndpoints(svc, func(string) endpoint.Middleware { return func(e endpoint.Endpoint) endpoint.Endpoint { return e } })
	rec := httptest.NewRecorder()
	NewHTTPHandler(eps, nil).ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/sync/health", nil))
	var b healthBody
	json.Unmarshal(rec.Body.Bytes(), &b)
	return rec.Code, b
}

func TestHealthFromProbes(t *testing.T) {
	na, eu := serveHealth(t, "na"), serveHealth(t, "eu")
	dead := "127.0.0.1:1"
	p := newProber(time.Hour, 2, log.NewNopLogger(), func(string, ...string) {})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.follow(ctx, "validation", sd.FixedInstancer{na, eu})
	go p.follow(ctx, "merge", sd.FixedInstancer{na, dead})
	go p.follow(ctx, "statestore", sd.FixedInstancer{dead})
	time.Sleep(100 * time.Millisecond)
	svc := newService(p, newAgents(30*time.Second, log.NewNopLogger(), func(string, ...string) {}), []string{"validation", "merge", "statestore", "authn"})
	for i := 0; i < 2; i++ {
		p.probeAll(ctx)
	}
	code, b := health200(t, svc)
	if code != http.StatusServiceUnavailable || b.Status != Unhealthy {
		t.Fatalf("got %d %s, want 503 unhealthy (statestore and authn have no healthy instance)", code, b.Status)
	}
	if s := b.Services["validation"]; s.Status != Healthy || s.Instances != 2 {
		t.Errorf("validation %+v", s)
	}
	if s := b.Services["merge"]; s.Status != Degraded || s.HealthyInstances != 1 {
		t.Errorf("merge %+v", s)
	}
	if s := b.Services["authn"]; s.Status != Unhealthy || s.Instances != 0 {
		t.Errorf("authn (no instances) %+v", s)
	}
	if r := b.Regions["eu"]; r.Instances != 1 || r.Status != Healthy {
		t.Errorf("region eu %+v", r)
	}

	svc = newService(p, newAgents(30*time.Second, log.NewNopLogger(), func(string, ...string) {}), []string{"validation", "merge"})
	if code, b := health200(t, svc); code != 200 || b.Status != Degraded {
		t.Fatalf("got %d %s, want 200 degraded", code, b.Status)
	}
}

func TestAgentsGoUnhealthyAfterTimeout(t *testing.T) {
	now := time.Unix(1000, 0)
	alerts := 0
	a := newAgents(30*time.Second, log.NewNopLogger(), func(string, ...string) { alerts++ })
	a.now = func() time.Time { return now }
	a.seen(&fedsyncv1.Heartbeat{AgentId: "ai-001", Region: "na"})
	a.seen(&fedsyncv1.Heartbeat{AgentId: "ai-002", Region: "eu"})
	now = now.Add(20 * time.Second)
	a.seen(&fedsyncv1.Heartbeat{AgentId: "ai-002", Region: "eu"})
	now = now.Add(15 * time.Second)
	if h, u := a.counts(); h != 1 || u != 1 {
		t.Fatalf("healthy %d unhealthy %d", h, u)
	}
	a.counts()
	if alerts != 1 {
		t.Fatalf("%d alerts for one silent agent, want 1", alerts)
	}
}
