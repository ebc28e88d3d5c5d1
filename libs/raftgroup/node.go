package raftgroup

import (
	"context"
	"crypto/tls"
	"errors"
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

// FSM is a replica's durable state machine. It records the last log index
// it applied in the same transaction as the entry's effects, so that a
// restart continues from there instead of rebuilding from a snapshot.
type FSM interface {
	raft.BatchingFSM
	// AppliedIndex is the last log index the store holds.
	AppliedIndex() (uint64, error)
}

// Node is this replica's member of its service's Raft group.
type Node struct {
	// Raft is the member itself.
	Raft *raft.Raft
	// ID is this replica's name (its gRPC address).
	ID string
	// Group names the service in messages and metrics ("statestore").
	Group string
	// Wait is how long a call waits for a leader during an election.
	Wait time.Duration

	// readyTerm is the term in which this replica, leading, applied
	// everything committed before it (CaughtUp).
	readyTerm atomic.Uint64
	logger    log.Logger
	close     func()
	fwd       *forwarder
	fsm       FSM
	logs      *sealedLogs
	snaps     *sealedSnaps
}

// snapshotsKept is how many snapshots each replica keeps on disk.
const snapshotsKept = 2

// Reseal re-seals the Raft log and the snapshots with the active at-rest
// key (after a rotation) and returns how many entries and snapshots each key
// (by id; "" is not sealed) seals after the pass.
func (n *Node) Reseal() (map[string]int, error) {
	refs, err := n.logs.reseal()
	if err != nil {
		return refs, err
	}
	snaps, err := n.snaps.reseal(snapshotsKept)
	for k, c := range snaps {
		refs[k] += c
	}
	return refs, err
}

// Start starts the replica's Raft member over the store f, with the Raft
// log and snapshots in dir/raft, joining (or, on first start, founding with
// its peers) the group. Replicas authenticate each other with id's
// certificates: only replicas of the same service are accepted.
func Start(cfg Config, group, dir string, f FSM, id *mtls.Identity, logger log.Logger) (*Node, error) {
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

	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(rdir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	files, err := raft.NewFileSnapshotStoreWithLogger(rdir, snapshotsKept, hl)
	if err != nil {
		bolt.Close()
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	// Entries and snapshots are sealed at rest with the service's keyring
	// (without one they pass through as they are).
	logs := &sealedLogs{LogStore: bolt, vault: cfg.Vault}
	snaps := &sealedSnaps{SnapshotStore: files, vault: cfg.Vault}
	advertise := cfg.Advertise
	for _, p := range cfg.members().Servers {
		if string(p.ID) == cfg.ID && advertise == "" {
			advertise = string(p.Address)
		}
	}
	if advertise == "" {
		advertise = cfg.Addr
	}
	stream, err := listenStream(cfg.Addr, advertise, group, id)
	if err != nil {
		bolt.Close()
		return nil, err
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: stream, MaxPool: 3, Timeout: 10 * time.Second, Logger: hl,
		ServerAddressProvider: cfg.DialAddr})
	snaps.trans = trans
	fail := func(err error) (*Node, error) {
		trans.Close()
		bolt.Close()
		return nil, err
	}
	if err := catchUpFromSnapshot(f, snaps); err != nil {
		return fail(err)
	}
	existing, err := raft.HasExistingState(logs, bolt, snaps)
	if err != nil {
		return fail(err)
	}
	switch {
	case !existing:
		conf := cfg.members()
		if len(conf.Servers) == 0 {
			conf.Servers = PeerList{{Suffrage: raft.Voter, ID: rc.LocalID, Address: raft.ServerAddress(advertise)}}
		}
		if err := raft.BootstrapCluster(rc, logs, bolt, snaps, trans, conf); err != nil {
			return fail(fmt.Errorf("bootstrap raft group: %w", err))
		}
		level.Info(logger).Log("msg", "founded the "+group+" raft group", "voters", cfg.Peers.String(), "nonvoters", cfg.Nonvoters.String())
	case cfg.RecoverAsSoleVoter:
		// The promotion of a warm replica: a new configuration of one
		// voter, this one, over everything it holds.
		start := time.Now()
		sole := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: raft.ServerAddress(advertise)}}}
		if err := raft.RecoverCluster(rc, f, logs, bolt, snaps, trans, sole); err != nil {
			return fail(fmt.Errorf("recover as the sole voter of the %s group: %w", group, err))
		}
		applied, _ := f.AppliedIndex()
		level.Warn(logger).Log("msg", "recovered as the sole voter of the "+group+" group: the former members must not run again under the old configuration", "applied_index", applied, "took", time.Since(start).Round(time.Millisecond))
	}
	r, err := raft.NewRaft(rc, f, logs, bolt, snaps, trans)
	if err != nil {
		return fail(err)
	}
	n := &Node{Raft: r, ID: cfg.ID, Group: group, Wait: cfg.LeaderWait, logger: logger, fsm: f, logs: logs, snaps: snaps}
	n.close = func() {
		if err := r.Shutdown().Error(); err != nil {
			level.Warn(logger).Log("msg", "raft shutdown", "err", err)
		}
		trans.Close()
		bolt.Close()
	}
	return n, nil
}

// Close leaves the group (the replica stays a member: a restart rejoins).
func (n *Node) Close() {
	if n.fwd != nil {
		n.fwd.close()
	}
	n.close()
}

// catchUpFromSnapshot restores the newest snapshot into a store that is
// behind it (its file was lost or replaced): Raft replays only the entries
// after the snapshot.
func catchUpFromSnapshot(f FSM, snaps raft.SnapshotStore) error {
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return err
	}
	applied, err := f.AppliedIndex()
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

// CaughtUp makes sure the leader has applied every entry committed before
// its term: once per term, a barrier through the log.
func (n *Node) CaughtUp(ctx context.Context) error {
	term := n.Raft.CurrentTerm()
	if n.readyTerm.Load() == term {
		return nil
	}
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if err := n.Raft.Barrier(timeout).Error(); err != nil {
		return err
	}
	n.readyTerm.Store(term)
	return nil
}

// IsLeader reports whether this replica leads the group.
func (n *Node) IsLeader() bool { return n.Raft.State() == raft.Leader }

// Leader returns the leader's ID (its gRPC address), waiting up to Wait for
// an election to end; "" when there is none.
func (n *Node) Leader(ctx context.Context) string {
	deadline := time.Now().Add(n.Wait)
	for {
		if _, id := n.Raft.LeaderWithID(); id != "" {
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

// NoLeader is the answer of a replica that knows no leader: it cannot reach
// a majority (a partition, or most replicas down).
func (n *Node) NoLeader() error {
	return apierr.New(apierr.Unavailable, "The %s has no leader: replica %s cannot reach a majority of the %d replicas (a partition, or most of them are down). Nothing was written; retry after Retry-After.",
		n.Group, n.ID, n.voters()).WithRetryAfter(2*time.Second).WithDetail("replica", n.ID).WithDetail("cause", "no_quorum")
}

func (n *Node) voters() int {
	f := n.Raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	return len(f.Configuration().Servers)
}

// causeNotLeader marks a refusal made before anything was proposed.
const causeNotLeader = "not_leader"

// NotLeader is the refusal of a replica that does not lead, made before
// anything was proposed: the call may be retried on the leader.
func (n *Node) NotLeader() error {
	return apierr.New(apierr.Unavailable, "Replica %s is not the %s leader; retry.", n.ID, n.Group).
		WithRetryAfter(100*time.Millisecond).WithDetail("cause", causeNotLeader)
}

// IsNotLeader reports whether err is a NotLeader refusal.
func IsNotLeader(err error) bool { return apierr.As(err).Details["cause"] == causeNotLeader }

// Propose puts the encoded command raw through the group: in the log of a
// majority, then applied here. It returns what the state machine returned
// for it; an error the state machine returned is returned as the error.
// Only the leader proposes (NotLeader otherwise).
func (n *Node) Propose(ctx context.Context, raw []byte) (any, error) {
	res, _, err := n.apply(ctx, raw)
	return res, err
}

// apply is Propose, with the index the command took in the log.
func (n *Node) apply(ctx context.Context, raw []byte) (any, uint64, error) {
	if !n.IsLeader() {
		return nil, 0, n.NotLeader()
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	f := n.Raft.Apply(raw, timeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader):
			return nil, 0, n.NotLeader() // refused before it entered the log
		case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			// Lost leadership: the entry may still commit under the new
			// leader; a retry is safe only for commands that apply once.
			return nil, 0, apierr.New(apierr.Unavailable, "Replica %s lost the %s leadership before the change committed: %v. Retry; a change that did commit comes back as a duplicate.", n.ID, n.Group, err).WithRetryAfter(200 * time.Millisecond)
		case errors.Is(err, raft.ErrEnqueueTimeout):
			return nil, 0, apierr.New(apierr.Unavailable, "The %s leader %s could not reach a majority in time; retry.", n.Group, n.ID).WithRetryAfter(time.Second)
		case errors.Is(err, raft.ErrRaftShutdown):
			return nil, 0, apierr.New(apierr.Unavailable, "Replica %s is shutting down; retry.", n.ID)
		}
		return nil, 0, err
	}
	if err, ok := f.Response().(error); ok {
		return nil, f.Index(), err
	}
	return f.Response(), f.Index(), nil
}

// VerifyLeader confirms with a round of heartbeats to a majority that this
// replica still leads, so that a read it served is linearizable.
func (n *Node) VerifyLeader() error {
	if err := n.Raft.VerifyLeader().Error(); err != nil {
		return apierr.New(apierr.Unavailable, "Replica %s could not confirm its %s leadership for a linearizable read: %v. Retry.", n.ID, n.Group, err).WithRetryAfter(200 * time.Millisecond)
	}
	return nil
}

// WhileLeader runs fn for as long as this replica leads, again each time it
// becomes the leader, until ctx ends.
func (n *Node) WhileLeader(ctx context.Context, fn func(ctx context.Context) error) error {
	obs := make(chan raft.Observation, 8)
	o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.RaftState)
		return ok
	})
	n.Raft.RegisterObserver(o)
	defer n.Raft.DeregisterObserver(o)
	var stop func()
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	check := time.NewTicker(time.Second) // observations may be dropped
	defer check.Stop()
	for {
		leader := n.IsLeader()
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
func (n *Node) startTask(ctx context.Context, fn func(ctx context.Context) error) (stop func()) {
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

// tlsStream is Raft's transport over mutual TLS: only replicas of the same
// service (by their federation certificates) replicate to each other.
// Without an identity it is plain TCP (tests, a group of one).
type tlsStream struct {
	net.Listener
	advertise net.Addr
	client    *tls.Config
}

func listenStream(bind, advertise, group string, id *mtls.Identity) (*tlsStream, error) {
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
		server.VerifyConnection = only(group, server.VerifyConnection)
		s.Listener = tls.NewListener(lis, server)
		s.client = id.ClientConfig()
		s.client.VerifyConnection = only(group, s.client.VerifyConnection)
	}
	return s, nil
}

func only(group string, verify func(tls.ConnectionState) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if err := verify(cs); err != nil {
			return err
		}
		if svc := mtls.ServiceOf(cs.PeerCertificates[0]); svc != group {
			return fmt.Errorf("raft: %s is not a %s replica", svc, group)
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

// RegisterMetrics exports this replica's view of the group as
// fedsync_<group>_raft_*.
func (n *Node) RegisterMetrics(reg prometheus.Registerer) {
	name := func(s string) string { return "fedsync_" + n.Group + "_raft_" + s }
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name("leader"), Help: "1 while this " + n.Group + " replica is the Raft leader, else 0."},
			func() float64 {
				if n.IsLeader() {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name("has_leader"), Help: "1 while this replica knows a leader (it is in a majority), else 0."},
			func() float64 {
				if _, id := n.Raft.LeaderWithID(); id != "" {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name("term"), Help: "The Raft term this replica is in."},
			func() float64 { v, _ := strconv.ParseFloat(n.Raft.Stats()["term"], 64); return v }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name("last_index"), Help: "The last Raft log index this replica holds."},
			func() float64 { return float64(n.Raft.LastIndex()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name("applied_index"), Help: "The last Raft log index this replica applied to its store."},
			func() float64 { return float64(n.Raft.AppliedIndex()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name("last_contact_seconds"),
			Help: "Seconds since this replica last heard from the leader (0 on the leader): what a warm replica can be behind by, its RPO (seed 4.2: at most 5 s)."},
			func() float64 {
				if n.IsLeader() {
					return 0
				}
				last := n.Raft.LastContact()
				if last.IsZero() {
					return -1
				}
				return time.Since(last).Seconds()
			}),
	)
}

// AwaitLeader waits up to timeout for one of nodes (nil ones are down) to
// lead and returns its position, or -1.
func AwaitLeader(nodes func() []*Node, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for i, n := range nodes() {
			if n != nil && n.IsLeader() {
				return i
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return -1
}
