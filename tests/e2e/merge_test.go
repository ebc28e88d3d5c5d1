package e2e

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

// collector follows a WebSocket subscription and keeps the latest change per id.
type collector struct {
	mu     sync.Mutex
	latest map[string]map[string]any
	seen   map[string][]float64
}

func collect(t *testing.T, a *agent, prefix string) *collector {
	s, _ := a.subscribe(map[string]any{"id_prefix": prefix})
	c := &collector{latest: map[string]map[string]any{}, seen: map[string][]float64{}}
	go func() {
		for {
			var m map[string]any
			if err := readJSON(s, &m); err != nil {
				return
			}
			if m["type"] != "change" {
				continue
			}
			id := m["id"].(string)
			c.mu.Lock()
			c.seen[id] = append(c.seen[id], m["version"].(float64))
			c.latest[id] = m
			c.mu.Unlock()
		}
	}()
	return c
}

// TestConcurrentWritersConvergeInEveryMode: 10 agents write the same ids at once
// in each consistency mode; every subscriber (one per region) ends with the state
// GET returns, having seen each id's versions in order without gaps.
func TestConcurrentWritersConvergeInEveryMode(t *testing.T) {
	s := startStack(t)
	const writers = 10
	ags := make([]*agent, writers)
	for i := range ags {
		region := []string{"na", "eu"}[i%2]
		ags[i] = newAgent(t, s, fmt.Sprintf("ai-%03d", i+1), region)
	}
	subs := []*collector{collect(t, newAgent(t, s, "ai-040", "na"), "shared-"), collect(t, newAgent(t, s, "ai-041", "eu"), "shared-")}
	ids := map[string]bool{}
	var idsMu sync.Mutex
	addID := func(id string) { idsMu.Lock(); ids[id] = true; idsMu.Unlock() }
	strongCommits := 0
	var wg sync.WaitGroup
	for i, ag := range ags {
		wg.Add(1)
		go func() {
			defer wg.Done()
			me := fmt.Sprintf("ai-%03d", i+1)
			var counter int64
			for n := 0; n < 12; n++ {
				// eventual: everyone writes the same two documents
				id := fmt.Sprintf("shared-note-%d", n%2)
				addID(id)
				if st, b := ag.pushPatiently(fmt.Sprintf(`{"id":%q,"data_type":"note","patch":{"last":%q,"w%d":%d}}`, id, me, i, n)); st != 202 {
					t.Errorf("eventual: %d %v", st, b)
				}
				// eventual with resolvers: a shared knowledge graph
				addID("shared-kg")
				if st, b := ag.pushPatiently(fmt.Sprintf(`{"id":"shared-kg","data_type":"knowledge_graph","patch":{"entities":["e%d"],"observations":1,"confidence":%v}}`, i, float64(n)/12)); st != 202 {
					t.Errorf("kg: %d %v", st, b)
				}
				// causal: a chain per writer, on shared documents
				counter++
				bid := fmt.Sprintf("shared-belief-%d", n%3)
				addID(bid)
				if st, b := ag.pushPatiently(fmt.Sprintf(`{"id":%q,"data_type":"belief","patch":{"statement":"%s says %d","evidence":["%s-%d"]},"vector_clock":{%q:%d}}`, bid, me, n, me, n, me, counter)); st != 202 {
					t.Errorf("causal: %d %v", st, b)
				}
			}
			// strong: compare-and-set loops on one task
			addID("shared-task")
			for done := 0; done < 3; {
				_, cur := ag.get("shared-task")
				version, _ := cur["version"].(float64)
				st, b := ag.push(fmt.Sprintf(`{"id":"shared-task","data_type":"task","patch":{"title":"t","status":"running","assignee":%q,"attempts":1},"expected_version":%d}`, me, int(version)))
				switch st {
				case 200:
					done++
					idsMu.Lock()
					strongCommits++
					idsMu.Unlock()
				case 409:
				default:
					t.Errorf("strong: %d %v", st, b)
					return
				}
			}
		}()
	}
	wg.Wait()
	reader := ags[0]
	// Quiescence: the counters show every eventual delta merged.
	kg := reader.waitField("shared-kg", "observations", float64(writers*12), 60*time.Second)
	if got := len(kg["value"].(map[string]any)["entities"].([]any)); got != writers {
		t.Errorf("union of entities has %d items, want %d", got, writers)
	}
	task := reader.waitField("shared-task", "attempts", float64(strongCommits), 30*time.Second)
	if task["version"] != float64(strongCommits) || strongCommits != writers*3 {
		t.Errorf("strong: %d commits, version %v", strongCommits, task["version"])
	}
	for b := 0; b < 3; b++ {
		reader.waitVersion(fmt.Sprintf("shared-belief-%d", b), float64(writers*4), 60*time.Second)
	}
	for id := range ids {
		_, want := reader.get(id)
		wantValue, _ := json.Marshal(want["value"])
		deadline := time.Now().Add(20 * time.Second)
		for i, sub := range subs {
			for {
				sub.mu.Lock()
				got := sub.latest[id]
				seen := append([]float64(nil), sub.seen[id]...)
				sub.mu.Unlock()
				gotValue, _ := json.Marshal(got["value"])
				if got != nil && got["version"] == want["version"] && string(gotValue) == string(wantValue) {
					for k := 1; k < len(seen); k++ {
						if seen[k] != seen[k-1]+1 {
							t.Errorf("subscriber %d saw %s versions %v: a gap or repeat", i, id, seen)
							break
						}
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("subscriber %d has %s at %v %s, GET has %v %s", i, id, got["version"], gotValue, want["version"], wantValue)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
}

// TestReviewQueueThroughAPI: a type mismatch keeps the stored value and waits in
// the review queue; L2 may not see it, L3 resolves it with a committed change
// whose provenance names the resolver.
func TestReviewQueueThroughAPI(t *testing.T) {
	s := startStack(t)
	a := newAgent(t, s, "ai-001", "na")
	coord := newAgent(t, s, "coordinator", "na")
	a.push(`{"id":"ai-001:size","data_type":"note","patch":{"size":3},"message_id":"size-1"}`)
	a.waitVersion("ai-001:size", 1, 20*time.Second)
	a.push(`{"id":"ai-001:size","data_type":"note","patch":{"size":"big","colour":"red"},"message_id":"size-2"}`)
	got := a.waitVersion("ai-001:size", 2, 20*time.Second)
	if v := got["value"].(map[string]any); v["size"] != float64(3) || v["colour"] != "red" {
		t.Fatalf("a mismatched field must keep its stored value, the rest applies: %v", v)
	}
	if st, body, _ := a.do("GET", "/api/v1/sync/conflicts", nil, a.token); st != 403 || body["error"].(map[string]any)["code"] != "permission_denied" {
		t.Fatalf("L2 reading the review queue: %d %v", st, body)
	}
	var conflicts []any
	for deadline := time.Now().Add(10 * time.Second); len(conflicts) == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		_, body, _ := coord.do("GET", "/api/v1/sync/conflicts", nil, coord.token)
		conflicts, _ = body["conflicts"].([]any)
	}
	if len(conflicts) != 1 {
		t.Fatalf("review queue: %v", conflicts)
	}
	c := conflicts[0].(map[string]any)
	if c["conflict_type"] != "type_mismatch" || c["field"] != "size" || c["status"] != "pending" {
		t.Fatalf("conflict %v", c)
	}
	st, body, _ := coord.do("POST", "/api/v1/sync/conflicts/"+c["id"].(string)+"/resolve", []byte(`{"choice":"remote"}`), coord.token)
	if st != 200 || body["version"] != float64(3) {
		t.Fatalf("resolve: %d %v", st, body)
	}
	if st, _, _ := coord.do("POST", "/api/v1/sync/conflicts/"+c["id"].(string)+"/resolve", []byte(`{"choice":"local"}`), coord.token); st != 409 {
		t.Fatalf("resolving twice: %d", st)
	}
	_, doc, _ := a.do("GET", "/api/v1/sync/state/ai-001:size?provenance=true", nil, a.token)
	prov := doc["provenance"].(map[string]any)["size"].(map[string]any)
	if doc["value"].(map[string]any)["size"] != "big" || prov["writer"] != "coordinator" {
		t.Fatalf("after resolution: %v", doc)
	}
	if st, o, _ := a.do("GET", "/api/v1/sync/outcomes/size-1", nil, a.token); st != 200 || o["status"] != "committed" || o["version"] != float64(1) {
		t.Fatalf("outcome: %d %v", st, o)
	}
}
