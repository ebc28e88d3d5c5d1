package svcrun

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/fedsync/fedsync/libs/audit"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/discovery"
	"github.com/fedsync/fedsync/libs/endpoints"
	"github.com/fedsync/fedsync/libs/flagenv"
	"github.com/fedsync/fedsync/libs/guard"
	"github.com/fedsync/fedsync/libs/mtls"
	"github.com/fedsync/fedsync/libs/telemetry"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// RegionHealthPrefix prefixes the grpc.health.v1 entry that names an instance's region.
const RegionHealthPrefix = "fedsync.region/"

// EnvPrefix prefixes the environment variables that set flags: FEDSYNC_GRPC_ADDR.
const EnvPrefix = "FEDSYNC"

// Main is the whole of a service's main function: it parses flags and environment
// into a config, runs the service until SIGINT or SIGTERM, and exits non-zero on
// error.
func Main[C any](name string, parse func(fs *flag.FlagSet, args []string) (C, error), run func(ctx context.Context, cfg C) error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cfg, err := parse(fs, os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Parse registers fn's flags on fs, parses args and the environment, and validates.
func Parse(fs *flag.FlagSet, args []string, validate func() error) error {
	if err := flagenv.Parse(fs, EnvPrefix, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return validate()
}

// Runtime holds what a running service shares with svcrun.
type Runtime struct {
	Cfg       *Config
	Logger    log.Logger
	Metrics   *telemetry.Metrics
	Discovery *discovery.Discovery
	// Health is the grpc.health.v1 status of this instance; "" is the whole server.
	Health *health.Server
	// Audit is this instance's tamper-evident audit log (seed 6.3).
	Audit *audit.Log
	// Identity is the instance's mutual-TLS identity; nil when TLS is off.
	Identity *mtls.Identity
	// Guard counts recovered panics and reports configured limits
	// (fedsync_limit); services add their own limits to it.
	Guard *guard.Metrics

	stopTracing func(context.Context) error
	auditWorker func(context.Context) error
	workers     []worker
	closers     []func()
	peers       map[string]*discovery.Peer
	breakers    *prometheus.GaugeVec
	// ready are the conditions, besides listening, of serving requests.
	ready []readiness
}

type readiness struct {
	what string
	ok   func() bool
}

// ReadyWhen adds a condition of this instance's readiness: until ok, /healthz
// answers 503 naming what, grpc.health.v1 says NOT_SERVING and the instance
// is not registered in discovery.
func (r *Runtime) ReadyWhen(what string, ok func() bool) {
	r.ready = append(r.ready, readiness{what, ok})
}

// notReady names the first unmet readiness condition, or "".
func (r *Runtime) notReady() string {
	for _, c := range r.ready {
		if !c.ok() {
			return c.what
		}
	}
	return ""
}

type worker struct {
	name string
	fn   func(ctx context.Context) error
}

// New sets up logging, tracing, metrics and discovery for cfg.
func New(ctx context.Context, cfg *Config) (*Runtime, error) {
	if cfg.GCPercent != 0 {
		debug.SetGCPercent(cfg.GCPercent)
	}
	var logger log.Logger
	if cfg.LogFormat == "json" {
		logger = log.NewJSONLogger(log.NewSyncWriter(os.Stderr))
	} else {
		logger = log.NewLogfmtLogger(log.NewSyncWriter(os.Stderr))
	}
	logger = level.NewFilter(logger, level.Allow(level.ParseDefault(cfg.LogLevel, level.InfoValue())))
	logger = log.With(logger, "ts", log.DefaultTimestampUTC, "service", cfg.Name, "instance", cfg.Instance)
	stopTracing, err := telemetry.SetupTracing(ctx, cfg.Telemetry, cfg.Name, cfg.Instance)
	if err != nil {
		return nil, err
	}
	d, err := discovery.New(cfg.Discovery, logger)
	if err != nil {
		return nil, err
	}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
	}
	rt := &Runtime{
		Cfg: cfg, Logger: logger, Metrics: telemetry.NewMetrics(cfg.Name), Discovery: d,
		Health: health.NewServer(), stopTracing: stopTracing, peers: map[string]*discovery.Peer{},
	}
	rt.Guard = guard.NewMetrics(rt.Metrics.Registry)
	rt.Guard.Report(cfg.HTTP)
	if cfg.TLS.Enabled() {
		if rt.Identity, err = mtls.Load(cfg.TLS); err != nil {
			return nil, err
		}
	}
	if cfg.DataDir != "" {
		if rt.Audit, err = audit.OpenSegmented(filepath.Join(cfg.DataDir, "audit.log"), cfg.Name, cfg.Instance, logger, cfg.AuditSegments); err != nil {
			return nil, err
		}
		rt.auditWorker = rt.Audit.Run
		rt.Metrics.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "fedsync_audit_dropped_total", Help: "Audit records dropped because the audit log did not keep up (each is also logged).",
		}, func() float64 { return float64(rt.Audit.Dropped()) }))
	}
	return rt, nil
}

// auditHTTP records every request refused for authentication or authorization.
func (r *Runtime) auditHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ctx, actor := audit.WithActor(req.Context())
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, req.WithContext(ctx))
		if sw.status == http.StatusUnauthorized || sw.status == http.StatusForbidden {
			result := map[int]string{http.StatusUnauthorized: "denied:unauthenticated", http.StatusForbidden: "denied:permission_denied"}[sw.status]
			r.Audit.Record(ctx, audit.Record{Actor: actorOr(actor.ID, req.RemoteAddr), Action: "http " + req.Method, Data: req.URL.Path, Result: result})
		}
	})
}

func actorOr(id, fallback string) string {
	if id != "" {
		return id
	}
	return "anonymous@" + fallback
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController (WebSocket upgrades) reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// auditGRPC records every RPC refused for authentication or authorization.
func (r *Runtime) auditGRPC() []grpc.ServerOption {
	record := func(ctx context.Context, actor *audit.Actor, method string, err error) {
		switch status.Code(err) {
		case codes.Unauthenticated, codes.PermissionDenied:
			p, _ := peer.FromContext(ctx)
			from := ""
			if p != nil {
				from = p.Addr.String()
			}
			r.Audit.Record(ctx, audit.Record{Actor: actorOr(actor.ID, from), Action: "grpc", Data: method, Result: "denied:" + strings.ToLower(status.Code(err).String())})
		}
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			ctx, actor := audit.WithActor(ctx)
			resp, err := h(ctx, req)
			record(ctx, actor, info.FullMethod, err)
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			ctx, actor := audit.WithActor(ss.Context())
			err := h(srv, &ctxStream{ServerStream: ss, ctx: ctx})
			record(ctx, actor, info.FullMethod, err)
			return err
		}),
	}
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// Go runs fn in the background while the service runs. If it returns an error,
// the service stops with that error.
func (r *Runtime) Go(name string, fn func(ctx context.Context) error) {
	r.workers = append(r.workers, worker{name: name, fn: fn})
}

// OnClose runs fn after the servers stopped, in reverse order of registration.
func (r *Runtime) OnClose(fn func()) { r.closers = append(r.closers, fn) }

// Peer returns the caller of another service, created once.
func (r *Runtime) Peer(name string) (*discovery.Peer, error) {
	if p, ok := r.peers[name]; ok {
		return p, nil
	}
	opts := discovery.DefaultPeerOptions()
	opts.Credentials = r.ClientCredentials()
	if r.breakers == nil {
		r.breakers = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fedsync_breaker_state",
			Help: "Circuit breaker of each peer instance this service calls: 0 closed, 1 half-open, 2 open (seed 4.3)."}, []string{"breaker"})
		r.Metrics.Registry.MustRegister(r.breakers)
	}
	opts.BreakerState = func(b string, st int) { r.breakers.WithLabelValues(b).Set(float64(st)) }
	p, err := r.Discovery.NewPeer(name, opts)
	if err != nil {
		return nil, err
	}
	r.peers[name] = p
	r.OnClose(p.Close)
	return p, nil
}

// ClientCredentials are the transport credentials for calling other services:
// mutual TLS when configured, else plaintext.
func (r *Runtime) ClientCredentials() credentials.TransportCredentials {
	if r.Identity != nil {
		return r.Identity.ClientCredentials()
	}
	return insecure.NewCredentials()
}

// Instrument is the endpoint middleware of every service: it logs and measures
// each call of the endpoint named method. Pass it to MakeEndpoints.
func (r *Runtime) Instrument(method string) endpoint.Middleware {
	return endpoints.Instrument(method, r.Logger, r.Metrics)
}

// Verifier returns a token verifier whose keys come from authn's GetJWKS.
func (r *Runtime) Verifier() (*authtoken.Verifier, error) {
	authn, err := r.Peer("authn")
	if err != nil {
		return nil, err
	}
	src := func(ctx context.Context) ([]byte, error) {
		resp, err := discovery.Invoke(ctx, authn, func(ctx context.Context, cc grpc.ClientConnInterface) (*fedsyncv1.GetJWKSResponse, error) {
			return fedsyncv1.NewAuthnServiceClient(cc).GetJWKS(ctx, &fedsyncv1.GetJWKSRequest{})
		})
		return resp.GetJwks(), err
	}
	v := authtoken.NewVerifier(src, r.Cfg.Issuer, r.Cfg.Audience)
	v.Revocations = func(ctx context.Context) (map[string]int64, map[string]int64, error) {
		resp, err := discovery.Invoke(ctx, authn, func(ctx context.Context, cc grpc.ClientConnInterface) (*fedsyncv1.GetRevocationsResponse, error) {
			return fedsyncv1.NewAuthnServiceClient(cc).GetRevocations(ctx, &fedsyncv1.GetRevocationsRequest{})
		})
		return resp.GetDisabledClients(), resp.GetRevokedTokens(), err
	}
	r.Go("token revocations", func(ctx context.Context) error { return v.RunRevocations(ctx, r.Cfg.RevocationRefresh) })
	r.ReadyWhen("token keys from authn", v.Loaded)
	return v, nil
}

// Servers is what a service serves.
type Servers struct {
	// GRPCOptions are extra server options (interceptors).
	GRPCOptions []grpc.ServerOption
	// RegisterGRPC registers the service's gRPC services.
	RegisterGRPC func(s *grpc.Server)
	// HTTP serves the service's HTTP API; /metrics and /healthz are added.
	HTTP http.Handler
}

// Run serves until ctx ends or a worker fails, then shuts down in order: report
// NOT_SERVING, leave discovery, drain gRPC and HTTP, stop workers, close.
func (r *Runtime) Run(ctx context.Context, s Servers) error {
	logger := r.Logger
	grpcLis, err := net.Listen("tcp", r.Cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("listen grpc: %w", err)
	}
	var httpLis net.Listener
	if r.Cfg.HTTPAddr != "" {
		if httpLis, err = net.Listen("tcp", r.Cfg.HTTPAddr); err != nil {
			grpcLis.Close()
			return fmt.Errorf("listen http: %w", err)
		}
	}
	opts := telemetry.GRPCServerOptions()
	unaryRecover, streamRecover := guard.GRPCRecovery(r.Guard, logger)
	// Recovery first: it also catches a panic in the interceptors after it.
	opts = append(opts, grpc.ChainUnaryInterceptor(unaryRecover), grpc.ChainStreamInterceptor(streamRecover))
	if r.Identity != nil {
		opts = append(opts, grpc.Creds(r.Identity.ServerCredentials()))
	}
	if r.Audit != nil {
		opts = append(opts, r.auditGRPC()...)
	}
	if r.Identity != nil {
		// Which service may call which method (mtls.Policy); refusals are
		// audited by the interceptor above.
		authzUnary, authzStream := mtls.Authorize(mtls.Policy)
		opts = append(opts, grpc.ChainUnaryInterceptor(authzUnary), grpc.ChainStreamInterceptor(authzStream))
	}
	opts = append(opts, s.GRPCOptions...)
	gs := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(gs, r.Health)
	if s.RegisterGRPC != nil {
		s.RegisterGRPC(gs)
	}
	// Probes that cannot present a client certificate get grpc.health.v1 alone on
	// a plaintext port.
	var hs0 *grpc.Server
	if r.Cfg.HealthAddr != "" {
		hl, err := net.Listen("tcp", r.Cfg.HealthAddr)
		if err != nil {
			return fmt.Errorf("listen health: %w", err)
		}
		hs0 = grpc.NewServer()
		healthpb.RegisterHealthServer(hs0, r.Health)
		go hs0.Serve(hl)
		defer hs0.Stop()
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", r.Metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if what := r.notReady(); what != "" {
			http.Error(w, "starting: "+what, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	if r.Cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if s.HTTP != nil {
		h := s.HTTP
		if r.Audit != nil {
			h = r.auditHTTP(h)
		}
		if r.Cfg.Telemetry.OTLPEndpoint != "" {
			// A span per request only when spans go somewhere: unexported
			// ones would cost CPU on every push for nothing. Outside the
			// audit, so audit records carry the request's trace id.
			h = telemetry.HTTPHandler(r.Cfg.Name, h)
		}
		mux.Handle("/", h)
	}
	hs := r.Cfg.HTTP.Server(mux, r.Guard, logger)

	reg, err := r.Discovery.Registrar(discovery.ServiceInfo{
		TLS: r.Identity != nil, HealthAddr: r.Cfg.HealthAddr,
		Name: r.Cfg.Name, ID: r.Cfg.Instance, GRPCAddr: r.Cfg.Advertise(),
		Tags: []string{"region=" + r.Cfg.Region}, Meta: map[string]string{"region": r.Cfg.Region, "http": r.Cfg.HTTPAddr},
	})
	if err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	workCtx, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	g.Go(func() error {
		if err := gs.Serve(grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve grpc: %w", err)
		}
		return nil
	})
	if httpLis != nil {
		g.Go(func() error {
			serve := func() error { return hs.Serve(httpLis) }
			if r.Cfg.HTTPTLSCert != "" {
				hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
				serve = func() error { return hs.ServeTLS(httpLis, r.Cfg.HTTPTLSCert, r.Cfg.HTTPTLSKey) }
			}
			if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve http: %w", err)
			}
			return nil
		})
	}
	workersDone := make(chan struct{})
	workerErr := make(chan error, len(r.workers))
	go func() {
		defer close(workersDone)
		wg, _ := errgroup.WithContext(workCtx)
		for _, w := range r.workers {
			wg.Go(func() error {
				if err := w.fn(workCtx); err != nil && workCtx.Err() == nil {
					workerErr <- fmt.Errorf("%s: %w", w.name, err)
				}
				return nil
			})
		}
		wg.Wait()
	}()
	auditCtx, stopAudit := context.WithCancel(context.Background())
	auditDone := make(chan struct{})
	go func() {
		defer close(auditDone)
		if r.auditWorker != nil {
			r.auditWorker(auditCtx)
		}
	}()
	// Ready once every condition holds (token keys loaded, ...): only then
	// SERVING and in discovery.
	readyCtx, stopReady := context.WithCancel(gctx)
	readyDone := make(chan struct{})
	go func() {
		defer close(readyDone)
		for start, next := time.Now(), 10*time.Second; r.notReady() != ""; {
			if time.Since(start) > next {
				level.Warn(logger).Log("msg", "not ready yet", "waiting_for", r.notReady(), "waited", time.Since(start).Round(time.Second))
				next += 10 * time.Second
			}
			select {
			case <-readyCtx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		r.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		// The region travels as a health "service" so that health monitors can group
		// instances by region with grpc.health.v1 List alone.
		r.Health.SetServingStatus(RegionHealthPrefix+r.Cfg.Region, healthpb.HealthCheckResponse_SERVING)
		reg.Register()
		level.Info(logger).Log("msg", "serving", "grpc", grpcLis.Addr(), "http", r.Cfg.HTTPAddr, "region", r.Cfg.Region, "discovery", r.Cfg.Discovery.Mode)
	}()

	var runErr error
	select {
	case <-gctx.Done():
	case runErr = <-workerErr:
	}
	level.Info(logger).Log("msg", "shutting down")
	stopReady()
	<-readyDone
	r.Health.Shutdown()
	reg.Deregister()
	shutCtx, cancel := context.WithTimeout(context.Background(), r.Cfg.ShutdownTimeout)
	defer cancel()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-shutCtx.Done():
		gs.Stop()
	}
	if httpLis != nil {
		if err := hs.Shutdown(shutCtx); err != nil {
			hs.Close()
		}
	}
	stopWork()
	select {
	case <-workersDone:
	case <-shutCtx.Done():
		level.Warn(logger).Log("msg", "workers did not stop in time")
	}
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
	stopAudit() // after everything that records has stopped: the queue drains
	<-auditDone
	if err := r.stopTracing(shutCtx); err != nil {
		level.Warn(logger).Log("msg", "flush traces", "err", err)
	}
	if err := g.Wait(); err != nil && runErr == nil {
		runErr = err
	}
	if runErr != nil {
		level.Error(logger).Log("msg", "stopped with error", "err", runErr)
		return runErr
	}
	level.Info(logger).Log("msg", "stopped")
	return nil
}
