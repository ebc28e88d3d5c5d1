package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/fedsync/fedsync/tools/devstack"
)

// The linearizability check of strong mode (seed 3.1): agents read documents
// (linearizable GET) and write them by compare-and-set (strong writes with
// expected_version) while the statestore's Raft leader is killed again and
// again; porcupine checks the recorded history against a versioned register.

type linInput struct {
	id       string
	write    bool
	expected int // write: the version the write is conditioned on
	value    string
}

type linOutput struct {
	ok, conflict, unknown bool // a write's outcome; a read is ok
	version               int
	value                 string
	// status is the HTTP status or the transport error of an unknown write
	// (for the report).
	status string
}

type linState struct {
	version int
	value   string
}

var registerModel = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byID := map[string][]porcupine.Operation{}
		var ids []string
		for _, op := range history {
			id := op.Input.(linInput).id
			if byID[id] == nil {
				ids = append(ids, id)
			}
			byID[id] = append(byID[id], op)
		}
		var out [][]porcupine.Operation
		for _, id := range ids {
			out = append(out, byID[id])
		}
		return out
	},
	Init: func() []any { return []any{linState{}} },
	Step: func(state, input, output any) []any {
		st, in, out := state.(linState), input.(linInput), output.(linOutput)
		if !in.write {
			if st.version == out.version && st.value == out.value {
				return []any{st}
			}
			return nil
		}
		applied := linState{version: in.expected + 1, value: in.value}
		switch {
		case out.ok:
			if st.version == in.expected && out.version == in.expected+1 {
				return []any{applied}
			}
			return nil
		case out.conflict:
			if st.version != in.expected {
				return []any{st}
			}
			return nil
		default: // unknown: it may or may not have committed, at any time after its call
			if st.version == in.expected {
				return []any{st, applied}
			}
			return []any{st}
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		if !in.write {
			return fmt.Sprintf("get(%s) -> v%d %q", in.id, out.version, out.value)
		}
		return fmt.Sprintf("cas(%s, v%d, %q) -> ok=%v conflict=%v unknown=%v v%d", in.id, in.expected, in.value, out.ok, out.conflict, out.unknown, out.version)
	},
}

// TestStrongModeIsLinearizableAcrossLeaderKills records 25 s of strong-mode
// reads and compare-and-set writes by 6 agents in both regions on 3
// documents while the statestore leader is killed with SIGKILL every 3 s,
// and checks the history with porcupine. Any violation fails the test.
func TestStrongModeIsLinearizableAcrossLeaderKills(t *testing.T) {
	s := startStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	start := time.Now()
	var mu sync.Mutex
	var history []porcupine.Operation
	record := func(client int, in linInput, out linOutput, call, ret time.Time) {
		r := ret.Sub(start).Nanoseconds()
		if out.unknown {
			r = math.MaxInt64 // it may take effect at any later time
		}
		mu.Lock()
		history = append(history, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call.Sub(start).Nanoseconds(), Return: r})
		mu.Unlock()
	}

	kills := 0
	go func() {
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(3 * time.Second):
			}
			name, err := s.StateStoreLeader(context.Background(), 10*time.Second)
			if err != nil {
				continue
			}
			s.Kill(name)
			kills++
			time.Sleep(500 * time.Millisecond)
			s.Restart(context.Background(), name)
		}
	}()

	var wg sync.WaitGroup
	counts := make([]map[string]int, 6)
	for c := 0; c < 6; c++ {
		region := []string{"na", "eu"}[c%2]
		a := newAgent(t, s, fmt.Sprintf("ai-%03d", c+1), region)
		counts[c] = map[string]int{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 15 * time.Second}
			known := map[string]int{} // the version this agent last read of each id
			for n := 0; ctx.Err() == nil; n++ {
				id := fmt.Sprintf("shared-lin-%d", rand.IntN(3))
				if rand.IntN(2) == 0 {
					call := time.Now()
					out, ok := linRead(client, s, region, a.token, id)
					if ok {
						record(c, linInput{id: id}, out, call, time.Now())
						known[id] = out.version
						counts[c]["read"]++
					}
					continue
				}
				in := linInput{id: id, write: true, expected: known[id], value: fmt.Sprintf("c%d-%d", c, n)}
				call := time.Now()
				out := linWrite(client, s, region, a.token, in, fmt.Sprintf("lin-%d-%d", c, n))
				record(c, in, out, call, time.Now())
				switch {
				case out.ok:
					known[id] = out.version
					counts[c]["ok"]++
				case out.conflict:
					known[id] = out.version
					counts[c]["conflict"]++
				default:
					counts[c]["unknown: "+out.status]++
				}
			}
		}()
	}
	wg.Wait()
	total := map[string]int{}
	for _, m := range counts {
		for k, v := range m {
			total[k] += v
		}
	}
	t.Logf("%d operations with %d leader kills: %v", len(history), kills, total)
	if total["ok"] == 0 || total["read"] == 0 || total["conflict"] == 0 {
		t.Fatalf("too little happened to check: %v", total)
	}
	res, info := porcupine.CheckOperationsVerbose(registerModel.ToModel(), history, time.Minute)
	switch res {
	case porcupine.Illegal:
		if f, err := os.CreateTemp("", "fedsync-linearizability-*.html"); err == nil {
			if porcupine.Visualize(registerModel.ToModel(), info, f) == nil {
				t.Logf("the history, with the longest linearizable prefix of each id: %s", f.Name())
			}
			f.Close()
		}
		t.Fatal("the strong-mode history is not linearizable")
	case porcupine.Unknown:
		t.Log("porcupine ran out of time; the history was neither confirmed nor refuted")
	}
}

// linRead is a linearizable GET; ok is false when it had no answer (a 503
// during an election), which constrains nothing.
func linRead(client *http.Client, s *devstack.Stack, region, token, id string) (linOutput, bool) {
	req, _ := http.NewRequest("GET", s.EdgeURL(region)+"/api/v1/sync/state/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return linOutput{}, false
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case 404:
		return linOutput{}, true
	case 200:
		var doc struct {
			Version int               `json:"version"`
			Value   map[string]string `json:"value"`
		}
		if json.NewDecoder(resp.Body).Decode(&doc) != nil {
			return linOutput{}, false
		}
		return linOutput{version: doc.Version, value: doc.Value["v"]}, true
	}
	return linOutput{}, false
}

// linWrite is a strong compare-and-set write.
func linWrite(client *http.Client, s *devstack.Stack, region, token string, in linInput, msgID string) linOutput {
	body, _ := json.Marshal(map[string]any{"id": in.id, "data_type": "note", "consistency": "strong", "expected_version": in.expected,
		"message_id": msgID, "patch": map[string]string{"v": in.value}})
	req, _ := http.NewRequest("POST", s.EdgeURL(region)+"/api/v1/sync/state", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return linOutput{unknown: true, status: "transport"}
	}
	defer resp.Body.Close()
	var out struct {
		Version int `json:"version"`
		Error   struct {
			Code    string         `json:"code"`
			Message string         `json:"message"`
			Details map[string]any `json:"details"`
		} `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	switch {
	case resp.StatusCode == 200:
		return linOutput{ok: true, version: out.Version}
	case resp.StatusCode == 409 && out.Error.Code == "version_conflict":
		cur, _ := out.Error.Details["current_version"].(float64)
		return linOutput{conflict: true, version: int(cur)}
	}
	if os.Getenv("FEDSYNC_LIN_DEBUG") != "" {
		fmt.Printf("%s %d %s\n", time.Now().Format("15:04:05.000"), resp.StatusCode, out.Error.Message)
	}
	return linOutput{unknown: true, status: fmt.Sprintf("%d %s", resp.StatusCode, out.Error.Code)}
}
