package svcrun

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/fedsync/fedsync/libs/audit"
	"github.com/fedsync/fedsync/libs/mtls"
)

// freeAddr picks a free port below Linux's ephemeral range, so the outgoing
// connections of tests running beside this one cannot take it before Run binds.
func freeAddr(t *testing.T) string {
	for i := 0; i < 1000; i++ {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

func testConfig(t *testing.T, args ...string) *Config {
	t.Helper()
	c := &Config{}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c.RegisterFlags(fs, "testsvc", freeAddr(t), freeAddr(t))
	base := []string{"-instance=testsvc-1", "-data-dir=" + t.TempDir(), "-health-addr=" + freeAddr(t), "-log-level=error"}
	if err := Parse(fs, append(base, args...), c.Validate); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitHTTP polls url until it answers, failing at once if Run ended (for
// instance because a port picked as free was taken meanwhile).
func waitHTTP(t *testing.T, url string, done <-chan error) *http.Response {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("Run ended before serving: %v", err)
		default:
		}
		if resp, err := client.Get(url); err == nil {
			return resp
		}
	}
	t.Fatalf("%s never answered", url)
	return nil
}

// TestRunServesProbesMetricsAndAuditsDenials runs a service with mutual TLS:
// plaintext health on the health port, mTLS on the gRPC port, /healthz and
// /metrics on HTTP, every 403 in the audit log, and a clean stop.
func TestRunServesProbesMetricsAndAuditsDenials(t *testing.T) {
	ca, err := mtls.OpenDevCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	id, _ := ca.Issue("testsvc")
	cfg := testConfig(t, "-tls.ca="+id.CA, "-tls.cert="+id.Cert, "-tls.key="+id.Key)
	rt, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- rt.Run(ctx, Servers{HTTP: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusForbidden)
		})})
	}()
	resp := waitHTTP(t, "http://"+cfg.HTTPAddr+"/healthz", done)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/healthz: %d", resp.StatusCode)
	}
	resp, _ = http.Get("http://" + cfg.HTTPAddr + "/metrics")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "fedsync_audit_dropped_total") || !strings.Contains(string(body), "go_goroutines") {
		t.Fatal("/metrics lacks the runtime's metrics")
	}
	resp, _ = http.Get("http://" + cfg.HTTPAddr + "/api/secret")
	resp.Body.Close()

	check := func(addr string) (healthpb.HealthCheckResponse_ServingStatus, error) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return 0, err
		}
		defer cc.Close()
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer ccancel()
		r, err := healthpb.NewHealthClient(cc).Check(cctx, &healthpb.HealthCheckRequest{})
		return r.GetStatus(), err
	}
	if st, err := check(cfg.HealthAddr); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("plaintext health port: %v %v", st, err)
	}
	if _, err := check(cfg.GRPCAddr); err == nil {
		t.Fatal("the gRPC port answered a plaintext client: mutual TLS is off")
	}
	other, _ := ca.Issue("prober")
	pid, _ := mtls.Load(other)
	cc, _ := grpc.NewClient(cfg.GRPCAddr, grpc.WithTransportCredentials(pid.ClientCredentials()))
	if r, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("mTLS health: %v %v", r, err)
	}
	cc.Close()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stop: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop within 10s")
	}
	logPath := filepath.Join(cfg.DataDir, "audit.log")
	if n, err := audit.VerifyFile(logPath); err != nil || n != 1 {
		t.Fatalf("audit log: %d records, %v", n, err)
	}
	raw, _ := os.ReadFile(logPath)
	if !strings.Contains(string(raw), `"result":"denied:permission_denied"`) || !strings.Contains(string(raw), "/api/secret") {
		t.Fatalf("the 403 was not audited: %s", raw)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, args := range [][]string{
		{"-log-level=loud"},
		{"-tls.ca=/x"},                   // one of three TLS files
		{"-http.tls-cert=/x"},            // cert without key
		{"-discovery=zookeeper"},         // unknown discovery
		{"-auth.revocation-refresh=1ms"}, // too often
		{"-otel.sample-ratio=2"},         // out of range
	} {
		c := &Config{}
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.RegisterFlags(fs, "svc", "127.0.0.1:0", "127.0.0.1:0")
		if err := Parse(fs, args, c.Validate); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}
