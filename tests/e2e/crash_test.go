package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestKillMergeAndStatestoreLosesNothing pushes deltas from several agents while
// merge and then statestore are killed with SIGKILL and restarted. Every delta
// that got 202 must be in the final state exactly once: each sets its own field,
// and each document's version equals the number of its accepted deltas.
func TestKillMergeAndStatestoreLosesNothing(t *testing.T) {
	s := startStack(t)
	const agents, perAgent, ids = 5, 60, 4
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
				for attempt := 0; ; attempt++ {
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
					if attempt > 100 {
						t.Errorf("delta %s never accepted (last status %d)", field, status)
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
				sent.Add(1)
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	waitSent := func(n int32) {
		for sent.Load() < n {
			time.Sleep(10 * time.Millisecond)
		}
	}
	ctx := context.Background()
	waitSent(agents * perAgent / 4)
	if err := s.Kill("merge"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := s.Restart(ctx, "merge"); err != nil {
		t.Fatal(err)
	}
	waitSent(agents * perAgent / 2)
	if err := s.Kill("statestore"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := s.Restart(ctx, "statestore"); err != nil {
		t.Fatal(err)
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
}
