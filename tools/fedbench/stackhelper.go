package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/fedsync/fedsync/libs/mtls"
	"github.com/fedsync/fedsync/tools/devstack"
)

// The fedsync mesh runs in a child process of fedbench ("fedbench __stack"), so
// that the embedded broker and the edges (which live in the devstack process)
// are not counted as fedbench's own CPU and memory, and so that the mesh gets
// free ports instead of make run's fixed ones. The child prints one line
// starting with stackReadyPrefix and a JSON stackInfo, then runs until SIGINT or
// SIGTERM and stops everything it started.

const stackReadyPrefix = "FEDBENCH_STACK_READY "

type endpoint struct {
	GRPC string `json:"grpc"`
	HTTP string `json:"http"`
}

type stackInfo struct {
	Edges    map[string]string   `json:"edges"`    // region -> http://host:port
	Services map[string]endpoint `json:"services"` // instance -> addresses
	Clients  []devstack.Client   `json:"clients"`
	Brokers  []string            `json:"brokers"`
	// TLS is a federation client certificate for the services' gRPC ports
	// (mutual TLS); empty when the mesh serves plaintext gRPC.
	TLS mtls.Config `json:"tls"`
}

func stackMain(args []string) error {
	fs := flag.NewFlagSet("fedbench __stack", flag.ContinueOnError)
	bin := fs.String("bin", ".fedsync/bin", "service binaries")
	state := fs.String("state", "", "state directory")
	types := fs.String("datatypes", "config/datatypes.yaml", "data-type registry")
	kafka := fs.String("kafka", "", "external Kafka bootstrap addresses; empty runs the embedded broker")
	prefix := fs.String("topic-prefix", "", "topic and group prefix on an external Kafka")
	replicas := fs.Int("statestore-replicas", 3, "size of the statestore's Raft group")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *state == "" {
		return errors.New("-state is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	edges := map[string]string{}
	for _, r := range []string{"na", "eu"} {
		p, err := freePort()
		if err != nil {
			return err
		}
		edges[r] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	opts := devstack.Options{BinDir: *bin, StateDir: *state, DataTypes: *types, Edges: edges, FreePorts: true, Progress: os.Stderr,
		KafkaTopicPrefix: *prefix, StateStoreReplicas: *replicas}
	if *kafka != "" {
		opts.KafkaBrokers = strings.Split(*kafka, ",")
	}
	st, err := devstack.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer st.Stop()
	info := stackInfo{Edges: map[string]string{}, Clients: st.Clients, Brokers: st.Brokers}
	for r := range edges {
		info.Edges[r] = st.EdgeURL(r)
	}
	if info.Services, err = serviceAddrs(filepath.Join(*state, "logs")); err != nil {
		return err
	}
	if info.TLS, err = st.ClientIdentity("fedbench"); err != nil {
		return fmt.Errorf("client certificate for gRPC: %w", err)
	}
	b, _ := json.Marshal(info)
	fmt.Printf("%s%s\n", stackReadyPrefix, b)
	<-ctx.Done()
	return nil
}

var servingLine = regexp.MustCompile(`msg=serving grpc=(\S+) http=(\S+)`)

// serviceAddrs reads each instance's addresses from the line svcrun logs when it
// starts serving.
func serviceAddrs(logDir string) (map[string]endpoint, error) {
	files, err := filepath.Glob(filepath.Join(logDir, "*.log"))
	if err != nil {
		return nil, err
	}
	out := map[string]endpoint{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if m := servingLine.FindStringSubmatch(sc.Text()); m != nil {
				out[strings.TrimSuffix(filepath.Base(f), ".log")] = endpoint{GRPC: m[1], HTTP: m[2]}
			}
		}
		fh.Close()
	}
	for _, need := range []string{"merge", "statestore", "validation-na", "broadcaster-na"} {
		if _, ok := out[need]; !ok {
			return nil, fmt.Errorf("no serving address of %s in %s", need, logDir)
		}
	}
	return out, nil
}

// freePort returns a free loopback port below Linux's ephemeral range, as
// devstack does for the services.
func freePort() (int, error) {
	for i := 0; i < 1000; i++ {
		port := 20000 + rand.IntN(12000)
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			l.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free port in 20000-31999")
}
