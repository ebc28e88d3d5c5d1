package validation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/authtoken/authtokentest"
	"github.com/fedsync/fedsync/libs/datatypes"
	"github.com/fedsync/fedsync/libs/kafkabus"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// memLog is a fake Log for callers' tests; the real producer is tested in
// libs/kafkabus against a Kafka broker.
type memLog struct {
	mu      sync.Mutex
	records []kafkabus.Record
	down    bool
}

func (l *memLog) Publish(_ context.Context, rs ...kafkabus.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return errors.New("kafka: connection refused")
	}
	l.records = append(l.records, rs...)
	return nil
}

type fakeMerge struct{ version int64 }

func (f *fakeMerge) CommitStrong(_ context.Context, d *fedsyncv1.Delta) (int64, error) {
	if d.ExpectedVersion != f.version {
		return 0, apierr.New(apierr.VersionConflict, "stale").WithDetail("current_version", f.version)
	}
	f.version++
	return f.version, nil
}

// testTypes is the registry shipped in config/datatypes.yaml.
func testTypes(t *testing.T) *datatypes.Watcher {
	r, err := datatypes.Load("../../config/datatypes.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	return datatypes.Static(r)
}

type fixture struct {
	srv    *httptest.Server
	log    *memLog
	token  string
	issuer *authtokentest.Issuer
}

func newFixture(t *testing.T) *fixture {
	iss := authtokentest.New(t)
	lg := &memLog{}
	svc := NewService(testTypes(t), lg, &memLog{}, &fakeMerge{}, "na", time.Second, time.Second)
	eps := MakeEndpoints(svc, func(string) endpoint.Middleware { return func(e endpoint.Endpoint) endpoint.Endpoint { return e } })
	srv := httptest.NewServer(NewHTTPHandler(eps, iss.Verifier, 1<<20))
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, log: lg, token: iss.Token(t, "ai-001", "L2"), issuer: iss}
}

func (f *fixture) post(t *testing.T, path, token, body string) (int, map[string]any) {
	req, _ := http.NewRequest("POST", f.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func TestPushStateBadInput(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		path   string
		token  string
		body   string
		status int
		code   string
		field  string
	}{
		{"malformed json", "/api/v1/sync/state", f.token, `{"id":`, 400, "invalid_argument", ""},
		{"missing id", "/api/v1/sync/state", f.token, `{"data_type":"note","patch":{}}`, 400, "invalid_argument", "id"},
		{"invalid UTF-8 (F3)", "/api/v1/sync/state", f.token, "{\"id\":\"ai-001:u\",\"data_type\":\"note\",\"patch\":{\"s\":\"\xff\"}}", 400, "invalid_argument", "UTF-8"},
		{"Id beside id", "/api/v1/sync/state", f.token, `{"id":"ai-001:a","Id":"ai-002:b","data_type":"note","patch":{"a":1}}`, 400, "invalid_argument", "Id"},
		{"number beyond a double (F4)", "/api/v1/sync/state", f.token, `{"id":"ai-001:n","data_type":"note","patch":{"n":1e400}}`, 400, "invalid_argument", "n"},
		{"bad id", "/api/v1/sync/state", f.token, `{"id":"has space","data_type":"note","patch":{}}`, 400, "invalid_argument", "id"},
		{"missing data_type", "/api/v1/sync/state", f.token, `{"id":"a","patch":{}}`, 400, "invalid_argument", "data_type"},
		{"missing patch", "/api/v1/sync/state", f.token, `{"id":"a","data_type":"note"}`, 400, "invalid_argument", "patch"},
		{"patch not object", "/api/v1/sync/state", f.token, `{"id":"a","data_type":"note","patch":[1]}`, 400, "invalid_argument", "patch"},
		{"wrong field type", "/api/v1/sync/state", f.token, `{"id":"a","data_type":"note","patch":{},"priority":"high"}`, 400, "invalid_argument", "priority"},
		{"priority out of range", "/api/v1/sync/state", f.token, `{"id":"a","data_type":"note","patch":{},"priority":10}`, 400, "invalid_argument", "priority"},
		{"unknown consistency", "/api/v1/sync/state", f.token, `{"id":"a","data_type":"note","patch":{},"consistency":"psychic"}`, 400, "invalid_argument", "consistency"},
		{"strong without version", "/api/v1/sync/state", f.token, `{"id":"a","data_type":"note","patch":{},"consistency":"strong"}`, 400, "invalid_argument", "expected_version"},
		{"expected_version with eventual", "/api/v1/sync/state", f.token, `{"id":"a","data_type":"note","patch":{},"expected_version":1}`, 400, "invalid_argument", "expected_version"},
		{"oversized", "/api/v1/sync/state", f.token, `{"id":"a","data_type":"note","patch":{"x":"` + strings.Repeat("a", 1<<20) + `"}}`, 413, "too_large", ""},
		{"no token", "/api/v1/sync/state", "", `{"id":"a","data_type":"note","patch":{}}`, 401, "unauthenticated", ""},
		{"garbage token", "/api/v1/sync/state", "xyz", `{"id":"a","data_type":"note","patch":{}}`, 401, "unauthenticated", ""},
		{"unknown data type", "/api/v1/sync/state", f.token, `{"id":"a","data_type":"gossip","patch":{}}`, 400, "invalid_argument", "data_type"},
		{"schema violation names field", "/api/v1/sync/state", f.token, `{"id":"a","data_type":"knowledge_graph","patch":{"confidence":7}}`, 400, "invalid_argument", "confidence"},
		{"mode not allowed for type", "/api/v1/sync/state", f.token, `{"id":"a","data_type":"knowledge_graph","patch":{},"consistency":"strong","expected_version":0}`, 400, "invalid_argument", "consistency"},
		{"causal without own clock", "/api/v1/sync/state", f.token, `{"id":"a","data_type":"belief","patch":{},"vector_clock":{"ai-002":1}}`, 400, "invalid_argument", "vector_clock"},
		{"strong type without version", "/api/v1/sync/state", f.token, `{"id":"a","data_type":"task","patch":{"title":"t","status":"open"}}`, 400, "invalid_argument", "expected_version"},
		{"L1 may not write", "/api/v1/sync/state", f.issuer.Token(t, "observer", "L1"), `{"id":"observer:x","data_type":"note","patch":{}}`, 403, "permission_denied", "write_own"},
		{"L2 outside its prefix", "/api/v1/sync/state", f.token, `{"id":"ai-002:x","data_type":"note","patch":{}}`, 403, "permission_denied", "write_all"},
		{"unknown route", "/api/v1/sync/nothing", f.token, `{}`, 404, "not_found", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := f.post(t, tt.path, tt.token, tt.body)
			if status != tt.status || errCode(body) != tt.code {
				t.Fatalf("got %d %s, want %d %s: %v", status, errCode(body), tt.status, tt.code, body)
			}
			msg, _ := body["error"].(map[string]any)["message"].(string)
			if tt.field != "" && !strings.Contains(msg, tt.field) {
				t.Fatalf("message %q does not name field %s", msg, tt.field)
			}
		})
	}
	if len(f.log.records) != 0 {
		t.Fatalf("bad input reached the log: %d records", len(f.log.records))
	}
}

func TestPushStateAcceptsAndProducesKeyedDelta(t *testing.T) {
	f := newFixture(t)
	status, body := f.post(t, "/api/v1/sync/state", f.token, `{"id":"ai-001:b","data_type":"note","patch":{"x":1},"message_id":"m-1"}`)
	if status != 202 || body["status"] != "accepted" || body["message_id"] != "m-1" {
		t.Fatalf("got %d %v", status, body)
	}
	if len(f.log.records) != 1 || string(f.log.records[0].Key) != "ai-001:b" {
		t.Fatalf("records %v", f.log.records)
	}
	env := &fedsyncv1.SyncMessage{}
	proto.Unmarshal(f.log.records[0].Value, env)
	d := &fedsyncv1.Delta{}
	proto.Unmarshal(env.Payload, d)
	if env.Type != fedsyncv1.MessageType_STATE_UPDATE || d.Writer != "ai-001" || d.Region != "na" || d.Hlc == 0 || d.Priority != 5 {
		t.Fatalf("envelope %v delta %v", env, d)
	}
	// No message_id: one is assigned.
	_, body = f.post(t, "/api/v1/sync/state", f.token, `{"id":"ai-001:b","data_type":"note","patch":{"x":2}}`)
	if id, _ := body["message_id"].(string); len(id) < 10 {
		t.Fatalf("no message id assigned: %v", body)
	}
}

func TestPushStateLogDownIs503(t *testing.T) {
	f := newFixture(t)
	f.log.down = true
	req, _ := http.NewRequest("POST", f.srv.URL+"/api/v1/sync/state", strings.NewReader(`{"id":"ai-001:a","data_type":"note","patch":{}}`))
	req.Header.Set("Authorization", "Bearer "+f.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestStrongWrites(t *testing.T) {
	f := newFixture(t)
	status, body := f.post(t, "/api/v1/sync/state", f.token, `{"id":"ai-001:lock","data_type":"note","patch":{"o":1},"consistency":"strong","expected_version":0}`)
	if status != 200 || body["status"] != "committed" || body["version"] != float64(1) {
		t.Fatalf("got %d %v", status, body)
	}
	status, body = f.post(t, "/api/v1/sync/state", f.token, `{"id":"ai-001:lock","data_type":"note","patch":{"o":2},"consistency":"strong","expected_version":0}`)
	details, _ := body["error"].(map[string]any)["details"].(map[string]any)
	if status != 409 || errCode(body) != "version_conflict" || details["current_version"] != float64(1) {
		t.Fatalf("got %d %v", status, body)
	}
}

func TestRateLimit(t *testing.T) {
	iss := authtokentest.New(t)
	svc := RateLimitingMiddleware(1, 3, 1000, 1000)(NewService(testTypes(t), &memLog{}, &memLog{}, &fakeMerge{}, "na", time.Second, time.Second))
	eps := MakeEndpoints(svc, func(string) endpoint.Middleware { return func(e endpoint.Endpoint) endpoint.Endpoint { return e } })
	srv := httptest.NewServer(NewHTTPHandler(eps, iss.Verifier, 1<<20))
	defer srv.Close()
	tok := iss.Token(t, "ai-001", "L2")
	limited := 0
	for i := 0; i < 6; i++ {
		req, _ := http.NewRequest("POST", srv.URL+"/api/v1/sync/state", strings.NewReader(fmt.Sprintf(`{"id":"ai-001:a","data_type":"note","patch":{"i":%d}}`, i)))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, _ := http.DefaultClient.Do(req)
		resp.Body.Close()
		if resp.StatusCode == 429 {
			limited++
			if resp.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
		}
	}
	if limited < 2 {
		t.Fatalf("%d of 6 requests limited with burst 3", limited)
	}
}

func TestTypeDefaultsAndCausalAdmission(t *testing.T) {
	f := newFixture(t)
	status, body := f.post(t, "/api/v1/sync/state", f.token, `{"id":"ai-001:b1","data_type":"belief","patch":{"statement":"s"},"vector_clock":{"ai-001":1}}`)
	if status != 202 {
		t.Fatalf("causal belief: %d %v", status, body)
	}
	env := &fedsyncv1.SyncMessage{}
	proto.Unmarshal(f.log.records[0].Value, env)
	d := &fedsyncv1.Delta{}
	proto.Unmarshal(env.Payload, d)
	if d.Consistency != fedsyncv1.Consistency_CONSISTENCY_CAUSAL || d.VectorClock["ai-001"] != 1 {
		t.Fatalf("belief defaults to causal: %v", d)
	}
	status, body = f.post(t, "/api/v1/sync/state", f.token, `{"id":"ai-001:t1","data_type":"task","patch":{"title":"x","status":"open"},"expected_version":0}`)
	if status != 200 || body["status"] != "committed" {
		t.Fatalf("task defaults to strong: %d %v", status, body)
	}
}

func TestPauseAndResume(t *testing.T) {
	f := newFixture(t)
	admin := f.issuer.Token(t, "admin", "L4")
	if status, body := f.post(t, "/api/v1/control/pause", f.token, ``); status != 403 || errCode(body) != "permission_denied" {
		t.Fatalf("pause by L2: %d %v", status, body)
	}
	if status, body := f.post(t, "/api/v1/control/pause", admin, `{"reason":"rollback"}`); status != 200 || body["paused"] != true || body["by"] != "admin" {
		t.Fatalf("pause: %d %v", status, body)
	}
	req, _ := http.NewRequest("POST", f.srv.URL+"/api/v1/sync/state", strings.NewReader(`{"id":"ai-001:p","data_type":"note","patch":{}}`))
	req.Header.Set("Authorization", "Bearer "+f.token)
	resp, _ := http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("write while paused: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if status, body := f.post(t, "/api/v1/control/resume", admin, ``); status != 200 || body["paused"] != false {
		t.Fatalf("resume: %d %v", status, body)
	}
	if status, _ := f.post(t, "/api/v1/sync/state", f.token, `{"id":"ai-001:p","data_type":"note","patch":{}}`); status != 202 {
		t.Fatalf("write after resume: %d", status)
	}
}

// TestCheckRefusesInvalidUTF8FromGRPC: gRPC carries the patch as bytes, which
// protobuf does not check; invalid UTF-8 there is refused too (F3).
func TestCheckRefusesInvalidUTF8FromGRPC(t *testing.T) {
	_, err := check(&fedsyncv1.PushStateRequest{Id: "ai-001:u", DataType: "note", Patch: []byte("{\"s\":\"\xff\"}")}, testTypes(t).Get(), "ai-001")
	if e := apierr.As(err); err == nil || e.Code != apierr.InvalidArgument || !strings.Contains(e.Message, "UTF-8") {
		t.Fatalf("invalid UTF-8 patch: %v", err)
	}
}

// TestHeartbeatRateLimit: one heartbeat per agent per interval reaches the
// topic; sooner ones are 429 with Retry-After and publish nothing; another
// agent is not affected.
func TestHeartbeatRateLimit(t *testing.T) {
	iss := authtokentest.New(t)
	beats := &memLog{}
	svc := NewService(testTypes(t), &memLog{}, beats, &fakeMerge{}, "na", time.Second, time.Second)
	svc.beats.every = time.Hour
	eps := MakeEndpoints(svc, func(string) endpoint.Middleware { return func(e endpoint.Endpoint) endpoint.Endpoint { return e } })
	srv := httptest.NewServer(NewHTTPHandler(eps, iss.Verifier, 1<<20))
	defer srv.Close()
	beat := func(agent string) *http.Response {
		req, _ := http.NewRequest("POST", srv.URL+"/api/v1/sync/heartbeat", nil)
		req.Header.Set("Authorization", "Bearer "+iss.Token(t, agent, "L2"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := beat("ai-001"); r.StatusCode != 204 {
		t.Fatalf("first heartbeat: %d", r.StatusCode)
	}
	for i := 0; i < 100; i++ {
		if r := beat("ai-001"); r.StatusCode != 429 || r.Header.Get("Retry-After") == "" {
			t.Fatalf("flooded heartbeat %d: %d", i, r.StatusCode)
		}
	}
	if r := beat("ai-002"); r.StatusCode != 204 {
		t.Fatalf("another agent: %d", r.StatusCode)
	}
	if n := len(beats.records); n != 2 {
		t.Fatalf("%d heartbeats published, want 2", n)
	}
}

// TestPauseReachesEveryInstanceBeforeItReturns: instance A pauses; its call
// returns only after instance B (another region, same shared state) applied
// the pause and its write in flight answered, and B refuses the next write
// at once, not after its next poll.
func TestPauseReachesEveryInstanceBeforeItReturns(t *testing.T) {
	iss := authtokentest.New(t)
	shared := &memControl{}
	slow := &slowLog{delay: 300 * time.Millisecond}
	b := NewService(testTypes(t), slow, &memLog{}, &fakeMerge{}, "eu", time.Second, time.Second).WithControl(shared)
	a := NewService(testTypes(t), &memLog{}, &memLog{}, &fakeMerge{}, "na", time.Second, time.Second).WithControl(shared).
		WithFanout(func(ctx context.Context) ([]string, map[string]error) {
			_, err := b.SyncControl(ctx, &fedsyncv1.SyncControlRequest{})
			if err != nil {
				return []string{"b"}, map[string]error{"b": err}
			}
			return []string{"a", "b"}, nil
		})
	ctx := authtoken.NewContext(context.Background(), mustClaims(t, iss, "ai-001"))
	inflight := make(chan error, 1)
	go func() {
		_, err := b.PushState(ctx, &fedsyncv1.PushStateRequest{Id: "ai-001:x", DataType: "note", Patch: []byte(`{"a":1}`)})
		inflight <- err
	}()
	time.Sleep(50 * time.Millisecond) // B's write is on its way to Kafka
	res, err := a.SetPaused(context.Background(), SetPausedRequest{Paused: true, By: "admin"})
	if err != nil || res.Instances != 2 || len(res.Unconfirmed) != 0 {
		t.Fatalf("pause: %+v %v", res, err)
	}
	select {
	case err := <-inflight:
		if err != nil {
			t.Fatalf("the write in flight before the pause: %v", err)
		}
	default:
		t.Fatal("the pause returned while a write admitted before it was still in flight")
	}
	if _, err := b.PushState(ctx, &fedsyncv1.PushStateRequest{Id: "ai-001:y", DataType: "note", Patch: []byte(`{"a":1}`)}); apierr.As(err).Code != apierr.Unavailable {
		t.Fatalf("a write on the other instance right after the pause: %v", err)
	}
}

// mustClaims verifies a fresh token of subject (L2) and returns its claims.
func mustClaims(t *testing.T, iss *authtokentest.Issuer, subject string) *authtoken.Claims {
	t.Helper()
	c, err := iss.Verifier.Verify(context.Background(), iss.Token(t, subject, "L2"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
