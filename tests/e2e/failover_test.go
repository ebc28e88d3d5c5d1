package e2e

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	fedsync "github.com/fedsync/fedsync/sdk/go"
)

// TestSDKHubFailover is seed 4.1 scenario 1 with the Go SDK: 10 agents of
// region na write and subscribe through na, heartbeating every second; region
// na's hub (its validation and broadcaster) is killed. Every agent fails over
// to eu after 3 missed heartbeats, carries on writing there, and its
// subscription resumes from its cursor: every version of its document arrives
// exactly once and in order, and no acknowledged write is lost (the write that
// was in flight is sent again under its message id and applies once).
func TestSDKHubFailover(t *testing.T) {
	s := startStack(t)
	const agents = 10
	const interval = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	type agentRun struct {
		id       string
		c        *fedsync.Client
		sub      *fedsync.Subscription
		mu       sync.Mutex
		acked    int
		ackTimes []time.Time
		// startTimes[i] is when the write acknowledged at ackTimes[i] was sent.
		startTimes []time.Time
		reports    []fedsync.FailoverReport
	}
	runs := make([]*agentRun, agents)
	for i := range runs {
		id := fmt.Sprintf("ai-%03d", i+1)
		a := &agentRun{id: id, c: fedsync.New(fedsync.Config{Edges: []string{s.EdgeURL("na"), s.EdgeURL("eu")}, ClientID: id, ClientSecret: clientSecret(t, s, id)})}
		a.c.OnFailover(func(r fedsync.FailoverReport) {
			a.mu.Lock()
			a.reports = append(a.reports, r)
			a.mu.Unlock()
		})
		go a.c.RunHeartbeats(ctx, interval, 3)
		a.sub = a.c.Subscribe(ctx, fedsync.Filter{IDPrefix: id + ":fo"}, fedsync.SubscribeOptions{MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second})
		runs[i] = a
	}
	for _, a := range runs {
		for ev := range a.sub.Events() {
			if ev.Type == fedsync.EventConnected {
				break
			}
		}
	}

	// Writers: one delta after another, each acknowledged before the next.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, a := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 1; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				started := time.Now()
				if _, err := a.c.Push(ctx, fedsync.Delta{ID: a.id + ":fo", DataType: "note", Patch: map[string]any{"n": n}, MessageID: fmt.Sprintf("%s-fo-%d", a.id, n)}); err != nil {
					t.Errorf("%s push %d: %v", a.id, n, err)
					return
				}
				a.mu.Lock()
				a.acked, a.ackTimes, a.startTimes = n, append(a.ackTimes, time.Now()), append(a.startTimes, started)
				a.mu.Unlock()
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	time.Sleep(3 * time.Second)
	killed := time.Now()
	for _, name := range []string{"validation-na", "broadcaster-na"} {
		if err := s.Kill(name); err != nil {
			t.Fatal(err)
		}
	}
	// Until every agent has written 10 more through eu.
	deadline := time.Now().Add(60 * time.Second)
	for {
		done := 0
		for _, a := range runs {
			a.mu.Lock()
			after := 0
			for _, at := range a.ackTimes {
				if at.After(killed) {
					after++
				}
			}
			a.mu.Unlock()
			if after >= 10 {
				done++
			}
		}
		if done == agents {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s only %d of %d agents write again", done, agents)
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	// Failover time: from the kill to the acknowledgement of the agent's first
	// write sent after it.
	var times []time.Duration
	for _, a := range runs {
		for i, at := range a.ackTimes {
			if a.startTimes[i].After(killed) {
				times = append(times, at.Sub(killed))
				break
			}
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	t.Logf("failover (kill to the first write sent after it acknowledged), %d agents: p50 %s, max %s", len(times), times[len(times)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond))
	if max := times[len(times)-1]; max > 3*interval+10*time.Second {
		t.Errorf("slowest failover took %s; want within 3 heartbeat intervals plus the reconnect", max)
	}

	// Every version exactly once, in order, at every subscriber; nothing lost.
	for _, a := range runs {
		a.mu.Lock()
		acked, reports := a.acked, append([]fedsync.FailoverReport{}, a.reports...)
		a.mu.Unlock()
		want := int64(1)
		for want <= int64(acked) {
			select {
			case ev, ok := <-a.sub.Events():
				if !ok {
					t.Fatalf("%s: subscription ended: %v", a.id, a.sub.Err())
				}
				if ev.Type != fedsync.EventChange {
					continue
				}
				if ev.Change.Version != want {
					t.Fatalf("%s: got version %d, want %d (a gap or a duplicate)", a.id, ev.Change.Version, want)
				}
				want++
			case <-ctx.Done():
				t.Fatalf("%s: stuck at version %d of %d", a.id, want, acked)
			}
		}
		st, err := a.c.Get(ctx, a.id+":fo")
		if err != nil {
			t.Fatal(err)
		}
		if st.Version != int64(acked) {
			t.Errorf("%s: %d writes acknowledged, the document is at version %d", a.id, acked, st.Version)
		}
		if len(reports) != 1 || reports[0].To != s.EdgeURL("eu") {
			t.Errorf("%s: failover reports %+v; want one, to eu", a.id, reports)
		} else {
			t.Logf("%s: failed over after %s of failed heartbeats; checked %d documents at eu, %d behind", a.id, reports[0].Detection.Round(time.Millisecond), reports[0].Checked, len(reports[0].Behind))
		}
	}
}
