package statestore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedsync/fedsync/libs/raftgroup"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// TestWarmReplicaFollowsAndTakesOver runs three voters and a warm
// (non-voting) replica (seed 4.2, tier 2). Under continuous writes the warm
// replica is never more than the seed's RPO of 5 s behind (measured: how
// long a commit of the leader takes to reach it); it never votes or leads,
// not even when the leader dies; and when the voters' region is lost it is
// promoted (-raft.recover-as-sole-voter) with every document it held, and
// takes writes (RTO measured).
func TestWarmReplicaFollowsAndTakesOver(t *testing.T) {
	var peers, warmPeer raftgroup.PeerList
	for i := 0; i < 3; i++ {
		peers = append(peers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(fmt.Sprintf("r%d", i)), Address: raft.ServerAddress(freeAddr(t))})
	}
	warmPeer = raftgroup.PeerList{{Suffrage: raft.Voter, ID: "warm", Address: raft.ServerAddress(freeAddr(t))}}
	group := startGroupOn(t, append(append(raftgroup.PeerList{}, peers...), warmPeer...), func(c *raftgroup.Config) {
		c.Peers, c.Nonvoters = peers, warmPeer
	})
	warm := group[3]
	voters := group[:3]

	// Continuous writes; sample how far behind the warm replica is, in time.
	type sample struct {
		at    time.Time
		index uint64
	}
	var (
		mu      sync.Mutex
		leaderS []sample // when the leader first held each index
		worst   time.Duration
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			now := time.Now()
			var li uint64
			for _, r := range voters {
				if r.node.IsLeader() {
					li, _ = r.svc.fsm.AppliedIndex()
				}
			}
			wi, _ := warm.svc.fsm.AppliedIndex()
			mu.Lock()
			if len(leaderS) == 0 || li > leaderS[len(leaderS)-1].index {
				leaderS = append(leaderS, sample{now, li})
			}
			// The oldest leader state the warm replica lacks: it is behind
			// by the time since then.
			for _, s := range leaderS {
				if s.index > wi {
					worst = max(worst, now.Sub(s.at))
					break
				}
			}
			mu.Unlock()
		}
	}()
	deadline := time.Now().Add(3 * time.Second)
	rounds := 0
	for ; time.Now().Before(deadline); rounds++ {
		commitBatch(t, group, rounds)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d batches of 10 in 3 s; the warm replica was at most %v behind the leader", rounds, worst.Round(time.Millisecond))
	if worst > 5*time.Second {
		t.Errorf("the warm replica fell %v behind: the seed's RPO is 5 s", worst)
	}
	waitConverged(t, group)
	if warm.node.Raft.State() == raft.Leader {
		t.Fatal("the warm replica leads")
	}

	// The leader dies: a voter takes over; the warm replica stays a follower.
	old := leaderOf(t, voters)
	old.stop()
	if l := leaderOf(t, voters); l == warm {
		t.Fatal("the warm replica was elected")
	}
	commitBatch(t, group, rounds)
	rounds++
	waitConverged(t, group)
	want := storeDigest(t, warm)
	applied, _ := warm.svc.fsm.AppliedIndex()

	// The voters' region is lost. The warm replica is promoted.
	for _, r := range voters {
		r.stop()
	}
	warm.stop()
	warm.cfg.RecoverAsSoleVoter = true
	start := time.Now()
	startReplica(t, warm)
	leader := leaderOf(t, []*replica{warm})
	elected := time.Since(start)
	if got := storeDigest(t, warm); got != want {
		t.Fatalf("the promoted replica does not hold what it held: %.200s, want %.200s", got, want)
	}
	commitBatch(t, []*replica{warm}, rounds)
	t.Logf("promoted in %v (a store at index %d); first commit %v after the restart", elected.Round(time.Millisecond), applied, time.Since(start).Round(time.Millisecond))
	st, err := leader.svc.Get(context.Background(), &fedsyncv1.GetRequest{Id: "doc-0"})
	if err != nil || st.GetState().GetVersion() != int64(3*(rounds+1)) {
		t.Fatalf("doc-0 on the promoted replica: %v %v, want version %d", st.GetState().GetVersion(), err, 3*(rounds+1))
	}
	conf := warm.node.Raft.GetConfiguration()
	if err := conf.Error(); err != nil || len(conf.Configuration().Servers) != 1 || conf.Configuration().Servers[0].Suffrage != raft.Voter {
		t.Fatalf("configuration after the promotion: %+v %v", conf.Configuration(), err)
	}
}
