// Package guard holds the limits every fedsync HTTP server applies to its
// clients, trusted or not: header, body and idle timeouts, a header size
// bound, and panic recovery. The edges add a body size bound and the
// classification of broken request bodies (see Edge).
package guard

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/fedsync/fedsync/libs/apierr"
)

// Limits bound what one HTTP client may hold of a server.
type Limits struct {
	// ReadHeader is the longest a client may take to send its request
	// headers.
	ReadHeader time.Duration
	// Body is the longest a client may take to send a request body (from the
	// end of its headers). WebSocket upgrades are exempt: their connection
	// lives on after the request.
	Body time.Duration
	// Idle is how long a kept-alive connection may wait for its next request.
	Idle time.Duration
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes int
}

// Defaults are the limits every server starts from.
var Defaults = Limits{ReadHeader: 10 * time.Second, Body: 30 * time.Second, Idle: 120 * time.Second, MaxHeaderBytes: 64 << 10}

// RegisterFlags registers the limits as -http.* flags with Defaults.
func (l *Limits) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&l.ReadHeader, "http.header-timeout", Defaults.ReadHeader, "longest a client may take to send its request headers")
	fs.DurationVar(&l.Body, "http.body-timeout", Defaults.Body, "longest a client may take to send a request body (WebSocket streams are exempt)")
	fs.DurationVar(&l.Idle, "http.idle-timeout", Defaults.Idle, "longest a kept-alive connection may stay idle")
	fs.IntVar(&l.MaxHeaderBytes, "http.max-header-bytes", Defaults.MaxHeaderBytes, "largest request line and headers")
}

// Validate reports the first invalid limit.
func (l *Limits) Validate() error {
	if l.ReadHeader <= 0 || l.Body <= 0 || l.Idle <= 0 {
		return fmt.Errorf("http.header-timeout, http.body-timeout and http.idle-timeout must be positive")
	}
	if l.MaxHeaderBytes < 4096 {
		return fmt.Errorf("http.max-header-bytes: must be at least 4096")
	}
	return nil
}

// Metrics count what the guard did.
type Metrics struct {
	// Panics counts handler panics recovered, by transport.
	Panics *prometheus.CounterVec
	// Limit reports each configured limit, by name (seconds or bytes).
	Limit *prometheus.GaugeVec
}

// NewMetrics registers fedsync_panics_recovered_total and fedsync_limit on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Panics: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedsync_panics_recovered_total",
			Help: "Panics in request handlers that were recovered and answered 500 internal (HTTP) or INTERNAL (gRPC)."}, []string{"transport"}),
		Limit: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fedsync_limit",
			Help: "Configured limits of this process (seconds for durations, else a count or bytes)."}, []string{"limit"}),
	}
	reg.MustRegister(m.Panics, m.Limit)
	return m
}

// Report sets fedsync_limit for the HTTP limits.
func (m *Metrics) Report(l Limits) {
	m.Limit.WithLabelValues("http_header_timeout_seconds").Set(l.ReadHeader.Seconds())
	m.Limit.WithLabelValues("http_body_timeout_seconds").Set(l.Body.Seconds())
	m.Limit.WithLabelValues("http_idle_timeout_seconds").Set(l.Idle.Seconds())
	m.Limit.WithLabelValues("http_max_header_bytes").Set(float64(l.MaxHeaderBytes))
}

// Server returns an http.Server for h with the limits applied and panics
// recovered (counted in m, logged with their stack).
func (l Limits) Server(h http.Handler, m *Metrics, logger log.Logger) *http.Server {
	return &http.Server{
		Handler:           l.Middleware(h, m, logger),
		ReadHeaderTimeout: l.ReadHeader,
		IdleTimeout:       l.Idle,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}

// IsUpgrade reports whether r asks to switch protocols (a WebSocket handshake).
func IsUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

// Middleware sets the body deadline of each request, refuses a path or query
// that is not valid UTF-8 once decoded (400), and recovers a panicking handler
// with 500 internal.
func (l Limits) Middleware(next http.Handler, m *Metrics, logger log.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := checkURL(r); err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		if !IsUpgrade(r) && l.Body > 0 && (r.ContentLength != 0 || len(r.TransferEncoding) > 0) {
			// A slow body ends with a read error, answered 400 or 408 by the
			// handler reading it; the connection is then closed. Requests
			// without a body (a long-lived event stream) get no deadline.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(l.Body))
		}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				if m != nil {
					m.Panics.WithLabelValues("http").Inc()
				}
				if logger != nil {
					level.Error(logger).Log("msg", "panic in HTTP handler recovered", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				}
				apierr.WriteHTTP(w, apierr.New(apierr.Internal, "The server failed on this request; it has been logged."))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// checkURL refuses a request whose decoded path or query parameters are not
// valid UTF-8: an id or prefix must never be stored or matched as raw bytes.
func checkURL(r *http.Request) error {
	bad := !utf8.ValidString(r.URL.Path)
	if !bad && r.URL.RawQuery != "" {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return apierr.New(apierr.InvalidArgument, "The query string is malformed: %v.", err)
		}
		for k, vs := range q {
			bad = bad || !utf8.ValidString(k)
			for _, v := range vs {
				bad = bad || !utf8.ValidString(v)
			}
		}
	}
	if bad {
		return apierr.New(apierr.InvalidArgument, "The request path or query is not valid UTF-8.").WithDetail("reason", "invalid_utf8")
	}
	return nil
}

// GRPCRecovery returns interceptors that turn a panicking gRPC handler into
// status INTERNAL, counted in m and logged with its stack, instead of a
// crashed process.
func GRPCRecovery(m *Metrics, logger log.Logger) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	recovered := func(method string, v any, err *error) {
		if m != nil {
			m.Panics.WithLabelValues("grpc").Inc()
		}
		if logger != nil {
			level.Error(logger).Log("msg", "panic in gRPC handler recovered", "method", method, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
		*err = apierr.New(apierr.Internal, "The server failed on this request; it has been logged.")
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if v := recover(); v != nil {
				resp = nil
				recovered(info.FullMethod, v, &err)
			}
		}()
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer func() {
			if v := recover(); v != nil {
				recovered(info.FullMethod, v, &err)
			}
		}()
		return h(srv, ss)
	}
	return unary, stream
}
