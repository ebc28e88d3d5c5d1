package statestore

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/go-kit/log"
	"github.com/hashicorp/raft"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/atrest"
	"github.com/fedsync/fedsync/libs/backup"
	"github.com/fedsync/fedsync/libs/digest"
	"github.com/fedsync/fedsync/libs/raftgroup"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// replica is one member of an in-process Raft group over real TCP on
// loopback, with its own store on disk.
type replica struct {
	dir  string
	cfg  raftgroup.Config
	st   *store
	svc  *service
	node *raftgroup.Node
	// backups, when set, is the replica's backup store.
	backups backup.Store
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startReplica(t *testing.T, r *replica) {
	t.Helper()
	st, err := openStore(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	svc := newService(st, 1000)
	atrest.Register(st.db, r.cfg.Vault)
	n, err := raftgroup.Start(r.cfg, "statestore", r.dir, svc.fsm, nil, log.NewNopLogger())
	if err != nil {
		st.close()
		t.Fatal(err)
	}
	svc.repl = node{n}
	if r.backups != nil {
		svc.backups = &backups{store: r.backups, vault: r.cfg.Vault, node: n, dir: r.dir}
	}
	r.st, r.svc, r.node = st, svc, n
}

func (r *replica) stop() {
	if r.node != nil {
		r.node.Close()
		r.st.close()
		r.node = nil
	}
}

func startGroup(t *testing.T, size int) []*replica {
	t.Helper()
	return startGroupWith(t, size, func(*raftgroup.Config) {})
}

func startGroupWith(t *testing.T, size int, tune func(*raftgroup.Config)) []*replica {
	t.Helper()
	var peers raftgroup.PeerList
	for i := 0; i < size; i++ {
		peers = append(peers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(fmt.Sprintf("r%d", i)), Address: raft.ServerAddress(freeAddr(t))})
	}
	return startGroupOn(t, peers, tune)
}

// startGroupOn starts one replica per peer, each listening at its peer
// address, after tune.
func startGroupOn(t *testing.T, peers raftgroup.PeerList, tune func(*raftgroup.Config)) []*replica {
	t.Helper()
	group := make([]*replica, len(peers))
	for i := range group {
		cfg := raftgroup.Config{ID: string(peers[i].ID), Addr: string(peers[i].Address), Peers: peers, HeartbeatTimeout: 150 * time.Millisecond,
			LeaderLease: 100 * time.Millisecond, SnapshotThreshold: 8192, SnapshotInterval: time.Minute, TrailingLogs: 10240, LeaderWait: 3 * time.Second}
		tune(&cfg)
		group[i] = &replica{dir: t.TempDir(), cfg: cfg}
		startReplica(t, group[i])
	}
	t.Cleanup(func() {
		for _, r := range group {
			r.stop()
		}
	})
	return group
}

// followerOf returns a replica of group other than leader.
func followerOf(group []*replica, leader *replica) *replica {
	for _, r := range group {
		if r != leader {
			return r
		}
	}
	return nil
}

func leaderOf(t *testing.T, group []*replica) *replica {
	t.Helper()
	i := raftgroup.AwaitLeader(func() []*raftgroup.Node {
		var nodes []*raftgroup.Node
		for _, r := range group {
			nodes = append(nodes, r.node)
		}
		return nodes
	}, 10*time.Second)
	if i < 0 {
		t.Fatal("no leader within 10 s")
	}
	return group[i]
}

// storeDigest is a digest of every document a replica holds, and its log head.
func storeDigest(t *testing.T, r *replica) string {
	t.Helper()
	states, _, err := r.st.query("", "", "", 100000)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, st := range states {
		fmt.Fprintf(&b, "%s@%d:%x;", st.GetId(), st.GetVersion(), digest.ValueHash(st.GetValue()))
	}
	head, _ := r.st.head()
	fmt.Fprintf(&b, "head=%d", head)
	return b.String()
}

func waitConverged(t *testing.T, group []*replica) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var want string
		same := true
		for _, r := range group {
			if r.node == nil {
				continue
			}
			d := storeDigest(t, r)
			if want == "" {
				want = d
			}
			same = same && d == want
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			for _, r := range group {
				if r.node != nil {
					t.Logf("%s: %.200s", r.cfg.ID, storeDigest(t, r))
				}
			}
			t.Fatal("replicas did not converge within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// commitBatch commits round's ten deltas through the group's leader. A leader
// can lose its leadership in the middle (a re-election on a busy machine):
// then, as merge does, it sends the same batch again to the leader of the
// moment, and what did commit comes back as duplicates.
func commitBatch(t *testing.T, group []*replica, round int) {
	t.Helper()
	req := &fedsyncv1.ApplyBatchRequest{}
	for i := 0; i < 10; i++ {
		req.Items = append(req.Items, &fedsyncv1.ApplyRequest{Id: fmt.Sprintf("doc-%d", i%4), DataType: "note", Writer: "ai-001",
			MessageId: fmt.Sprintf("m-%d-%d", round, i), Patch: []byte(fmt.Sprintf(`{"round":%d,"i":%d}`, round, i))})
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := leaderOf(t, group)
		resp, err := r.svc.ApplyBatch(context.Background(), req)
		if err != nil && apierr.As(err).Code == apierr.Unavailable && time.Now().Before(deadline) {
			t.Logf("round %d on %s: %v; again", round, r.cfg.ID, err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("round %d on %s: %v", round, r.cfg.ID, err)
		}
		for _, res := range resp.GetResults() {
			if res.GetErrorCode() != "" {
				t.Fatalf("round %d: %s %s", round, res.GetErrorCode(), res.GetErrorMessage())
			}
		}
		return
	}
}

// TestRaftGroupReplicatesFailsOverAndCatchesUp runs three replicas: every
// batch the leader commits is on all three, byte for byte; when the leader
// stops a new one is elected within the seed's bounds and takes writes; the
// old leader, restarted on its own directory, catches up; a follower is not
// allowed to write.
func TestRaftGroupReplicatesFailsOverAndCatchesUp(t *testing.T) {
	group := startGroup(t, 3)

	for round := 0; round < 20; round++ {
		commitBatch(t, group, round)
	}
	waitConverged(t, group)

	for _, r := range group {
		if r != leaderOf(t, group) {
			if _, err := r.svc.ApplyBatch(context.Background(), &fedsyncv1.ApplyBatchRequest{Items: []*fedsyncv1.ApplyRequest{{Id: "x", DataType: "note", Patch: []byte(`{}`)}}}); err == nil {
				t.Fatal("a follower committed a change itself")
			}
			break
		}
	}

	old := leaderOf(t, group)
	stopped := time.Now()
	old.stop()
	leader := leaderOf(t, group)
	t.Logf("new leader %s after %v", leader.cfg.ID, time.Since(stopped))
	if d := time.Since(stopped); d > 2*time.Second {
		t.Errorf("a new leader took %v", d)
	}
	for round := 20; round < 30; round++ {
		commitBatch(t, group, round)
	}
	// A re-delivered batch (merge retrying after the old leader died) is a
	// duplicate, not a second version.
	req := &fedsyncv1.ApplyBatchRequest{Items: []*fedsyncv1.ApplyRequest{{Id: "doc-0", DataType: "note", MessageId: "m-3-0", Patch: []byte(`{"round":3}`)}}}
	resp, err := leaderOf(t, group).svc.ApplyBatch(context.Background(), req)
	if err != nil || !resp.GetResults()[0].GetDuplicate() {
		t.Fatalf("re-delivered delta: %v %v", resp, err)
	}
	startReplica(t, old)
	waitConverged(t, group)
	st, err := old.st.get("doc-0")
	if err != nil || st.GetVersion() != 90 { // 30 rounds of 3 changes (items 0, 4 and 8)
		t.Fatalf("doc-0 on the restarted replica: version %d, %v", st.GetVersion(), err)
	}
}

// TestSnapshotRestoresAnotherStore copies one store into another through
// the snapshot a lagging replica would be sent, sequences included.
func TestSnapshotRestoresAnotherStore(t *testing.T) {
	src, _ := newTestService(t, t.TempDir())
	for i := 0; i < 30; i++ {
		apply(t, src, &fedsyncv1.ApplyRequest{Id: fmt.Sprintf("d%d", i%3), DataType: "note", Patch: []byte(fmt.Sprintf(`{"i":%d}`, i)), MessageId: fmt.Sprint(i)})
	}
	snap, err := src.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	dst, dstStore := newTestService(t, t.TempDir())
	apply(t, dst, &fedsyncv1.ApplyRequest{Id: "stale", DataType: "note", Patch: []byte(`{"gone":true}`)})
	if err := dst.fsm.Restore(sink); err != nil {
		t.Fatal(err)
	}
	a, b := storeDigest(t, &replica{st: src.store}), storeDigest(t, &replica{st: dstStore})
	if a != b {
		t.Fatalf("restored store differs:\n%s\n%s", a, b)
	}
	// The log continues at the same sequence.
	r := apply(t, dst, &fedsyncv1.ApplyRequest{Id: "d0", DataType: "note", Patch: []byte(`{"i":99}`)})
	if r.GetSeq() != 31 || r.GetVersion() != 11 {
		t.Fatalf("after restore: seq %d version %d", r.GetSeq(), r.GetVersion())
	}
	if r := apply(t, dst, &fedsyncv1.ApplyRequest{Id: "d1", DataType: "note", Patch: []byte(`{"i":1}`), MessageId: "1"}); !r.GetDuplicate() {
		t.Fatal("applied message ids were not restored")
	}
}

type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }

// pairProxies puts a toxiproxy proxy on each directed pair of replicas, so a
// test can cut one replica off from the others in both directions.
type pairProxies struct {
	proxies map[[2]string]*toxiproxy.Proxy // [from, to]
	addrs   map[[2]string]string
}

func (p *pairProxies) provider(from string) raft.ServerAddressProvider {
	return addrFunc(func(id raft.ServerID) (raft.ServerAddress, error) {
		return raft.ServerAddress(p.addrs[[2]string{from, string(id)}]), nil
	})
}

type addrFunc func(raft.ServerID) (raft.ServerAddress, error)

func (f addrFunc) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) { return f(id) }

// isolate cuts (or, with cut false, heals) every link to and from id.
func (p *pairProxies) isolate(t *testing.T, id string, cut bool) {
	t.Helper()
	for pair, px := range p.proxies {
		if pair[0] != id && pair[1] != id {
			continue
		}
		if cut {
			px.Stop()
		} else if err := px.Start(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPartitionedReplicaRefusesWritesServesStaleReadsAndRejoins cuts a
// follower off from the other two (seed 4.1 scenario 3): the majority goes
// on committing; the cut-off replica knows no leader, refuses writes with
// 503, Retry-After and the cause, and still serves reads marked stale; after
// the heal it catches up and all three hold the same bytes.
func TestPartitionedReplicaRefusesWritesServesStaleReadsAndRejoins(t *testing.T) {
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	ids := []string{"r0", "r1", "r2"}
	real := map[string]string{}
	var peers raftgroup.PeerList
	for _, id := range ids {
		real[id] = freeAddr(t)
		peers = append(peers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(real[id])})
	}
	pp := &pairProxies{proxies: map[[2]string]*toxiproxy.Proxy{}, addrs: map[[2]string]string{}}
	for _, from := range ids {
		for _, to := range ids {
			if from == to {
				continue
			}
			px := toxiproxy.NewProxy(server, from+"-"+to, "127.0.0.1:0", real[to])
			if err := px.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(px.Stop)
			pp.proxies[[2]string{from, to}], pp.addrs[[2]string{from, to}] = px, px.Listen
		}
	}
	group := startGroupOn(t, peers, func(c *raftgroup.Config) {
		c.LeaderWait, c.DialAddr = 500*time.Millisecond, pp.provider(c.ID)
	})

	for round := 0; round < 5; round++ {
		commitBatch(t, group, round)
	}
	waitConverged(t, group)
	cut := followerOf(group, leaderOf(t, group))
	pp.isolate(t, cut.cfg.ID, true)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, id := cut.node.Raft.LeaderWithID(); id == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cut-off replica still names a leader after 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The majority goes on.
	if leaderOf(t, group) == cut {
		t.Fatal("the cut-off replica claims to lead")
	}
	for round := 5; round < 10; round++ {
		commitBatch(t, group, round)
	}
	// The minority refuses writes, naming the cause, and serves stale reads.
	routed := LeaderRoutingMiddleware(node{cut.node}, insecure.NewCredentials())(cut.svc)
	_, err := routed.ApplyBatch(context.Background(), &fedsyncv1.ApplyBatchRequest{Items: []*fedsyncv1.ApplyRequest{{Id: "doc-0", DataType: "note", Patch: []byte(`{"x":1}`)}}})
	e := apierr.As(err)
	if e.Code != apierr.Unavailable || e.RetryAfter == 0 || e.Details["cause"] != "no_quorum" {
		t.Fatalf("a write on the minority: %+v", e)
	}
	if _, err := routed.Get(context.Background(), &fedsyncv1.GetRequest{Id: "doc-0"}); apierr.As(err).Code != apierr.Unavailable {
		t.Fatalf("a linearizable read on the minority: %v", err)
	}
	stale, err := routed.Get(WithStaleRead(context.Background()), &fedsyncv1.GetRequest{Id: "doc-0"})
	if err != nil || stale.GetState().GetVersion() != 15 { // 5 rounds of 3 changes, before the cut
		t.Fatalf("a stale read on the minority: %v %v", stale.GetState().GetVersion(), err)
	}
	// Heal: the replica catches up before it serves linearizable reads again.
	pp.isolate(t, cut.cfg.ID, false)
	waitConverged(t, group)
	if st, _ := cut.st.get("doc-0"); st.GetVersion() != 30 {
		t.Fatalf("after the heal the replica holds doc-0 at version %d, want 30", st.GetVersion())
	}
}

// TestReplicaWithLostDiskCatchesUpFromSnapshot replaces a follower's data
// dir with an empty one after the leader compacted its log into a snapshot:
// the replica, started again under its ID, is sent the snapshot (Restore),
// then the entries after it, and holds the same bytes as the others.
func TestReplicaWithLostDiskCatchesUpFromSnapshot(t *testing.T) {
	group := startGroupWith(t, 3, func(c *raftgroup.Config) { c.TrailingLogs = 2 })

	for round := 0; round < 10; round++ {
		commitBatch(t, group, round)
	}
	waitConverged(t, group)
	lost := followerOf(group, leaderOf(t, group))
	lost.stop()
	for round := 10; round < 15; round++ {
		commitBatch(t, group, round)
	}
	if err := leaderOf(t, group).node.Raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	lost.dir = t.TempDir() // the disk is gone
	startReplica(t, lost)
	for round := 15; round < 17; round++ {
		commitBatch(t, group, round)
	}
	waitConverged(t, group)
	if st, err := lost.st.get("doc-0"); err != nil || st.GetVersion() != 51 {
		t.Fatalf("the rebuilt replica holds doc-0 at version %d, %v; want 51", st.GetVersion(), err)
	}
	if idx := lost.node.Raft.Stats()["last_snapshot_index"]; idx == "0" {
		t.Fatal("the rebuilt replica caught up without the snapshot: the test did not exercise Restore")
	}
}
