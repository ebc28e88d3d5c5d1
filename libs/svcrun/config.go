// Package svcrun is the runtime every fedsync service shares: the common
// configuration, logging, tracing, metrics, the gRPC server with grpc.health.v1,
// the HTTP server with /metrics, registration in discovery, background workers,
// and an orderly shutdown. A service supplies its handlers; svcrun runs them.
package svcrun

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/fedsync/fedsync/libs/audit"
	"github.com/fedsync/fedsync/libs/discovery"
	"github.com/fedsync/fedsync/libs/guard"
	"github.com/fedsync/fedsync/libs/mtls"
	"github.com/fedsync/fedsync/libs/telemetry"
)

// Config is the part of every service's configuration that svcrun uses.
type Config struct {
	Name          string
	Instance      string
	Region        string
	GRPCAddr      string
	HTTPAddr      string
	AdvertiseAddr string
	HealthAddr    string
	DataDir       string
	Pprof         bool
	LogLevel      string
	LogFormat     string
	// Issuer and Audience are what every verified token must carry.
	Issuer          string
	Audience        string
	ShutdownTimeout time.Duration
	// RevocationRefresh bounds how long a disabled client's or revoked token's
	// requests still pass after the revocation.
	RevocationRefresh time.Duration
	Discovery         discovery.Config
	Telemetry         telemetry.Config
	// TLS is the instance's identity for mutual TLS between services.
	TLS mtls.Config
	// GCPercent is the garbage collector's GOGC.
	GCPercent int
	// HTTPTLSCert and HTTPTLSKey make the HTTP server (the public edge) serve TLS.
	HTTPTLSCert, HTTPTLSKey string
	// HTTP bounds what one client may hold of the HTTP server.
	HTTP guard.Limits
	// AuditSegments is how the audit log rotates and what it keeps.
	AuditSegments audit.Segments
}

// The -gc-percent flag: Measured with fedbench steady (same runs, two each),
// GOGC 400 saved about 6 % of the CPU per committed delta (1.04-1.12 ms against
// 1.08-1.26) but raised the services' resident memory from about 320 MiB to
// 750 MiB in all, a bad trade for the broadcasters that hold 10,000
// subscribers; so the default leaves Go's own setting (GOGC) alone.

// RegisterFlags registers the common flags with the service's default addresses.
func (c *Config) RegisterFlags(fs *flag.FlagSet, name, grpcAddr, httpAddr string) {
	c.Name = name
	host, _ := os.Hostname()
	fs.StringVar(&c.Instance, "instance", name+"-"+host, "unique id of this instance (Consul service id)")
	fs.StringVar(&c.Region, "region", "na", "region label of this instance (na, eu, ...)")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", grpcAddr, "address the gRPC server listens on")
	fs.StringVar(&c.HTTPAddr, "http-addr", httpAddr, "address the HTTP server (API and /metrics) listens on")
	fs.StringVar(&c.HealthAddr, "health-addr", "", "optional plaintext gRPC listener serving only grpc.health.v1, for probes that cannot do mutual TLS (Kubernetes, Consul)")
	fs.StringVar(&c.AdvertiseAddr, "advertise-addr", "", "gRPC address other services reach this instance at (default: -grpc-addr)")
	fs.StringVar(&c.DataDir, "data-dir", ".fedsync/data/"+name, "directory for this instance's durable files")
	fs.Int64Var(&c.AuditSegments.MaxBytes, "audit.segment-bytes", 64<<20, "the audit log rotates into a new segment (audit.<first seq>.log) past this size; the hash chain goes on across segments (0: never)")
	fs.DurationVar(&c.AuditSegments.Retention, "audit.retention", 90*24*time.Hour, "audit segments older than this are deleted at the next rotation, the newest always kept (0: keep all)")
	fs.IntVar(&c.GCPercent, "gc-percent", 0, "Go's GOGC for this process: heap growth in percent before a collection (higher trades memory for a little CPU); -1 turns the collector off; 0 leaves GOGC (default 100)")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve Go's /debug/pprof/ profiles on the HTTP port (keep off on public ports)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "logfmt", "logfmt or json")
	fs.StringVar(&c.Issuer, "auth.issuer", "fedsync-authn", "issuer (iss) of accepted tokens")
	fs.StringVar(&c.Audience, "auth.audience", "fedsync", "audience (aud) of accepted tokens")
	fs.DurationVar(&c.RevocationRefresh, "auth.revocation-refresh", 5*time.Second, "interval between loads of disabled clients and revoked tokens")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 5*time.Second, "longest a graceful shutdown waits for in-flight work")
	c.Discovery.RegisterFlags(fs)
	c.Telemetry.RegisterFlags(fs)
	c.TLS.RegisterFlags(fs)
	c.HTTP.RegisterFlags(fs)
	fs.StringVar(&c.HTTPTLSCert, "http.tls-cert", "", "PEM certificate for serving HTTPS on -http-addr (with -http.tls-key)")
	fs.StringVar(&c.HTTPTLSKey, "http.tls-key", "", "PEM private key for serving HTTPS on -http-addr")
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch {
	case c.AuditSegments.MaxBytes != 0 && c.AuditSegments.MaxBytes < 1<<20:
		return errors.New("audit.segment-bytes: 0 (never rotate) or at least 1 MiB")
	case c.AuditSegments.Retention < 0:
		return errors.New("audit.retention: must not be negative")
	case c.Instance == "":
		return errors.New("instance: must not be empty")
	case c.Region == "":
		return errors.New("region: must not be empty")
	case c.GRPCAddr == "":
		return errors.New("grpc-addr: must not be empty")
	case c.LogLevel != "debug" && c.LogLevel != "info" && c.LogLevel != "warn" && c.LogLevel != "error":
		return fmt.Errorf("log-level: must be debug, info, warn or error, got %q", c.LogLevel)
	case c.LogFormat != "logfmt" && c.LogFormat != "json":
		return fmt.Errorf("log-format: must be logfmt or json, got %q", c.LogFormat)
	case c.RevocationRefresh < 100*time.Millisecond:
		return errors.New("auth.revocation-refresh: must be at least 100ms")
	case c.ShutdownTimeout <= 0:
		return errors.New("shutdown-timeout: must be positive")
	}
	if (c.HTTPTLSCert == "") != (c.HTTPTLSKey == "") {
		return errors.New("http.tls-cert and http.tls-key: give both or neither")
	}
	if err := c.HTTP.Validate(); err != nil {
		return err
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	if err := c.Discovery.Validate(); err != nil {
		return err
	}
	return c.Telemetry.Validate()
}

// Advertise returns the gRPC address others reach this instance at.
func (c *Config) Advertise() string {
	if c.AdvertiseAddr != "" {
		return c.AdvertiseAddr
	}
	return c.GRPCAddr
}
