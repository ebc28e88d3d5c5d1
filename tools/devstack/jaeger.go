package devstack

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Jaeger is a Jaeger v2 all-in-one (OTLP receiver, in-memory storage, query
// API) run beside the mesh, so traces can be looked at and tested in a real
// backend. Its binary is built by `make jaeger` (tools/jaeger pins it).
type Jaeger struct {
	// OTLPAddr is the OTLP/gRPC receiver, what services get as -otel.endpoint.
	OTLPAddr string
	// QueryAddr serves Jaeger's query API (/api/traces, /api/services) and UI.
	QueryAddr string

	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// jaegerConfig is an OpenTelemetry-collector configuration of Jaeger v2:
// OTLP/gRPC in, memory storage, the query service; everything on loopback.
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: %[2]s
    grpc:
      endpoint: %[3]s
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %[1]s
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// StartJaeger runs binary with its configuration and log in dir, listening on
// otlpAddr (OTLP/gRPC) and queryAddr (HTTP query API); empty addresses take
// free loopback ports. It returns once the query API answers.
func StartJaeger(ctx context.Context, binary, dir, otlpAddr, queryAddr string) (*Jaeger, error) {
	if _, err := os.Stat(binary); err != nil {
		return nil, fmt.Errorf("jaeger binary %s: %w (build it with `make jaeger`)", binary, err)
	}
	var err error
	addrs := []*string{&otlpAddr, &queryAddr}
	for _, a := range addrs {
		if *a == "" {
			port, err := FreePort()
			if err != nil {
				return nil, err
			}
			*a = fmt.Sprintf("127.0.0.1:%d", port)
		}
	}
	grpcPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "jaeger.yaml")
	cfg := fmt.Sprintf(jaegerConfig, otlpAddr, queryAddr, fmt.Sprintf("127.0.0.1:%d", grpcPort))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o640); err != nil {
		return nil, err
	}
	j := &Jaeger{OTLPAddr: otlpAddr, QueryAddr: queryAddr, log: filepath.Join(dir, "jaeger.log"), done: make(chan struct{})}
	logf, err := os.OpenFile(j.log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return nil, err
	}
	j.cmd = exec.Command(binary, "--config", "file:"+cfgPath)
	j.cmd.Stdout, j.cmd.Stderr = logf, logf
	j.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := j.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start jaeger: %w", err)
	}
	go func() {
		j.cmd.Wait()
		logf.Close()
		close(j.done)
	}()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-j.done:
			return nil, fmt.Errorf("jaeger exited during start-up; last log lines:\n%s", tail(j.log, 20))
		case <-ctx.Done():
			j.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := client.Get("http://" + queryAddr + "/api/services")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return j, nil
			}
		}
	}
	j.Stop()
	return nil, errors.New("jaeger did not answer on " + queryAddr + " within 30s; log: " + j.log)
}

// Stop ends Jaeger (its traces are in memory and go with it).
func (j *Jaeger) Stop() {
	if j.cmd.Process == nil {
		return
	}
	j.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.done:
	case <-time.After(5 * time.Second):
		j.cmd.Process.Kill()
		<-j.done
	}
}
