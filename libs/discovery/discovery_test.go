package discovery

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"
	consulapi "github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/fedsync/fedsync/libs/apierr"
)

// startHealthServer serves grpc.health.v1 on 127.0.0.1 and reports the status
// given for service "x".
func startHealthServer(t *testing.T, st healthpb.HealthCheckResponse_ServingStatus) (string, *grpc.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus("x", st)
	healthpb.RegisterHealthServer(s, h)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String(), s
}

func check(ctx context.Context, p *Peer) (healthpb.HealthCheckResponse_ServingStatus, error) {
	resp, err := Invoke(ctx, p, func(ctx context.Context, cc grpc.ClientConnInterface) (*healthpb.HealthCheckResponse, error) {
		return healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "x"})
	})
	return resp.GetStatus(), err
}

func TestPeerMapFlag(t *testing.T) {
	var m PeerMap
	if err := m.Set("statestore=127.0.0.1:1,127.0.0.1:2; merge=h:3"); err != nil {
		t.Fatal(err)
	}
	if got := m.String(); got != "merge=h:3;statestore=127.0.0.1:1,127.0.0.1:2" {
		t.Fatalf("got %q", got)
	}
	if err := m.Set("nonsense"); err == nil {
		t.Fatal("want an error for a peer without address")
	}
}

func TestStaticPeerSkipsDeadInstance(t *testing.T) {
	good, _ := startHealthServer(t, healthpb.HealthCheckResponse_SERVING)
	d, _ := New(Config{Mode: ModeStatic, Peers: PeerMap{"x": {"127.0.0.1:1", good}}}, log.NewNopLogger())
	p, err := d.NewPeer("x", PeerOptions{Attempts: 3, Timeout: 5 * time.Second, AttemptTimeout: 200 * time.Millisecond, BreakerFailures: 5, BreakerOpen: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := 0; i < 6; i++ {
		st, err := check(context.Background(), p)
		if err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("call %d: %v %v", i, st, err)
		}
	}
}

// TestDeadInstanceCostsNoMoreThanConnectWait: with the default options
// (3 s per attempt) a call that lands on an instance that refuses
// connections moves to another at once, not after the attempt's whole
// budget; the caller's own deadline (shorter than the attempt's, as when
// one service's call is part of another's) is never spent waiting for it.
// Skipping the instance does not open its breaker: repeated restarts of
// replicas once opened every replica's breaker together, and the peer was
// shut out for the breaker's minute.
func TestDeadInstanceCostsNoMoreThanConnectWait(t *testing.T) {
	good, _ := startHealthServer(t, healthpb.HealthCheckResponse_SERVING)
	d, _ := New(Config{Mode: ModeStatic, Peers: PeerMap{"x": {"127.0.0.1:1", good}}}, log.NewNopLogger())
	opts := DefaultPeerOptions()
	opened := make(chan string, 4)
	opts.BreakerState = func(b string, st int) {
		if st == 2 {
			opened <- b
		}
	}
	p, err := d.NewPeer("x", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := 0; i < 12; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		st, err := check(ctx, p)
		cancel()
		if err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("call %d: %v %v", i, st, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("call %d took %v: it waited for the dead instance", i, took)
		}
	}
	select {
	case b := <-opened:
		t.Fatalf("breaker %s opened for an instance that was skipped, not called", b)
	default:
	}
}

func TestBusinessErrorsDoNotTripBreaker(t *testing.T) {
	addr, _ := startHealthServer(t, healthpb.HealthCheckResponse_SERVING)
	d, _ := New(Config{Mode: ModeStatic, Peers: PeerMap{"x": {addr}}}, log.NewNopLogger())
	p, _ := d.NewPeer("x", PeerOptions{Attempts: 1, Timeout: 5 * time.Second, BreakerFailures: 2, BreakerOpen: time.Minute})
	defer p.Close()
	for i := 0; i < 5; i++ {
		// An unknown health service is NOT_FOUND: an answer, not an outage.
		_, err := Invoke(context.Background(), p, func(ctx context.Context, cc grpc.ClientConnInterface) (*healthpb.HealthCheckResponse, error) {
			return healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"})
		})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("call %d: want NotFound passed through, got %v", i, err)
		}
	}
	if st, err := check(context.Background(), p); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("breaker tripped by answers: %v %v", st, err)
	}
}

// TestInternalErrorsDoNotTripBreaker: INTERNAL is one request failing (a
// panic recovered, a poison input), not the peer: it is passed back and the
// breaker stays closed for the requests that work.
func TestInternalErrorsDoNotTripBreaker(t *testing.T) {
	addr := startInterceptedHealthServer(t, func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if req.(*healthpb.HealthCheckRequest).GetService() == "poison" {
			return nil, status.Error(codes.Internal, "handler failed")
		}
		return h(ctx, req)
	})
	d, _ := New(Config{Mode: ModeStatic, Peers: PeerMap{"x": {addr}}}, log.NewNopLogger())
	p, _ := d.NewPeer("x", PeerOptions{Attempts: 1, Timeout: 5 * time.Second, BreakerFailures: 2, BreakerOpen: time.Minute})
	defer p.Close()
	for i := 0; i < 5; i++ {
		_, err := Invoke(context.Background(), p, func(ctx context.Context, cc grpc.ClientConnInterface) (*healthpb.HealthCheckResponse, error) {
			return healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "poison"})
		})
		if status.Code(err) != codes.Internal {
			t.Fatalf("call %d: want INTERNAL passed through, got %v", i, err)
		}
	}
	if st, err := check(context.Background(), p); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("breaker tripped by INTERNAL answers: %v %v", st, err)
	}
}

func TestBreakerOpensAfterConsecutiveFailures(t *testing.T) {
	d, _ := New(Config{Mode: ModeStatic, Peers: PeerMap{"x": {"127.0.0.1:1"}}}, log.NewNopLogger())
	p, _ := d.NewPeer("x", PeerOptions{Attempts: 1, Timeout: 2 * time.Second, AttemptTimeout: 100 * time.Millisecond, BreakerFailures: 3, BreakerOpen: time.Minute})
	defer p.Close()
	var last error
	for i := 0; i < 5; i++ {
		_, last = check(context.Background(), p)
		if apierr.As(last).Code != apierr.Unavailable {
			t.Fatalf("call %d: want unavailable, got %v", i, last)
		}
	}
	if !strings.Contains(last.Error(), "circuit breaker is open") {
		t.Fatalf("breaker did not open: %v", last)
	}
}

// fakeConsul answers the Consul agent and health endpoints the adapter uses, the
// way a Consul agent does, including blocking queries on X-Consul-Index.
type fakeConsul struct {
	mu       sync.Mutex
	index    uint64
	services map[string]consulapi.AgentServiceRegistration
	changed  chan struct{}
}

func newFakeConsul(t *testing.T) (*fakeConsul, string) {
	f := &fakeConsul{index: 1, services: map[string]consulapi.AgentServiceRegistration{}, changed: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/agent/service/register", func(w http.ResponseWriter, r *http.Request) {
		var reg consulapi.AgentServiceRegistration
		if err := json.NewDecoder(r.Body).Decode(&reg); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		f.update(func() { f.services[reg.ID] = reg })
	})
	mux.HandleFunc("PUT /v1/agent/service/deregister/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.update(func() { delete(f.services, r.PathValue("id")) })
	})
	mux.HandleFunc("GET /v1/health/service/{name}", func(w http.ResponseWriter, r *http.Request) {
		var wait uint64
		if idx := r.URL.Query().Get("index"); idx != "" {
			wait, _ = strconv.ParseUint(idx, 10, 64)
		}
		deadline := time.After(2 * time.Second)
		f.mu.Lock()
	wait:
		for f.index <= wait {
			ch := f.changed
			f.mu.Unlock()
			select {
			case <-ch:
				f.mu.Lock()
			case <-deadline: // a blocking query that times out answers with the current index
				f.mu.Lock()
				break wait
			case <-r.Context().Done():
				return
			}
		}
		var entries []*consulapi.ServiceEntry
		for _, s := range f.services {
			if s.Name != r.PathValue("name") {
				continue
			}
			entries = append(entries, &consulapi.ServiceEntry{
				Node:    &consulapi.Node{Node: "n1", Address: "127.0.0.1"},
				Service: &consulapi.AgentService{ID: s.ID, Service: s.Name, Address: s.Address, Port: s.Port, Tags: s.Tags},
				Checks:  consulapi.HealthChecks{{Status: consulapi.HealthPassing, ServiceID: s.ID}},
			})
		}
		idx := f.index
		f.mu.Unlock()
		w.Header().Set("X-Consul-Index", strconv.FormatUint(idx, 10))
		json.NewEncoder(w).Encode(entries)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return f, strings.TrimPrefix(srv.URL, "http://")
}

func (f *fakeConsul) update(fn func()) {
	f.mu.Lock()
	fn()
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func (f *fakeConsul) registration(id string) (consulapi.AgentServiceRegistration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.services[id]
	return r, ok
}

func TestConsulRegistrationAndDiscovery(t *testing.T) {
	fake, consulAddr := newFakeConsul(t)
	addr, _ := startHealthServer(t, healthpb.HealthCheckResponse_SERVING)
	d, err := New(Config{Mode: ModeConsul, ConsulAddr: consulAddr, CheckInterval: 10 * time.Second}, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	reg, err := d.Registrar(ServiceInfo{Name: "x", ID: "x-1", GRPCAddr: addr, Tags: []string{"region=na"}})
	if err != nil {
		t.Fatal(err)
	}
	reg.Register()
	got, ok := fake.registration("x-1")
	if !ok {
		t.Fatal("instance was not registered")
	}
	if got.Check == nil || got.Check.GRPC != addr || got.Check.Interval != "10s" || got.Check.DeregisterCriticalServiceAfter == "" {
		t.Fatalf("registration lacks the gRPC health check: %+v", got.Check)
	}

	p, err := d.NewPeer("x", PeerOptions{Attempts: 5, Timeout: 5 * time.Second, BreakerFailures: 5, BreakerOpen: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if st, err := check(context.Background(), p); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("call through consul discovery: %v %v", st, err)
	}

	reg.Deregister()
	if _, ok := fake.registration("x-1"); ok {
		t.Fatal("instance still registered after Deregister")
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Instances() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := p.Instances(); n != 0 {
		t.Fatalf("peer still sees %d instances after deregistration", n)
	}
}

// TestRealConsul runs against a real Consul agent when CONSUL_HTTP_ADDR is set.
func TestRealConsul(t *testing.T) {
	consulAddr := os.Getenv("CONSUL_HTTP_ADDR")
	if consulAddr == "" {
		t.Skip("CONSUL_HTTP_ADDR is not set: skipping the real-Consul test (set it to a Consul agent, e.g. 127.0.0.1:8500, to run it)")
	}
	consulAddr = strings.TrimPrefix(strings.TrimPrefix(consulAddr, "http://"), "https://")
	addr, _ := startHealthServer(t, healthpb.HealthCheckResponse_SERVING)
	d, err := New(Config{Mode: ModeConsul, ConsulAddr: consulAddr, CheckInterval: time.Second}, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	name := "fedsync-test-" + strings.ReplaceAll(time.Now().Format("150405.000"), ".", "")
	reg, _ := d.Registrar(ServiceInfo{Name: name, ID: name + "-1", GRPCAddr: addr})
	reg.Register()
	defer reg.Deregister()
	p, _ := d.NewPeer(name, PeerOptions{Attempts: 100, Timeout: 30 * time.Second, BreakerFailures: 100, BreakerOpen: time.Second})
	defer p.Close()
	// The instance becomes visible once Consul's gRPC check passed.
	if st, err := check(context.Background(), p); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("call through real consul: %v %v", st, err)
	}
}

// TestPeerWaitsForRestartingInstance: a peer that starts listening shortly after
// the call began is waited for instead of failing the call or tripping the breaker.
func TestPeerWaitsForRestartingInstance(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	d, _ := New(Config{Mode: ModeStatic, Peers: PeerMap{"x": {addr}}}, log.NewNopLogger())
	p, _ := d.NewPeer("x", DefaultPeerOptions())
	defer p.Close()
	go func() {
		time.Sleep(300 * time.Millisecond)
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return
		}
		s := grpc.NewServer()
		h := health.NewServer()
		h.SetServingStatus("x", healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(s, h)
		go s.Serve(lis)
		t.Cleanup(s.Stop)
	}()
	if st, err := check(context.Background(), p); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("call to a starting instance: %v %v", st, err)
	}
}

func TestConsulCheckUsesHealthPortWithTLS(t *testing.T) {
	fake, consulAddr := newFakeConsul(t)
	d, _ := New(Config{Mode: ModeConsul, ConsulAddr: consulAddr, CheckInterval: 10 * time.Second}, log.NewNopLogger())
	reg, _ := d.Registrar(ServiceInfo{Name: "x", ID: "x-2", GRPCAddr: "10.0.0.7:19102", TLS: true, HealthAddr: "0.0.0.0:19302"})
	reg.Register()
	got, _ := fake.registration("x-2")
	if got.Check.GRPC != "10.0.0.7:19302" || got.Check.GRPCUseTLS {
		t.Fatalf("check %+v: want plaintext gRPC health on the advertised host's health port", got.Check)
	}
	reg2, _ := d.Registrar(ServiceInfo{Name: "x", ID: "x-3", GRPCAddr: "10.0.0.8:19102", TLS: true})
	reg2.Register()
	got, _ = fake.registration("x-3")
	if got.Check.GRPC != "10.0.0.8:19102" || !got.Check.GRPCUseTLS {
		t.Fatalf("check %+v: without a health port, TLS on the gRPC port", got.Check)
	}
}

// TestAnsweredUnavailableDoesNotTripBreaker: an instance that answers
// "unavailable" itself (its own dependency is away, a Raft election) is up.
// The call is retried on another instance, but the answering instance's
// breaker stays closed, so it takes calls again as soon as it can serve them
// instead of being shut out for BreakerOpen.
func TestAnsweredUnavailableDoesNotTripBreaker(t *testing.T) {
	var away atomic.Bool
	away.Store(true)
	addr := startInterceptedHealthServer(t, func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if away.Load() {
			return nil, apierr.New(apierr.Unavailable, "my own peer is away")
		}
		return h(ctx, req)
	})
	d, _ := New(Config{Mode: ModeStatic, Peers: PeerMap{"x": {addr}}}, log.NewNopLogger())
	opts := DefaultPeerOptions()
	opts.Attempts, opts.BreakerFailures = 2, 2
	p, _ := d.NewPeer("x", opts)
	defer p.Close()
	for i := 0; i < 5; i++ {
		if _, err := check(context.Background(), p); apierr.As(err).Code != apierr.Unavailable {
			t.Fatalf("call %d: want the unavailable answer, got %v", i, err)
		}
	}
	away.Store(false)
	if st, err := check(context.Background(), p); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("breaker tripped by unavailable answers: %v %v", st, err)
	}
}

// startInterceptedHealthServer serves grpc.health.v1 ("x" SERVING) behind
// interceptor on 127.0.0.1 until the test ends, and returns its address.
func startInterceptedHealthServer(t *testing.T, interceptor grpc.UnaryServerInterceptor) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.UnaryInterceptor(interceptor))
	h := health.NewServer()
	h.SetServingStatus("x", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, h)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}
