// Command devstack runs the fedsync mesh on one machine (make run): the embedded
// Kafka-protocol broker, every service as its own process, one edge per region,
// and simulated agents, printing a summary line every 5 seconds until Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/fedsync/fedsync/libs/flagenv"
	"github.com/fedsync/fedsync/tools/devstack"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	bin := fs.String("bin", ".fedsync/bin", "directory of the service binaries")
	state := fs.String("state", ".fedsync/dev", "directory for clients.json, logs, data and the embedded broker")
	types := fs.String("datatypes", "config/datatypes.yaml", "data-type registry file")
	kafka := fs.String("kafka", "", "external Kafka bootstrap addresses; empty runs the embedded broker")
	kafkaPort := fs.Int("kafka-port", 19092, "port of the embedded broker")
	brokerSync := fs.String("broker-sync", "group", "how the embedded broker makes acknowledged records durable: group (produce responses share a syncfs) or per-batch (fsync every batch)")
	edgeNA := fs.String("edge-na", "127.0.0.1:8080", "edge address of region na")
	edgeEU := fs.String("edge-eu", "127.0.0.1:8090", "edge address of region eu")
	agents := fs.Int("agents", 53, "simulated agents (env AGENTS)")
	rate := fs.Float64("agent-rate", 2, "deltas per second per agent")
	withOtel := fs.Bool("otel", false, "start Jaeger (built by `make jaeger`) beside the mesh and send every service's spans to it (make run OTEL=1)")
	jaegerUI := fs.String("jaeger-ui", "127.0.0.1:16686", "address of Jaeger's UI and query API, with -otel")
	jaegerOTLP := fs.String("jaeger-otlp", "127.0.0.1:4317", "address of Jaeger's OTLP/gRPC receiver, with -otel")
	if err := flagenv.Parse(fs, "FEDSYNC_DEVSTACK", os.Args[1:]); err != nil {
		return err
	}
	if v := os.Getenv("AGENTS"); v != "" {
		if _, err := fmt.Sscan(v, agents); err != nil {
			return fmt.Errorf("AGENTS=%q: want a number", v)
		}
	}
	if *agents < 0 || *agents > devstack.DevAgents {
		return fmt.Errorf("agents: must be between 0 and %d", devstack.DevAgents)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := devstack.Options{
		BinDir: *bin, StateDir: *state, KafkaPort: *kafkaPort, BrokerSync: *brokerSync, Progress: os.Stdout, DataTypes: *types,
		Edges: map[string]string{"na": *edgeNA, "eu": *edgeEU},
	}
	if *kafka != "" {
		opts.KafkaBrokers = strings.Split(*kafka, ",")
	}
	begin := time.Now()
	if *withOtel {
		j, err := devstack.StartJaeger(ctx, filepath.Join(*bin, "jaeger"), filepath.Join(*state, "jaeger"), *jaegerOTLP, *jaegerUI)
		if err != nil {
			return err
		}
		defer j.Stop()
		opts.OTLPEndpoint = j.OTLPAddr
		fmt.Printf("jaeger: UI and query API at http://%s (traces: http://%s/api/traces?service=validation), OTLP at %s\n", j.QueryAddr, j.QueryAddr, j.OTLPAddr)
	}
	stack, err := devstack.Start(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Printf("fedsync is up in %s: region na at %s, eu at %s; %d agents; Ctrl-C stops everything\n",
		time.Since(begin).Round(time.Millisecond), stack.EdgeURL("na"), stack.EdgeURL("eu"), *agents)

	stats := &devstack.Stats{}
	agentsDone := make(chan struct{})
	go func() {
		defer close(agentsDone)
		if *agents > 0 {
			stack.RunAgents(ctx, devstack.AgentOptions{Count: *agents, Rate: *rate, Heartbeat: 10 * time.Second}, stats)
		}
	}()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			fmt.Println("stopping...")
			stopBegin := time.Now()
			<-agentsDone
			stack.Stop()
			fmt.Printf("stopped in %s\n", time.Since(stopBegin).Round(time.Millisecond))
			return nil
		case <-tick.C:
			accepted, delivered, p99, errs := stats.Window()
			fmt.Printf("t=%3.0fs accepted=%.1f/s delivered=%.1f/s p99=%s errors=%s\n",
				time.Since(start).Seconds(), float64(accepted)/5, float64(delivered)/5, p99.Round(time.Millisecond), formatErrors(errs))
		}
	}
}

func formatErrors(errs map[string]int) string {
	if len(errs) == 0 {
		return "0"
	}
	var parts []string
	total := 0
	for code, n := range errs {
		parts = append(parts, fmt.Sprintf("%s:%d", code, n))
		total += n
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, " "))
}
