// Package raftgroup runs a service's replicas as one Raft group
// (github.com/hashicorp/raft, with raft-boltdb/v2 for the log and snapshots
// on disk): the flags that place a replica in its group, the member itself
// over mutual TLS, leader-only tasks, and a way for a follower to hand a
// command to the leader. The statestore and authn are built on it
// (docs/replication.md).
package raftgroup

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedsync/fedsync/libs/atrest"
)

// Config places a replica in its service's Raft group.
//
// A replica is named by the address its gRPC API is reached at (its ID), so
// that a follower can send a request on to the leader it knows by ID. Its
// Raft address is where the replicas replicate to each other.
type Config struct {
	// ID is this replica's name: the gRPC address others reach it at
	// (default: the advertised gRPC address).
	ID string
	// Addr is where this replica listens for Raft traffic.
	Addr string
	// Advertise is the Raft address the others reach this replica at
	// (default: its entry in Peers, else Addr).
	Advertise string
	// Peers are the voters a new group starts with, ID=raft-address each,
	// this replica among them (or among Nonvoters). Empty: a group of one.
	Peers PeerList
	// Nonvoters are the warm replicas a new group starts with (seed 4.2,
	// tier 2: another region): they receive every entry, asynchronously,
	// but neither vote nor count towards a commit, so their distance does
	// not slow writes, and they never lead.
	Nonvoters PeerList
	// RecoverAsSoleVoter, at start, makes this replica the only voter of its
	// group, keeping everything it holds: the promotion of a warm replica
	// when the voters' region is lost (docs/backups.md). Its former peers
	// must never run again under the old configuration.
	RecoverAsSoleVoter bool
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

	// DialAddr, when set, picks the address this replica dials for a peer.
	// Not a flag: tests put a proxy between each pair of replicas to cut
	// them apart.
	DialAddr raft.ServerAddressProvider
	// Vault, when set, seals the Raft log and snapshots at rest (not a flag:
	// the service's at-rest keyring).
	Vault *atrest.Vault
}

// members is the configuration a new group starts with: the voters, then the
// warm replicas.
func (c *Config) members() raft.Configuration {
	var conf raft.Configuration
	conf.Servers = append(conf.Servers, c.Peers...)
	for _, p := range c.Nonvoters {
		p.Suffrage = raft.Nonvoter
		conf.Servers = append(conf.Servers, p)
	}
	return conf
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

// RegisterFlags registers the -raft.* flags; addr is the default Raft
// listen address.
func (c *Config) RegisterFlags(fs *flag.FlagSet, addr string) {
	fs.StringVar(&c.ID, "raft.id", "", "this replica's name in the Raft group: the gRPC address the other replicas reach it at (default: -advertise-addr, else -grpc-addr)")
	fs.StringVar(&c.Addr, "raft.addr", addr, "where this replica listens for Raft traffic from the other replicas")
	fs.StringVar(&c.Advertise, "raft.advertise", "", "the Raft address the other replicas reach this one at (default: its -raft.peers entry, else -raft.addr)")
	fs.Var(&c.Peers, "raft.peers", "the voters a new group starts with: ID=RAFT_ADDRESS,... with this replica among them or among -raft.nonvoters (IDs are gRPC addresses); empty: a group of one")
	fs.Var(&c.Nonvoters, "raft.nonvoters", "warm replicas a new group starts with, in another region: ID=RAFT_ADDRESS,...; they get every entry asynchronously, never vote, never lead")
	fs.BoolVar(&c.RecoverAsSoleVoter, "raft.recover-as-sole-voter", false, "at start, make this replica the only voter of its group with everything it holds: promote a warm replica when the voters' region is lost (never while they can come back)")
	fs.DurationVar(&c.HeartbeatTimeout, "raft.heartbeat-timeout", 150*time.Millisecond, "a follower that hears nothing from the leader for a random time between this and twice this starts an election (seed: 150-300 ms)")
	fs.DurationVar(&c.LeaderLease, "raft.leader-lease", 100*time.Millisecond, "a leader that cannot reach a majority this long steps down; at most -raft.heartbeat-timeout")
	fs.Uint64Var(&c.SnapshotThreshold, "raft.snapshot-threshold", 8192, "log entries since the last snapshot that make a new one")
	fs.DurationVar(&c.SnapshotInterval, "raft.snapshot-interval", 2*time.Minute, "how often the snapshot threshold is checked")
	fs.Uint64Var(&c.TrailingLogs, "raft.trailing-logs", 10240, "log entries kept after a snapshot for followers that catch up")
	fs.DurationVar(&c.LeaderWait, "raft.leader-wait", 3*time.Second, "how long a call waits for a leader during an election before it is refused with 503")
}

// ValidateFor names the replica by advertise (its gRPC address) unless
// -raft.id did, and reports the first invalid setting.
func (c *Config) ValidateFor(advertise string) error {
	if c.ID == "" {
		c.ID = advertise
	}
	return c.Validate()
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	if c.HeartbeatTimeout < 10*time.Millisecond {
		return errors.New("raft.heartbeat-timeout: must be at least 10ms")
	}
	if c.LeaderLease <= 0 || c.LeaderLease > c.HeartbeatTimeout {
		return errors.New("raft.leader-lease: must be above 0 and at most raft.heartbeat-timeout")
	}
	if len(c.Nonvoters) > 0 && len(c.Peers) == 0 {
		return errors.New("raft.nonvoters: a group with warm replicas needs its voters in -raft.peers")
	}
	seen := map[raft.ServerID]bool{}
	for _, p := range c.members().Servers {
		if seen[p.ID] {
			return fmt.Errorf("raft.peers, raft.nonvoters: %s is listed twice", p.ID)
		}
		seen[p.ID] = true
	}
	if len(c.Peers) > 0 && c.ID != "" && !seen[raft.ServerID(c.ID)] {
		return fmt.Errorf("raft.peers: this replica (%s) is not among them nor among -raft.nonvoters", c.ID)
	}
	return nil
}
