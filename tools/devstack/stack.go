// Package devstack runs the whole fedsync mesh on one machine: the embedded
// Kafka-protocol broker (or an external Kafka), every service as its own OS
// process, and one path-routing edge per region. `make run` and the end-to-end
// tests use it.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/fedsync/fedsync/libs/groupsync"
	"github.com/fedsync/fedsync/libs/guard"
	"github.com/fedsync/fedsync/libs/mtls"
)

// Options configure a stack.
type Options struct {
	// BinDir holds the service binaries (authn, validation, ...).
	BinDir string
	// StateDir holds clients.json, logs, data and the embedded broker's files.
	StateDir string
	// KafkaBrokers points at an external Kafka; empty starts the embedded broker.
	KafkaBrokers []string
	// KafkaTopicPrefix isolates this stack's topics and groups on a shared Kafka.
	KafkaTopicPrefix string
	// KafkaPort is the embedded broker's port; 0 picks a free one.
	KafkaPort int
	// BrokerSync is how the embedded broker makes acknowledged records durable:
	// "group" (group commit: produce responses wait for a shared syncfs of the
	// broker's filesystem) or "per-batch" (kfake fsyncs every batch itself).
	// Empty takes $FEDSYNC_BROKER_SYNC, then "group".
	BrokerSync string
	// Edges maps each region to its edge address, e.g. na=127.0.0.1:8080.
	Edges map[string]string
	// DataTypes is the data-type registry file given to validation and merge.
	DataTypes string
	// RevocationRefresh overrides how often services load token revocations.
	RevocationRefresh time.Duration
	// FreePorts gives every service free loopback ports instead of the defaults.
	FreePorts bool
	// Progress receives one line per start-up step; nil discards.
	Progress io.Writer
	// StateStoreReplicas is the size of the statestore's Raft group: the
	// replicas are named statestore, statestore-2, statestore-3, ... 0 means 3.
	StateStoreReplicas int
	// AuthnReplicas is the size of authn's Raft group: authn, authn-2,
	// authn-3, ... 0 means 3.
	AuthnReplicas int
	// OTLPEndpoint, when set, is where every service sends its spans
	// (-otel.endpoint), e.g. a Jaeger started with StartJaeger.
	OTLPEndpoint string
	// BackupArgs replace the statestore's -backup.* flags; empty keeps its
	// backups in StateDir/backups.
	BackupArgs []string
}

// Regions returns the stack's regions in a stable order (na first).
func (o Options) Regions() []string {
	var rs []string
	for _, r := range []string{"na", "eu"} {
		if _, ok := o.Edges[r]; ok {
			rs = append(rs, r)
		}
	}
	for r := range o.Edges {
		if r != "na" && r != "eu" {
			rs = append(rs, r)
		}
	}
	return rs
}

type proc struct {
	name     string
	binary   string
	args     []string
	logPath  string
	httpAddr string
	grpcAddr string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Stack is a running mesh.
type Stack struct {
	opts    Options
	Clients []Client
	// Brokers are the Kafka bootstrap addresses the services use.
	Brokers []string

	broker   *kfake.Cluster
	commit   *groupsync.Committer // nil unless the broker runs with group commit
	brokerFS *groupsync.FS
	ca       *mtls.DevCA
	procs    []*proc
	byName   map[string]*proc
	// public is each region's public gRPC endpoint for agents.
	public map[string]string
	edges  []*http.Server
}

func (s *Stack) progress(format string, args ...any) {
	if s.opts.Progress != nil {
		fmt.Fprintf(s.opts.Progress, format+"\n", args...)
	}
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// FreePort returns a loopback port that is free now, chosen below Linux's
// ephemeral range (32768-60999) so that outgoing connections, which take ports
// from that range, cannot grab it before the service binds it.
// A port is never handed out twice by one process, so two services of a plan
// (or of stacks started one after another) cannot be given the same one.
func FreePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for i := 0; i < 1000; i++ {
		port := 20000 + rand.IntN(12000)
		if portsGiven[port] {
			continue
		}
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			l.Close()
			portsGiven[port] = true
			return port, nil
		}
	}
	return 0, errors.New("no free port in 20000-31999")
}

// Start starts the broker, the services and the edges, and waits until every
// service answers.
func Start(ctx context.Context, opts Options) (*Stack, error) {
	s := &Stack{opts: opts, byName: map[string]*proc{}}
	if err := os.MkdirAll(filepath.Join(opts.StateDir, "logs"), 0o750); err != nil {
		return nil, err
	}
	regions := opts.Regions()
	if len(regions) == 0 {
		return nil, errors.New("devstack: at least one region edge is required")
	}
	if opts.DataTypes == "" {
		return nil, errors.New("devstack: a data-type registry file is required")
	}
	if abs, err := filepath.Abs(opts.DataTypes); err == nil {
		s.opts.DataTypes = abs
	}
	clientsPath := filepath.Join(opts.StateDir, "clients.json")
	var err error
	if s.Clients, err = ensureClients(clientsPath, regions); err != nil {
		return nil, err
	}
	s.progress("clients: %s (%d clients)", clientsPath, len(s.Clients))

	if len(opts.KafkaBrokers) > 0 {
		s.Brokers = opts.KafkaBrokers
	} else {
		port := opts.KafkaPort
		if port == 0 {
			if port, err = FreePort(); err != nil {
				return nil, err
			}
		}
		if err := s.startBroker(port); err != nil {
			return nil, err
		}
		s.Brokers = s.broker.ListenAddrs()
	}
	s.progress("kafka: %s%s", strings.Join(s.Brokers, ","), s.brokerSyncNote())

	ca, err := mtls.OpenDevCA(filepath.Join(opts.StateDir, "tls"))
	if err != nil {
		return nil, fmt.Errorf("development CA: %w", err)
	}
	s.ca = ca
	s.progress("mutual TLS between services: CA %s", ca.CAFile())
	if err := s.plan(regions, clientsPath); err != nil {
		s.Stop()
		return nil, err
	}
	for _, p := range s.procs {
		if err := p.start(); err != nil {
			s.Stop()
			return nil, err
		}
	}
	for _, p := range s.procs {
		if err := p.waitReady(ctx, 60*time.Second); err != nil {
			s.Stop()
			return nil, err
		}
	}
	s.progress("services: %d processes ready (logs in %s)", len(s.procs), filepath.Join(opts.StateDir, "logs"))
	for _, region := range regions {
		routes := Routes{
			Authn: s.httpAddrs(s.AuthnNames()), Validation: s.byName["validation-"+region].httpAddr, Merge: s.byName["merge"].httpAddr,
			StateStore: s.httpAddrs(s.StateStoreNames()), Broadcaster: s.byName["broadcaster-"+region].httpAddr,
			HealthMonitor: s.byName["healthmonitor"].httpAddr,
		}
		lis, err := net.Listen("tcp", opts.Edges[region])
		if err != nil {
			s.Stop()
			return nil, fmt.Errorf("edge %s: %w", region, err)
		}
		srv := guard.Defaults.Server(NewEdge(routes), nil, nil)
		go srv.Serve(lis)
		s.edges = append(s.edges, srv)
		s.progress("edge %s: http://%s (gRPC for agents: %s)", region, lis.Addr(), s.public[region])
	}
	return s, nil
}

// startBroker starts the embedded broker persisting under StateDir/kafka.
func (s *Stack) startBroker(port int) error {
	dir := filepath.Join(s.opts.StateDir, "kafka")
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir)}
	mode := s.opts.BrokerSync
	if mode == "" {
		mode = os.Getenv("FEDSYNC_BROKER_SYNC")
	}
	switch mode {
	case "", "group":
		// kfake writes batches to the page cache; a produce response reaches the
		// producer only after a syncfs that started once the batch was written.
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return err
		}
		fs, err := groupsync.OpenFS(dir)
		if err != nil {
			return err
		}
		s.brokerFS = fs
		s.commit = groupsync.NewCommitter(fs.Sync, s.logf)
		opts = append(opts, kfake.ListenFn(s.commit.ListenFn(nil)))
	case "per-batch":
		opts = append(opts, kfake.SyncWrites())
	default:
		return fmt.Errorf("devstack: broker sync %q: want group or per-batch", mode)
	}
	var err error
	if s.broker, err = kfake.NewCluster(opts...); err != nil {
		if s.brokerFS != nil {
			s.brokerFS.Close()
		}
		s.brokerFS, s.commit = nil, nil // Stop must not close or report them again
		return fmt.Errorf("start embedded kafka on port %d: %w", port, err)
	}
	return nil
}

func (s *Stack) brokerSyncNote() string {
	switch {
	case s.broker == nil:
		return ""
	case s.commit != nil:
		return " (embedded; acks after a group commit: one syncfs shared by the waiting produce responses)"
	}
	return " (embedded; fsync per batch)"
}

// logf reports a problem on Progress, or on the standard logger without one.
func (s *Stack) logf(format string, args ...any) {
	if s.opts.Progress != nil {
		fmt.Fprintf(s.opts.Progress, format+"\n", args...)
		return
	}
	log.Printf(format, args...)
}

// BrokerSyncStats reports the embedded broker's group commits so far; ok is
// false unless the embedded broker runs with group commit.
func (s *Stack) BrokerSyncStats() (stats groupsync.Stats, ok bool) {
	if s.commit == nil {
		return groupsync.Stats{}, false
	}
	return s.commit.Stats(), true
}

// StateStoreNames returns the names of the statestore's replicas.
func (s *Stack) StateStoreNames() []string {
	return replicaNames("statestore", s.opts.StateStoreReplicas)
}

// AuthnNames returns the names of authn's replicas.
func (s *Stack) AuthnNames() []string { return replicaNames("authn", s.opts.AuthnReplicas) }

// replicaNames names the n replicas of a Raft-replicated service (0: 3):
// service, service-2, service-3, ...
func replicaNames(service string, n int) []string {
	if n <= 0 {
		n = 3
	}
	names := []string{service}
	for i := 2; i <= n; i++ {
		names = append(names, fmt.Sprintf("%s-%d", service, i))
	}
	return names
}

func (s *Stack) httpAddrs(names []string) string {
	var addrs []string
	for _, n := range names {
		addrs = append(addrs, s.byName[n].httpAddr)
	}
	return strings.Join(addrs, ",")
}

// StateStoreLeader returns the name of the statestore replica that leads its
// Raft group now, waiting up to timeout for one.
func (s *Stack) StateStoreLeader(ctx context.Context, timeout time.Duration) (string, error) {
	return s.leader(ctx, "statestore", s.StateStoreNames(), timeout)
}

// AuthnLeader returns the name of the authn replica that leads its Raft
// group now, waiting up to timeout for one.
func (s *Stack) AuthnLeader(ctx context.Context, timeout time.Duration) (string, error) {
	return s.leader(ctx, "authn", s.AuthnNames(), timeout)
}

// leader finds the leader among a service's replicas by each one's
// fedsync_<service>_raft_leader gauge.
func (s *Stack) leader(ctx context.Context, service string, names []string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	gauge := "\nfedsync_" + service + "_raft_leader 1\n"
	for {
		for _, name := range names {
			resp, err := client.Get("http://" + s.byName[name].httpAddr + "/metrics")
			if err != nil {
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), gauge) {
				return name, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no %s replica leads after %v", service, timeout)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// GRPCAddr returns the gRPC address of a service process ("validation-na").
func (s *Stack) GRPCAddr(name string) string { return s.byName[name].grpcAddr }

// HTTPAddr returns a service process's HTTP address (its API and /metrics).
func (s *Stack) HTTPAddr(name string) string { return s.byName[name].httpAddr }

// ClientIdentity issues a federation certificate for a client of the services'
// gRPC APIs (tests, tools) and returns its files.
func (s *Stack) ClientIdentity(name string) (mtls.Config, error) { return s.ca.Issue(name) }

// DataDir returns the data directory of a service process.
func (s *Stack) DataDir(name string) string { return filepath.Join(s.opts.StateDir, "data", name) }

// PublicGRPCAddr returns the address of a region's public gRPC endpoint for
// agents (plaintext, bearer token).
func (s *Stack) PublicGRPCAddr(region string) string { return s.public[region] }

// EdgeURL returns the base URL of a region's edge.
func (s *Stack) EdgeURL(region string) string { return "http://" + s.opts.Edges[region] }

// plan lays out the processes and their flags.
func (s *Stack) plan(regions []string, clientsPath string) error {
	type svc struct{ name, binary, region string }
	var plan []svc
	for _, name := range s.AuthnNames() {
		plan = append(plan, svc{name, "authn", regions[0]})
	}
	for _, name := range s.StateStoreNames() {
		plan = append(plan, svc{name, "statestore", regions[0]})
	}
	plan = append(plan, svc{"merge", "merge", regions[0]})
	for _, r := range regions {
		plan = append(plan, svc{"validation-" + r, "validation", r}, svc{"broadcaster-" + r, "broadcaster", r})
	}
	plan = append(plan, svc{"healthmonitor", "healthmonitor", regions[0]})
	defaults := map[string]int{"authn": 19101, "validation": 19102, "merge": 19103, "statestore": 19104, "broadcaster": 19105, "healthmonitor": 19106}
	grpcAddr := map[string]string{}
	httpAddr := map[string]string{}
	raftAddr := map[string]string{}
	raftPorts := map[string]int{"authn": 19501, "statestore": 19504}
	for i, p := range plan {
		var gp, hp int
		if s.opts.FreePorts {
			var err error
			if gp, err = FreePort(); err != nil {
				return err
			}
			if hp, err = FreePort(); err != nil {
				return err
			}
		} else {
			offset := 0
			for j := 0; j < i; j++ {
				if plan[j].binary == p.binary {
					offset += 10
				}
			}
			gp, hp = defaults[p.binary]+offset, defaults[p.binary]+100+offset
		}
		grpcAddr[p.name] = fmt.Sprintf("127.0.0.1:%d", gp)
		httpAddr[p.name] = fmt.Sprintf("127.0.0.1:%d", hp)
		if base, ok := raftPorts[p.binary]; ok { // replication between the replicas
			rp := base + (gp - defaults[p.binary])
			if s.opts.FreePorts {
				var err error
				if rp, err = FreePort(); err != nil {
					return err
				}
			}
			raftAddr[p.name] = fmt.Sprintf("127.0.0.1:%d", rp)
		}
		if p.binary == "broadcaster" { // the agents' public gRPC endpoint
			pp := 19405 + (gp - defaults["broadcaster"])
			if s.opts.FreePorts {
				var err error
				if pp, err = FreePort(); err != nil {
					return err
				}
			}
			if s.public == nil {
				s.public = map[string]string{}
			}
			s.public[p.region] = fmt.Sprintf("127.0.0.1:%d", pp)
		}
	}
	peers := map[string][]string{}
	for _, p := range plan {
		peers[p.binary] = append(peers[p.binary], grpcAddr[p.name])
	}
	raftPeers := map[string][]string{}
	for _, p := range plan {
		if raftAddr[p.name] != "" {
			raftPeers[p.binary] = append(raftPeers[p.binary], grpcAddr[p.name]+"="+raftAddr[p.name])
		}
	}
	var peerFlag []string
	for _, name := range []string{"authn", "validation", "merge", "statestore", "broadcaster", "healthmonitor"} {
		peerFlag = append(peerFlag, name+"="+strings.Join(peers[name], ","))
	}
	for _, p := range plan {
		args := []string{
			"-instance=" + p.name, "-region=" + p.region,
			"-grpc-addr=" + grpcAddr[p.name], "-http-addr=" + httpAddr[p.name],
			"-data-dir=" + filepath.Join(s.opts.StateDir, "data", p.name),
			"-discovery=static", "-peers=" + strings.Join(peerFlag, ";"), "-pprof",
		}
		if p.binary != "authn" {
			args = append(args, "-kafka.brokers="+strings.Join(s.Brokers, ","), "-kafka.topic-prefix="+s.opts.KafkaTopicPrefix)
		} else {
			args = append(args, "-clients-file="+clientsPath)
		}
		id, err := s.ca.Issue(p.binary)
		if err != nil {
			return err
		}
		args = append(args, "-tls.ca="+id.CA, "-tls.cert="+id.Cert, "-tls.key="+id.Key)
		if p.binary == "validation" || p.binary == "merge" {
			args = append(args, "-datatypes="+s.opts.DataTypes)
		}
		if raftAddr[p.name] != "" {
			keys, err := atRestKeys(s.opts.StateDir, p.binary)
			if err != nil {
				return err
			}
			args = append(args, "-raft.addr="+raftAddr[p.name], "-raft.peers="+strings.Join(raftPeers[p.binary], ","),
				"-at-rest.keys-file="+keys, "-at-rest.required")
		}
		if p.binary == "statestore" {
			// One backup store for the group: whichever replica leads
			// exports there, and any lists what is there.
			if len(s.opts.BackupArgs) > 0 {
				args = append(args, s.opts.BackupArgs...)
			} else {
				args = append(args, "-backup.target="+filepath.Join(s.opts.StateDir, "backups"))
			}
		}
		if s.opts.OTLPEndpoint != "" {
			args = append(args, "-otel.endpoint="+s.opts.OTLPEndpoint)
		}
		if s.opts.RevocationRefresh > 0 {
			args = append(args, "-auth.revocation-refresh="+s.opts.RevocationRefresh.String())
		}
		if p.binary == "healthmonitor" {
			// merge's /metrics feeds the sync_failure_spike and
			// high_sync_latency rules, the hubs' the consistency_divergence
			// rule and the dashboard's consistency table.
			scrape := []string{"http://" + httpAddr["merge"] + "/metrics"}
			for _, r := range regions {
				scrape = append(scrape, "http://"+httpAddr["broadcaster-"+r]+"/metrics")
			}
			args = append(args, "-probe-interval=2s", "-alerts.scrape="+strings.Join(scrape, ","))
		}
		if p.binary == "broadcaster" {
			// The mesh listens on loopback here, so loopback stays refused to
			// webhooks; a receiver on this machine's LAN address (private
			// ranges, refused by default for the Kubernetes mesh) is allowed.
			// $FEDSYNC_WEBHOOKS_ALLOW_CIDRS adds ranges (the e2e suite's
			// receiver on 127.0.0.1).
			allow := "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
			if extra := os.Getenv("FEDSYNC_WEBHOOKS_ALLOW_CIDRS"); extra != "" {
				allow += "," + extra
			}
			args = append(args, "-webhooks.allow-cidrs="+allow, "-public-grpc-addr="+s.public[p.region])
		}
		pr := &proc{name: p.name, binary: filepath.Join(s.opts.BinDir, p.binary), args: args,
			logPath: filepath.Join(s.opts.StateDir, "logs", p.name+".log"), httpAddr: httpAddr[p.name], grpcAddr: grpcAddr[p.name]}
		s.procs = append(s.procs, pr)
		s.byName[p.name] = pr
	}
	return nil
}

func (p *proc) start() error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.binary, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so a terminal's Ctrl-C reaches only devstack, which stops
	// the services in order; and killed with devstack if devstack itself dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	return nil
}

func (p *proc) running() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.done
}

func (p *proc) waitReady(ctx context.Context, timeout time.Duration) error {
	_, done := p.running()
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("%s exited during start-up; last log lines:\n%s", p.name, tail(p.logPath, 20))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := client.Get("http://" + p.httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %s; last log lines:\n%s", p.name, timeout, tail(p.logPath, 20))
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (p *proc) signal(sig syscall.Signal) {
	if cmd, _ := p.running(); cmd != nil && cmd.Process != nil {
		cmd.Process.Signal(sig)
	}
}

// Signal sends sig to a service process (SIGSTOP and SIGCONT for a pause).
func (s *Stack) Signal(name string, sig syscall.Signal) error {
	p, ok := s.byName[name]
	if !ok {
		return fmt.Errorf("no process %s", name)
	}
	p.signal(sig)
	return nil
}

// Kill sends SIGKILL to a service process and waits until it is gone.
func (s *Stack) Kill(name string) error {
	p, ok := s.byName[name]
	if !ok {
		return fmt.Errorf("no process %s", name)
	}
	p.signal(syscall.SIGKILL)
	_, done := p.running()
	<-done
	return nil
}

// Restart starts a stopped or killed service again and waits until it answers.
func (s *Stack) Restart(ctx context.Context, name string) error {
	p, ok := s.byName[name]
	if !ok {
		return fmt.Errorf("no process %s", name)
	}
	if _, done := p.running(); done != nil {
		select {
		case <-done:
		default:
			return fmt.Errorf("%s is still running", name)
		}
	}
	if err := p.start(); err != nil {
		return err
	}
	return p.waitReady(ctx, 60*time.Second)
}

// Stop stops the edges, then every service (SIGTERM, then SIGKILL after 8 s),
// then the broker.
func (s *Stack) Stop() {
	for _, e := range s.edges {
		e.Close()
	}
	for _, p := range s.procs {
		p.signal(syscall.SIGTERM)
	}
	deadline := time.After(8 * time.Second)
	for _, p := range s.procs {
		_, done := p.running()
		if done == nil {
			continue
		}
		select {
		case <-done:
		case <-deadline:
			for _, q := range s.procs {
				q.signal(syscall.SIGKILL)
			}
			<-done
		}
	}
	if s.broker != nil {
		s.broker.Close()
	}
	if s.brokerFS != nil {
		s.progress("kafka: %s", s.commit.Stats())
		s.brokerFS.Close()
		s.brokerFS = nil
	}
}
