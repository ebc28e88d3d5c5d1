package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestStatestoreQuorumLoss kills two of the statestore's three replicas.
// Eventual deltas are still admitted (202: they wait durably in Kafka) or
// refused by the back-pressure bound (503 with Retry-After); a strong write,
// which needs a commit, is refused with 503 within its 10 s bound; a read
// marked stale is served by the surviving replica while a linearizable one is
// refused. Once the two are back, everything admitted commits.
func TestStatestoreQuorumLoss(t *testing.T) {
	s := startStack(t)
	ctx := context.Background()
	a := newAgent(t, s, "ai-001", "na")
	if st, _ := a.push(`{"id":"ai-001:quorum","data_type":"note","patch":{"before":1},"message_id":"q-0"}`); st != 202 {
		t.Fatalf("push before the loss: %d", st)
	}
	a.waitVersion("ai-001:quorum", 1, 30*time.Second)

	leader, err := s.StateStoreLeader(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var killed []string
	for _, name := range s.StateStoreNames() {
		if len(killed) < 2 && name != leader {
			killed = append(killed, name)
		}
	}
	killed[1] = leader // a follower and the leader: the survivor is a follower without a majority
	for _, name := range killed {
		if err := s.Kill(name); err != nil {
			t.Fatal(err)
		}
	}

	admitted := 0
	for i := 1; i <= 20; i++ {
		st, body := a.push(fmt.Sprintf(`{"id":"ai-001:quorum","data_type":"note","patch":{"f%d":%d},"message_id":"q-%d"}`, i, i, i))
		switch st {
		case 202:
			admitted++
		case 503:
		default:
			t.Fatalf("eventual delta %d without a statestore majority: %d %v", i, st, body)
		}
	}
	if admitted == 0 {
		t.Fatal("no eventual delta was admitted without a statestore majority; they should wait in Kafka")
	}

	start := time.Now()
	st, body := a.push(`{"id":"ai-001:quorum-strong","data_type":"note","consistency":"strong","expected_version":0,"patch":{"a":1},"message_id":"qs-1"}`)
	if st != http.StatusServiceUnavailable {
		t.Fatalf("strong write without a majority: %d %v, want 503", st, body)
	}
	strongTook := time.Since(start)
	if strongTook > 12*time.Second {
		t.Errorf("the strong write was refused after %v; its bound is 10 s", strongTook)
	}

	st, _, h := a.do("GET", "/api/v1/sync/state/ai-001:quorum?consistency=stale", nil, a.token)
	if st != 200 || h.Get("Fedsync-Consistency") != "stale" {
		t.Errorf("stale read on the surviving replica: %d, header %q", st, h.Get("Fedsync-Consistency"))
	}
	st, body, _ = a.do("GET", "/api/v1/sync/state/ai-001:quorum", nil, a.token)
	if st != http.StatusServiceUnavailable {
		t.Errorf("linearizable read without a majority: %d %v, want 503", st, body)
	}

	for _, name := range killed {
		if err := s.Restart(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	got := a.waitVersion("ai-001:quorum", float64(1+admitted), 60*time.Second)
	if got["version"] != float64(1+admitted) {
		t.Fatalf("after the majority returned: version %v, want %d (every admitted delta once)", got["version"], 1+admitted)
	}
	t.Logf("without a majority: %d of 20 eventual deltas admitted, all committed after the heal; strong write refused after %v",
		admitted, strongTook.Round(time.Millisecond))
}
