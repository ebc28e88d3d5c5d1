package statestore

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/mtls"
)

// RaftConfig configures the replica's place in the statestore's Raft group.
//
// A replica is named by the address its gRPC API is reached at (its ID), so
// that a follower can send a caller's request on to the leader it knows by
// ID. Its Raft address is where the replicas replicate to each other.
type RaftConfig struct {
	// ID is this replica's name: the gRPC address others reach it at
	// (default: the advertised gRPC address).
	ID string
	// Addr is where this replica listens for Raft traffic.
	Addr string
	// Advertise is the Raft address the others reach this replica at
	// (default: its entry in Peers, else Addr).
	Advertise string
	// Peers are the voters a new group starts with, ID=raft-address each,
	// this replica among them. Empty: a group of one.
	Peers PeerList
	// HeartbeatTimeout: a follower that hears nothing from the leader for a
	// random time between this and twice this starts an election (seed 4.1:
	// elections in 150-300 ms).
	HeartbeatTimeout time.Duration
	// LeaderLease: a leader that cannot reach a majority this long steps down.
	LeaderLease time.Duration
	// SnapshotThreshold is how many log entries since the last snapshot make
	// a new one; SnapshotInterval how often that is checked.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs are the log entries kept after a snapshot, so a follower
	// that was briefly away catches up from the log, not a whole snapshot.
	TrailingLogs uint64
	// LeaderWait is how long a call waits for a leader during an election
	// before it is refused as unavailable.
	LeaderWait time.Duration

	// dialAddr, when set, picks the address this replica dials for a peer
	// (tests put a proxy between each pair of replicas to cut them apart).
	dialAddr raft.ServerAddressProvider
}

// PeerList is the -raft.peers flag: ID=address,...
type PeerList []raft.Server

func (p *PeerList) String() string {
	var parts []string
	for _, s := range *p {
		parts = append(parts, string(s.ID)+"="+string(s.Address))
	}
	return strings.Join(parts, ",")
}

func (p *PeerList) Set(v string) error {
	*p = nil
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, addr, ok := strings.Cut(part, "=")
		if !ok || id == "" || addr == "" {
			return fmt.Errorf("peer %q: want ID=RAFT_ADDRESS (ID is the replica's gRPC address)", part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("peer %q: %w", part, err)
		}
		*p = append(*p, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr)})
	}
	return nil
}

// RegisterFlags registers the -raft.* flags.
func (c *RaftConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.ID, "raft.id", "", "this replica's name in the Raft group: the gRPC address the other replicas reach it at (default: -advertise-addr, else -grpc-addr)")
	fs.StringVar(&c.Addr, "raft.addr", "127.0.0.1:19504", "where this replica listens for Raft traffic from the other replicas")
	fs.StringVar(&c.Advertise, "raft.advertise", "", "the Raft address the other replicas reach this one at (default: its -raft.peers entry, else -raft.addr)")
	fs.Var(&c.Peers, "raft.peers", "the voters a new group starts with: ID=RAFT_ADDRESS,... with this replica among them (IDs are gRPC addresses); empty: a group of one")
	fs.DurationVar(&c.HeartbeatTimeout, "raft.heartbeat-timeout", 150*time.Millisecond, "a follower that hears nothing from the leader for a random time between this and twice this starts an election (seed: 150-300 ms)")
	fs.DurationVar(&c.LeaderLease, "raft.leader-lease", 100*time.Millisecond, "a leader that cannot reach a majority this long steps down; at most -raft.heartbeat-timeout")
	fs.Uint64Var(&c.SnapshotThreshold, "raft.snapshot-threshold", 8192, "log entries since the last snapshot that make a new one")
	fs.DurationVar(&c.SnapshotInterval, "raft.snapshot-interval", 2*time.Minute, "how often the snapshot threshold is checked")
	fs.Uint64Var(&c.TrailingLogs, "raft.trailing-logs", 10240, "log entries kept after a snapshot for followers that catch up")
	fs.DurationVar(&c.LeaderWait, "raft.leader-wait", 3*time.Second, "how long a call waits for a leader during an election before it is refused with 503")
}

// Validate reports the first invalid setting.
func (c *RaftConfig) Validate() error {
	if c.HeartbeatTimeout < 10*time.Millisecond {
		return errors.New("raft.heartbeat-timeout: must be at least 10ms")
	}
	if c.LeaderLease <= 0 || c.LeaderLease > c.HeartbeatTimeout {
		return errors.New("raft.leader-lease: must be above 0 and at most raft.heartbeat-timeout")
	}
	if len(c.Peers) > 0 && c.ID != "" {
		found := false
		for _, p := range c.Peers {
			found = found || string(p.ID) == c.ID
		}
		if !found {
			return fmt.Errorf("raft.peers: this replica (%s) is not among them", c.ID)
		}
	}
	return nil
}

// node is this replica's Raft member.
type node struct {
	// readyTerm is the term in which this replica, leading, applied
	// everything committed before it (caughtUp).
	readyTerm atomic.Uint64
	raft      *raft.Raft
	id        string
	wait      time.Duration
	logger    log.Logger
	close     func()
}

// startNode starts the replica's Raft member on the store in dir, joining
// (or, on first start, founding with its peers) the group.
func startNode(cfg RaftConfig, dir string, f *fsm, id *mtls.Identity, logger log.Logger) (*node, error) {
	rdir := filepath.Join(dir, "raft")
	if err := os.MkdirAll(rdir, 0o750); err != nil {
		return nil, err
	}
	hl := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Info, Output: logWriter{log.With(logger, "component", "raft")}, DisableTime: true})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.HeartbeatTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLease
	rc.CommitTimeout = 5 * time.Millisecond
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	// The store is durable and knows the last entry it applied: a restart
	// continues from there instead of rebuilding from a snapshot.
	rc.NoSnapshotRestoreOnStart = true
	rc.Logger = hl

	logs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(rdir, "raft.db"), BoltOptions: nil})
	if err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(rdir, 2, hl)
	if err != nil {
		logs.Close()
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	advertise := cfg.Advertise
	for _, p := range cfg.Peers {
		if string(p.ID) == cfg.ID && advertise == "" {
			advertise = string(p.Address)
		}
	}
	if advertise == "" {
		advertise = cfg.Addr
	}
	stream, err := listenStream(cfg.Addr, advertise, id)
	if err != nil {
		logs.Close()
		return nil, err
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: stream, MaxPool: 3, Timeout: 10 * time.Second, Logger: hl,
		ServerAddressProvider: cfg.dialAddr})

	if err := catchUpFromSnapshot(f, snaps); err != nil {
		trans.Close()
		logs.Close()
		return nil, err
	}
	existing, err := raft.HasExistingState(logs, logs, snaps)
	if err != nil {
		trans.Close()
		logs.Close()
		return nil, err
	}
	if !existing {
		peers := cfg.Peers
		if len(peers) == 0 {
			peers = PeerList{{Suffrage: raft.Voter, ID: rc.LocalID, Address: raft.ServerAddress(advertise)}}
		}
		if err := raft.BootstrapCluster(rc, logs, logs, snaps, trans, raft.Configuration{Servers: peers}); err != nil {
			trans.Close()
			logs.Close()
			return nil, fmt.Errorf("bootstrap raft group: %w", err)
		}
		level.Info(logger).Log("msg", "founded the statestore raft group", "voters", peers.String())
	}
	r, err := raft.NewRaft(rc, f, logs, logs, snaps, trans)
	if err != nil {
		trans.Close()
		logs.Close()
		return nil, err
	}
	n := &node{raft: r, id: cfg.ID, wait: cfg.LeaderWait, logger: logger}
	n.close = func() {
		if err := r.Shutdown().Error(); err != nil {
			level.Warn(logger).Log("msg", "raft shutdown", "err", err)
		}
		trans.Close()
		logs.Close()
	}
	return n, nil
}

// catchUpFromSnapshot restores the newest snapshot into a store that is
// behind it (its file was lost or replaced): Raft replays only the entries
// after the snapshot.
func catchUpFromSnapshot(f *fsm, snaps *raft.FileSnapshotStore) error {
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return err
	}
	applied, err := f.appliedIndex()
	if err != nil {
		return err
	}
	if applied >= list[0].Index {
		return nil
	}
	_, rc, err := snaps.Open(list[0].ID)
	if err != nil {
		return err
	}
	return f.Restore(rc)
}

// logWriter passes Raft's log lines to the service's logger.
type logWriter struct{ logger log.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.logger.Log("msg", strings.TrimSpace(string(p)))
	return len(p), nil
}

// caughtUp makes sure the leader has applied every entry committed before
// its term: once per term, a barrier through the log.
func (n *node) caughtUp(ctx context.Context) error {
	term := n.raft.CurrentTerm()
	if n.readyTerm.Load() == term {
		return nil
	}
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if err := n.raft.Barrier(timeout).Error(); err != nil {
		return err
	}
	n.readyTerm.Store(term)
	return nil
}

// isLeader reports whether this replica leads the group.
func (n *node) isLeader() bool { return n.raft.State() == raft.Leader }

// leader returns the leader's ID (its gRPC address), waiting up to the
// configured time for an election to end; "" when there is none.
func (n *node) leader(ctx context.Context) string {
	deadline := time.Now().Add(n.wait)
	for {
		if _, id := n.raft.LeaderWithID(); id != "" {
			return string(id)
		}
		if time.Now().After(deadline) {
			return ""
		}
		select {
		case <-ctx.Done():
			return ""
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// noLeader is the answer of a replica that knows no leader: it cannot reach a
// majority (a partition, or most replicas down).
func (n *node) noLeader() error {
	return apierr.New(apierr.Unavailable, "The statestore has no leader: replica %s cannot reach a majority of the %d replicas (a partition, or most of them are down). Nothing was written; retry after Retry-After.",
		n.id, n.voters()).WithRetryAfter(2*time.Second).WithDetail("replica", n.id).WithDetail("cause", "no_quorum")
}

func (n *node) voters() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	return len(f.Configuration().Servers)
}

// propose puts c through the group: in the log of a majority, then applied
// here. Only the leader proposes; a call that reaches a follower is sent on
// to the leader before it gets here.
func (n *node) propose(ctx context.Context, c *command) (any, error) {
	raw, err := c.encode()
	if err != nil {
		return nil, err
	}
	if !n.isLeader() {
		return nil, errNotLeader(n.id)
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	f := n.raft.Apply(raw, timeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader):
			return nil, errNotLeader(n.id) // refused before it entered the log
		case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			// Lost leadership: the entry may still commit under the new
			// leader; a retry is safe (message ids apply once).
			return nil, apierr.New(apierr.Unavailable, "Replica %s lost the statestore leadership before the change committed: %v. Retry; a change that did commit comes back as a duplicate.", n.id, err).WithRetryAfter(200 * time.Millisecond)
		case errors.Is(err, raft.ErrEnqueueTimeout):
			return nil, apierr.New(apierr.Unavailable, "The statestore leader %s could not reach a majority in time; retry.", n.id).WithRetryAfter(time.Second)
		case errors.Is(err, raft.ErrRaftShutdown):
			return nil, apierr.New(apierr.Unavailable, "Replica %s is shutting down; retry.", n.id)
		}
		return nil, err
	}
	if err, ok := f.Response().(error); ok {
		return nil, err
	}
	return f.Response(), nil
}

// whileLeader runs fn for as long as this replica leads, again each time it
// becomes the leader, until ctx ends.
func (n *node) whileLeader(ctx context.Context, fn func(ctx context.Context) error) error {
	obs := make(chan raft.Observation, 8)
	o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.RaftState)
		return ok
	})
	n.raft.RegisterObserver(o)
	defer n.raft.DeregisterObserver(o)
	var stop func()
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	check := time.NewTicker(time.Second) // observations may be dropped
	defer check.Stop()
	for {
		leader := n.isLeader()
		switch {
		case leader && stop == nil:
			stop = n.startTask(ctx, fn)
		case !leader && stop != nil:
			stop()
			stop = nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-obs:
		case <-check.C:
		}
	}
}

// startTask runs fn until the returned stop is called.
func (n *node) startTask(ctx context.Context, fn func(ctx context.Context) error) (stop func()) {
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := fn(lctx); err != nil && lctx.Err() == nil {
			level.Warn(n.logger).Log("msg", "leader task stopped", "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// tlsStream is Raft's transport over mutual TLS: only statestore replicas
// (by their federation certificates) replicate to each other. Without an
// identity it is plain TCP (tests, a group of one).
type tlsStream struct {
	net.Listener
	advertise net.Addr
	client    *tls.Config
}

func listenStream(bind, advertise string, id *mtls.Identity) (*tlsStream, error) {
	lis, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft listen on %s: %w", bind, err)
	}
	var adv net.Addr = advertiseAddr(advertise)
	if host, _, err := net.SplitHostPort(advertise); err != nil || host == "" || net.ParseIP(host).IsUnspecified() {
		adv = lis.Addr() // bound to all interfaces and no -raft.advertise: what we got
	}
	s := &tlsStream{Listener: lis, advertise: adv}
	if id != nil {
		server := id.ServerConfig()
		server.VerifyConnection = onlyStatestore(server.VerifyConnection)
		s.Listener = tls.NewListener(lis, server)
		s.client = id.ClientConfig()
		s.client.VerifyConnection = onlyStatestore(s.client.VerifyConnection)
	}
	return s, nil
}

func onlyStatestore(verify func(tls.ConnectionState) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if err := verify(cs); err != nil {
			return err
		}
		if svc := mtls.ServiceOf(cs.PeerCertificates[0]); svc != "statestore" {
			return fmt.Errorf("raft: %s is not a statestore replica", svc)
		}
		return nil
	}
}

func (s *tlsStream) Addr() net.Addr { return s.advertise }

// advertiseAddr is an address as configured: a DNS name stays a name (a pod's
// may not resolve until the pod runs).
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if s.client == nil {
		return d.Dial("tcp", string(addr))
	}
	return tls.DialWithDialer(d, "tcp", string(addr), s.client)
}

// registerRaftMetrics exports this replica's view of the group.
func registerRaftMetrics(reg prometheus.Registerer, n *node) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fedsync_statestore_raft_leader", Help: "1 while this statestore replica is the Raft leader, else 0."},
			func() float64 {
				if n.isLeader() {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fedsync_statestore_raft_has_leader", Help: "1 while this replica knows a leader (it is in a majority), else 0."},
			func() float64 {
				if _, id := n.raft.LeaderWithID(); id != "" {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fedsync_statestore_raft_term", Help: "The Raft term this replica is in."},
			func() float64 { v, _ := strconv.ParseFloat(n.raft.Stats()["term"], 64); return v }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fedsync_statestore_raft_last_index", Help: "The last Raft log index this replica holds."},
			func() float64 { return float64(n.raft.LastIndex()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fedsync_statestore_raft_applied_index", Help: "The last Raft log index this replica applied to its store."},
			func() float64 { return float64(n.raft.AppliedIndex()) }),
	)
}
