package validation

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/log"

	"github.com/fedsync/fedsync/libs/kafkabus"
)

type fakeLag struct {
	mu             sync.Mutex
	lag, committed int64
	err            error
}

func (f *fakeLag) Lag(context.Context) (int64, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lag, f.committed, f.err
}

func (f *fakeLag) set(lag, committed int64) {
	f.mu.Lock()
	f.lag, f.committed = lag, committed
	f.mu.Unlock()
}

// TestBackPressureRefusesWhileMergeIsBehind: deltas are admitted while the
// backlog is within a second of merge's measured rate, refused with 503,
// Retry-After and the lag in details beyond it, and admitted again once merge
// caught up. Strong writes are not held back.
func TestBackPressureRefusesWhileMergeIsBehind(t *testing.T) {
	iss := newFixture(t).issuer
	lg := &memLog{}
	src := &fakeLag{}
	adm := newAdmission(src, time.Second, 100, 100000, log.NewNopLogger())
	svc := NewService(testTypes(t), lg, &memLog{}, &fakeMerge{}, "na", time.Second, time.Second).WithAdmission(adm)
	eps := MakeEndpoints(svc, func(string) endpoint.Middleware { return func(e endpoint.Endpoint) endpoint.Endpoint { return e } })
	f := &fixture{log: lg, token: iss.Token(t, "ai-001", "L2"), issuer: iss}
	f.srv = newServer(t, NewHTTPHandler(eps, iss.Verifier, 1<<20))

	// Merge finishes 500 deltas/s with a backlog: the bound becomes ~500.
	src.set(50, 0)
	adm.poll(context.Background())
	time.Sleep(200 * time.Millisecond)
	src.set(50, 100)
	adm.poll(context.Background())
	if r := adm.rate.Load(); r < 300 || r > 600 {
		t.Fatalf("estimated rate %d/s, want about 500", r)
	}
	body := `{"id":"ai-001:x","data_type":"note","patch":{"a":1}}`
	if code, _ := f.post(t, "/api/v1/sync/state", f.token, body); code != http.StatusAccepted {
		t.Fatalf("within the bound: %d", code)
	}
	src.set(100000, 100)
	adm.poll(context.Background())
	req, _ := http.NewRequest("POST", f.srv.URL+"/api/v1/sync/state", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+f.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the bound: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	code, out := f.post(t, "/api/v1/sync/state", f.token, body)
	details, _ := out["error"].(map[string]any)["details"].(map[string]any)
	if code != http.StatusServiceUnavailable || details["lag"] == nil || details["limit"] == nil {
		t.Fatalf("refusal %d %v", code, out)
	}
	strong := `{"id":"ai-001:s","data_type":"note","patch":{"a":1},"consistency":"strong","expected_version":0}`
	if code, out := f.post(t, "/api/v1/sync/state", f.token, strong); code != http.StatusOK {
		t.Fatalf("a strong write is not held back by the Kafka backlog: %d %v", code, out)
	}
	src.set(10, 100500)
	adm.poll(context.Background())
	if code, _ := f.post(t, "/api/v1/sync/state", f.token, body); code != http.StatusAccepted {
		t.Fatalf("after merge caught up: %d", code)
	}
	if n := len(lg.records); n != 2 {
		t.Fatalf("%d deltas reached the log, want 2", n)
	}
}

// slowLog acknowledges after a delay, so concurrent requests overlap.
type slowLog struct {
	memLog
	delay time.Duration
}

func (l *slowLog) Publish(ctx context.Context, rs ...kafkabus.Record) error {
	time.Sleep(l.delay)
	return l.memLog.Publish(ctx, rs...)
}

// TestConcurrentDuplicatesShareOneProduce: the same message id sent several
// times at once reaches Kafka once, and every sender gets the same answer.
func TestConcurrentDuplicatesShareOneProduce(t *testing.T) {
	iss := newFixture(t).issuer
	lg := &slowLog{delay: 200 * time.Millisecond}
	svc := NewService(testTypes(t), lg, &memLog{}, &fakeMerge{}, "na", time.Second, time.Second)
	eps := MakeEndpoints(svc, func(string) endpoint.Middleware { return func(e endpoint.Endpoint) endpoint.Endpoint { return e } })
	f := &fixture{token: iss.Token(t, "ai-001", "L2"), issuer: iss}
	f.srv = newServer(t, NewHTTPHandler(eps, iss.Verifier, 1<<20))
	var wg sync.WaitGroup
	codes := make([]int, 5)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = f.post(t, "/api/v1/sync/state", f.token, `{"id":"ai-001:x","data_type":"note","patch":{"a":1},"message_id":"same-1"}`)
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusAccepted {
			t.Fatalf("request %d: %d", i, c)
		}
	}
	if n := len(lg.records); n != 1 {
		t.Fatalf("%d records produced for one message id, want 1", n)
	}
}

func newServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}
