package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestHTTPRefusal(t *testing.T) {
	h := http.Header{}
	h.Set("Retry-After", "2")
	re := httpRefusal(503, h, []byte(`{"error":{"code":"unavailable","message":"behind","details":{"lag":1234,"limit":1000}}}`))
	if re == nil || re.code != "503 unavailable" || !re.hasRetryAfter || re.retryAfter != 2*time.Second || re.lag != 1234 {
		t.Fatalf("503 = %+v", re)
	}
	re = httpRefusal(429, http.Header{}, []byte(`{"error":{"code":"rate_limited","message":"slow down"}}`))
	if re == nil || re.code != "429 rate_limited" || re.hasRetryAfter || re.lag != -1 {
		t.Fatalf("429 without Retry-After = %+v", re)
	}
	if httpRefusal(400, h, nil) != nil || httpRefusal(502, h, nil) != nil {
		t.Fatal("400 and 502 are errors, not refusals")
	}
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if d, ok := parseRetryAfter("Tue, 01 Dec 2026 10:00:03 GMT", now); !ok || d != 3*time.Second {
		t.Fatalf("HTTP-date Retry-After = %v %v", d, ok)
	}
	if _, ok := parseRetryAfter("soon", now); ok {
		t.Fatal("a malformed Retry-After parsed")
	}
}

func TestGRPCRefusal(t *testing.T) {
	st, err := status.New(codes.Unavailable, "behind").WithDetails(&errdetails.ErrorInfo{Reason: "unavailable", Domain: "fedsync.io",
		Metadata: map[string]string{"retry_after_ms": "1500", "details": `{"lag":77}`}})
	if err != nil {
		t.Fatal(err)
	}
	re := grpcRefusal(st)
	if re == nil || !re.hasRetryAfter || re.retryAfter != 1500*time.Millisecond || re.lag != 77 || re.code != "grpc Unavailable unavailable" {
		t.Fatalf("refusal = %+v", re)
	}
	if grpcRefusal(status.New(codes.Unavailable, "connection refused")) != nil {
		t.Fatal("a transport failure (no fedsync details) counted as a refusal")
	}
	if grpcRefusal(status.New(codes.InvalidArgument, "bad")) != nil {
		t.Fatal("InvalidArgument counted as a refusal")
	}
}

func TestRefusalPauseAndCheck(t *testing.T) {
	if d := refusalPause(&refusedError{hasRetryAfter: true, retryAfter: time.Second}, 0.5); d != 1050*time.Millisecond {
		t.Fatalf("pause = %v", d)
	}
	if d := refusalPause(&refusedError{}, 0.5); d != 200*time.Millisecond {
		t.Fatalf("pause without Retry-After = %v", d)
	}
	if d := refusalPause(&refusedError{hasRetryAfter: true}, 0); d != 50*time.Millisecond {
		t.Fatalf("pause for Retry-After 0 = %v", d)
	}
	if !admissionOK(104, 100) || admissionOK(106, 100) || !admissionOK(0, 0) {
		t.Fatal("accepted <= committed + 5%")
	}
	if overloadRate(133) != 270 || overloadRate(2) != 10 {
		t.Fatalf("overloadRate = %v %v", overloadRate(133), overloadRate(2))
	}
}

// refusingWriter refuses every other write, then admits the retry.
type refusingWriter struct {
	mu      sync.Mutex
	calls   int
	msgIDs  []string
	refused atomic.Int64
}

func (w *refusingWriter) Put(ctx context.Context, id string, value []byte, msgID string, base int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	w.msgIDs = append(w.msgIDs, msgID)
	if w.calls%2 == 1 {
		w.refused.Add(1)
		return &refusedError{code: "503 unavailable", hasRetryAfter: true, retryAfter: 0, lag: 10}
	}
	return nil
}

func (w *refusingWriter) Close() {}

// The write loop counts refusals apart from errors, waits, and retries the
// same delta: every delta is eventually acknowledged once, under its own
// message id.
func TestWriteLoopRetriesRefusals(t *testing.T) {
	sc := Scenario{Agents: 1, KeysPerAgent: 1}
	ids := []string{"ai-001:k0"}
	tr := NewTracker(1, ids, []string{""}, true)
	st := NewStats()
	st.StartWindow(time.Now().Add(-time.Second))
	w := &refusingWriter{}
	stop := make(chan struct{})
	done := make(chan struct{})
	msgID := func(k deltaKey) string { return fmt.Sprintf("m-%d", k.seq()) }
	go func() {
		writeLoop(context.Background(), 0, w, sc, 0, time.Now(), "", ids, []int{0}, make([]atomic.Int64, 1), tr, st, msgID, stop)
		close(done)
	}()
	time.Sleep(400 * time.Millisecond)
	close(stop)
	<-done
	c := tr.Verify(nil, nil)
	if c.Acked < 2 || c.Unacked != 0 {
		t.Fatalf("acked %d, unacked %d", c.Acked, c.Unacked)
	}
	if errs, _ := st.Errors(); len(errs) != 0 {
		t.Fatalf("refusals counted as errors: %v", errs)
	}
	if st.refusedAll.Load() != w.refused.Load() || st.refusedAllRA.Load() != w.refused.Load() || st.maxLag.Load() != 10 {
		t.Fatalf("refused %d (with Retry-After %d), writer refused %d", st.refusedAll.Load(), st.refusedAllRA.Load(), w.refused.Load())
	}
	// Each refused attempt was retried with the same message id.
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := 0; i+1 < len(w.msgIDs); i += 2 {
		if w.msgIDs[i] != w.msgIDs[i+1] {
			t.Fatalf("attempt %d sent %s, its retry %s", i, w.msgIDs[i], w.msgIDs[i+1])
		}
	}
}

// restWriter turns the service's 503 into a refusal.
func TestRESTWriterRefusal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		if body["id"] != "ai-001:k0" || body["message_id"] != "m-1" {
			http.Error(w, "bad body", 400)
			return
		}
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(503)
		w.Write([]byte(`{"error":{"code":"unavailable","message":"admitted work not committed yet","details":{"lag":5000}}}`))
	}))
	defer srv.Close()
	rw := &restWriter{client: srv.Client(), url: srv.URL, token: "t"}
	err := rw.Put(context.Background(), "ai-001:k0", []byte(`{"w":0,"n":1,"t":1}`), "m-1", 0)
	re, ok := asRefused(err)
	if !ok || re.code != "503 unavailable" || re.retryAfter != time.Second || re.lag != 5000 {
		t.Fatalf("err = %v (%+v)", err, re)
	}
	if !errors.As(err, new(*refusedError)) || errCode(err) == "" {
		t.Fatal("refusal error")
	}
}

func TestOverloadMarkdown(t *testing.T) {
	r := testReport()
	r.Scenario = presets()["overload"]
	yes, no := true, false
	probe := testResult("fedsync", 380, 500, 2000)
	probe.Step, probe.TargetRate, probe.CommittedPerSec = "probe", 0, 135
	probe.AdmissionOK = &no
	fed := r.Results[0]
	fed.Step, fed.TargetRate, fed.AcceptedPerSec, fed.CommittedPerSec = "offered 270/s", 270, 130, 131
	fed.RefusedPerSec, fed.Refused, fed.RefusedAll, fed.RefusedAllRetryAfter, fed.MaxLag = 140, 2800, 3100, 3100, 4200
	fed.AdmissionOK = &yes
	etcd := r.Results[1]
	etcd.Step, etcd.TargetRate = "offered 270/s", 270
	etcd.AdmissionOK = &yes
	r.Results = []*Result{probe, fed, etcd}
	r.Best = map[string]*Result{"fedsync": fed, "etcd": etcd}
	r.OfferedRate, r.ProbeCommittedPerSec = 270, 135
	r.computeRatios()
	md := r.Markdown("")
	for _, want := range []string{
		"Offered load: **270/s**, twice fedsync's maximum (135 committed/s in the probe",
		"| system | step | offered/s | attempted/s | accepted/s | committed/s | refused/s | refused in the run | all with Retry-After | largest lag reported | p99 ms | accepted ≤ committed + 5% | lost |",
		"| fedsync | probe | as fast as acks allow | 380 | 380 | 135 | 0 | 0 | – | – | 2,001 | **no** | 0 |",
		"| fedsync | offered 270/s | 270/s | 270 | 130 | 131 | 140 | 3,100 | yes | 4,200 | 80.1 | yes | 0 |",
		"| etcd | offered 270/s | 270/s | 5,000 | 5,000 | 5,000 | 0 | 0 | – | – | 20.0 | yes | 0 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	fed.RefusedAllRetryAfter = 3000
	if md := r.Markdown(""); !strings.Contains(md, "| **no** (100 without) |") {
		t.Errorf("refusals without Retry-After not flagged:\n%s", md)
	}
	b, _ := json.Marshal(r)
	for _, want := range []string{`"offered_rate":270`, `"refused_per_sec":140`, `"accepted_within_committed_plus_5pct":true`, `"refused_with_retry_after_including_warmup_and_drain":3000`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s", want)
		}
	}
}

// Four writers per agent: every id has exactly one writer, the writer's agent's.
func TestWritersPerAgent(t *testing.T) {
	sc := presets()["overload"]
	if sc.writers() != 53*4 || sc.WritersPerAgent != 4 || !sc.Overload {
		t.Fatalf("overload preset = %+v", sc)
	}
	ids := sc.ids()
	owner := map[int]int{}
	for w := 0; w < sc.writers(); w++ {
		mine := sc.writerIDs(w)
		if len(mine) != 1 {
			t.Fatalf("writer %d writes %v", w, mine)
		}
		for _, i := range mine {
			if prev, ok := owner[i]; ok {
				t.Fatalf("id %s written by writers %d and %d", ids[i], prev, w)
			}
			owner[i] = w
			if !strings.HasPrefix(ids[i], agentName(sc.writerAgent(w))+":") {
				t.Fatalf("writer %d (agent %s) writes %s", w, agentName(sc.writerAgent(w)), ids[i])
			}
		}
	}
	if len(owner) != len(ids) {
		t.Fatalf("%d of %d ids have a writer", len(owner), len(ids))
	}
	// One writer per agent (every other preset): all of the agent's ids in turn.
	st := presets()["steady"]
	if st.writers() != 53 || fmt.Sprint(st.writerIDs(1)) != "[4 5 6 7]" || st.writerIDs(0) == nil {
		t.Fatalf("steady writers = %d, writer 1 ids %v", st.writers(), st.writerIDs(1))
	}
	if presets()["conflict"].writerIDs(3) != nil {
		t.Fatal("shared ids: any writer writes any id")
	}
}
