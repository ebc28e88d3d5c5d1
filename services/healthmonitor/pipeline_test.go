package healthmonitor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
)

type fakeProbe struct {
	lag, committed, published, dead int64
	head                            uint64
}

func (f *fakeProbe) MergeLag(context.Context) (int64, int64, error) { return f.lag, f.committed, nil }
func (f *fakeProbe) CommitHead(context.Context) (uint64, error)     { return f.head, nil }
func (f *fakeProbe) Published(context.Context) (int64, error)       { return f.published, nil }
func (f *fakeProbe) DeadLettered(context.Context) (int64, error)    { return f.dead, nil }

func kinds(p *pipeline) string {
	var ks []string
	for _, i := range p.current() {
		ks = append(ks, i.GetKind())
	}
	return strings.Join(ks, ",")
}

// TestPipelineWatch: a consumer or an outbox that stands still with work
// waiting, and dead letters within the window, each become an issue; moving
// stages and idle ones do not.
func TestPipelineWatch(t *testing.T) {
	f := &fakeProbe{}
	p := newPipeline(f, 30*time.Second, 5*time.Minute, log.NewNopLogger())
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	step := func(d time.Duration) { now = now.Add(d); p.check(context.Background()) }
	step(0)
	// Busy and moving: fine.
	for i := 0; i < 10; i++ {
		f.lag, f.committed, f.head, f.published = 50, f.committed+100, f.head+100, f.published+100
		step(10 * time.Second)
	}
	if k := kinds(p); k != "" {
		t.Fatalf("a moving pipeline has issues %s", k)
	}
	// Idle (no lag, nothing new): fine however long.
	f.lag = 0
	step(10 * time.Minute)
	if k := kinds(p); k != "" {
		t.Fatalf("an idle pipeline has issues %s", k)
	}
	// merge stops with deltas waiting.
	f.lag = 40
	step(20 * time.Second)
	if k := kinds(p); k != "" {
		t.Fatalf("20 s still is not yet stuck: %s", k)
	}
	step(15 * time.Second)
	if k := kinds(p); k != IssueConsumerStuck {
		t.Fatalf("merge stuck 35 s: %q", k)
	}
	f.committed += 40
	f.lag = 0
	step(5 * time.Second)
	// The outbox stops: commits, nothing published.
	f.head += 10
	step(10 * time.Second)
	step(25 * time.Second)
	if k := kinds(p); k != IssueOutboxStuck || !strings.Contains(p.current()[0].GetMessage(), "10 changes") {
		t.Fatalf("outbox stuck: %q %v", k, p.current())
	}
	f.published += 10
	step(5 * time.Second)
	if k := kinds(p); k != "" {
		t.Fatalf("after the outbox caught up: %s", k)
	}
	// Dead letters: an issue for the window after they arrive.
	f.dead += 3
	step(5 * time.Second)
	if k := kinds(p); k != IssueDeadLetters {
		t.Fatalf("dead letters: %q", k)
	}
	step(6 * time.Minute)
	step(5 * time.Second)
	if k := kinds(p); k != "" {
		t.Fatalf("dead letters after the window: %q", k)
	}
	svc := newService(&prober{}, newAgents(time.Minute, log.NewNopLogger(), func(string, ...string) {}), nil)
	svc.pipeline = p
	f.dead += 1
	step(5 * time.Second)
	resp, _ := svc.GetHealth(context.Background(), nil)
	if resp.GetStatus() != Degraded || len(resp.GetIssues()) != 1 {
		t.Fatalf("health with an issue: %s %v", resp.GetStatus(), resp.GetIssues())
	}
}
