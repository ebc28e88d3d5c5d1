package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedsync/fedsync/tools/devstack"
)

// TestKillMergeAndStatestoreLosesNothing pushes deltas from several agents while
// merge and then statestore are killed with SIGKILL and restarted. Every delta
// that got 202 must be in the final state exactly once: each sets its own field,
// and each document's version equals the number of its accepted deltas.
func TestKillMergeAndStatestoreLosesNothing(t *testing.T) {
	crashUnderLoad(t, startStack(t), 5, 60, 10*time.Millisecond, "merge", "statestore")
}

// TestKillMergeMidBatch and TestKillStatestoreMidBatch kill a service while it
// holds a batch: 12 agents push without pause, so at the kill merge has a
// batch of many deltas in flight, and the statestore leader Raft entries
// that are in its log but not yet on a majority's, or committed and not yet
// applied. Nothing acknowledged may be lost or applied twice.
func TestKillMergeMidBatch(t *testing.T) {
	crashUnderLoad(t, startStack(t), 12, 40, 0, "merge")
}

func TestKillStatestoreMidBatch(t *testing.T) {
	crashUnderLoad(t, startStack(t), 12, 40, 0, leaderReplica)
}

// TestKillStatestoreLeaderRepeatedly kills the statestore's Raft leader with
// SIGKILL 20 times while agents push without pause, restarting each killed
// replica. Every kill must be followed by a new leader within a second, and
// every acknowledged delta must be in the final state exactly once.
func TestKillStatestoreLeaderRepeatedly(t *testing.T) {
	kills := make([]string, 20)
	for i := range kills {
		kills[i] = leaderReplica
	}
	elections := crashUnderLoad(t, startStack(t), 12, 120, 0, kills...)
	slices.Sort(elections)
	if len(elections) > 0 {
		t.Logf("time to a new leader over %d kills: p50 %v, max %v", len(elections), elections[len(elections)/2], elections[len(elections)-1])
		if elections[len(elections)-1] > time.Second {
			t.Errorf("a new leader took %v (target < 1 s)", elections[len(elections)-1])
		}
	}
}

// leaderReplica, as a name to kill, is whichever statestore replica leads
// at the time.
const leaderReplica = "statestore (leader)"

// crashUnderLoad has agents push perAgent deltas each (pause between them)
// while each of kill is killed with SIGKILL and restarted in turn, then checks
// every accepted delta is in the final state exactly once. It returns, for
// each kill of the statestore leader, the time until another replica led.
func crashUnderLoad(t *testing.T, s *devstack.Stack, agents, perAgent int, pause time.Duration, kill ...string) (elections []time.Duration) {
	const ids = 4
	ags := make([]*agent, agents)
	for i := range ags {
		region := "na"
		if i%2 == 1 {
			region = "eu"
		}
		ags[i] = newAgent(t, s, fmt.Sprintf("ai-%03d", i+1), region)
	}
	var mu sync.Mutex
	accepted := map[string]map[string]bool{} // id -> fields
	var sent atomic.Int32
	var wg sync.WaitGroup
	for i, ag := range ags {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < perAgent; n++ {
				id := fmt.Sprintf("shared-crash-%d", n%ids)
				field := fmt.Sprintf("a%d_n%d", i, n)
				body := fmt.Sprintf(`{"id":%q,"data_type":"note","patch":{%q:%d},"message_id":"m-%d-%d"}`, id, field, n, i, n)
				first := time.Now()
				for {
					status, _ := ag.push(body)
					if status == 202 {
						mu.Lock()
						if accepted[id] == nil {
							accepted[id] = map[string]bool{}
						}
						accepted[id][field] = true
						mu.Unlock()
						break
					}
					if time.Since(first) > 60*time.Second {
						t.Errorf("delta %s not accepted within 60 s (last status %d)", field, status)
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
				sent.Add(1)
				time.Sleep(pause)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	waitSent := func(n int32) {
		for sent.Load() < n {
			select {
			case <-done: // every agent finished or gave up
				t.Fatalf("the agents stopped after %d of %d deltas", sent.Load(), agents*perAgent)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	ctx := context.Background()
	for k, name := range kill {
		waitSent(int32(agents * perAgent * (k + 1) / (len(kill) + 2)))
		leader := name == leaderReplica
		if leader {
			var err error
			if name, err = s.StateStoreLeader(ctx, 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		killed := time.Now()
		if err := s.Kill(name); err != nil {
			t.Fatal(err)
		}
		if leader {
			next, err := s.StateStoreLeader(ctx, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			elections = append(elections, time.Since(killed))
			t.Logf("killed leader %s; %s leads after %v", name, next, time.Since(killed).Round(time.Millisecond))
		}
		time.Sleep(500 * time.Millisecond)
		if err := s.Restart(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()

	reader := ags[0]
	for id, fields := range accepted {
		got := reader.waitVersion(id, float64(len(fields)), 90*time.Second)
		if got["version"] != float64(len(fields)) {
			t.Errorf("%s: version %v after %d accepted deltas: a delta was applied twice", id, got["version"], len(fields))
		}
		value := got["value"].(map[string]any)
		for f := range fields {
			if _, ok := value[f]; !ok {
				t.Errorf("%s: accepted delta %s is missing", id, f)
			}
		}
		if len(value) != len(fields) {
			t.Errorf("%s: %d fields, want %d", id, len(value), len(fields))
		}
	}
	return elections
}
