package broadcaster

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/webhooksig"
)

var loopbackAllowed = CallbackPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}

func TestCallbackPolicyRefusesInternalAddresses(t *testing.T) {
	var p CallbackPolicy
	ctx := context.Background()
	for _, u := range []string{
		"http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]/x", "http://169.254.169.254/latest/meta-data",
		"http://10.0.0.5/x", "http://172.20.1.1/x", "http://192.168.1.1/x", "http://100.64.0.1/x", "http://[fd00::1]/x",
		"http://0.0.0.0/x", "http://[::ffff:127.0.0.1]/x", "ftp://example.com/x", "http://user:pw@8.8.8.8/x",
	} {
		if err := p.CheckURL(ctx, u); apierr.As(err).Code != apierr.InvalidArgument {
			t.Errorf("%s: %v, want refused", u, err)
		}
	}
	if err := p.CheckURL(ctx, "https://8.8.8.8/hook"); err != nil {
		t.Errorf("a public address: %v", err)
	}
	if err := loopbackAllowed.CheckURL(ctx, "http://127.0.0.1:9/hook"); err != nil {
		t.Errorf("loopback when allowed: %v", err)
	}
	// The connection is checked too: a name that resolves inward after
	// registration (DNS rebinding) or a redirect inward gets nowhere.
	inside := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	defer inside.Close()
	if resp, err := p.Client(time.Second).Post(inside.URL, "application/json", strings.NewReader("{}")); err == nil {
		resp.Body.Close()
		t.Fatal("the webhook client connected to a loopback address")
	}
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, inside.URL, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	if resp, err := loopbackAllowed.Client(time.Second).Post(redirector.URL, "application/json", strings.NewReader("{}")); err == nil {
		resp.Body.Close()
		t.Fatal("the webhook client followed a redirect")
	}
}

// receiver is a webhook endpoint that checks signatures and records deliveries.
type receiver struct {
	t      *testing.T
	secret func() string
	mu     sync.Mutex
	got    []map[string]any
	fail   bool
	delay  time.Duration
	srv    *httptest.Server
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{t: t}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		fail, delay, secret := rc.fail, rc.delay, rc.secret
		rc.mu.Unlock()
		time.Sleep(delay)
		if fail {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		if secret != nil && !webhooksig.Verify(secret(), r.Header.Get(webhooksig.Header), body, time.Now(), 5*time.Minute) {
			t.Errorf("delivery with a bad signature %q", r.Header.Get(webhooksig.Header))
		}
		var m map[string]any
		json.Unmarshal(body, &m)
		rc.mu.Lock()
		rc.got = append(rc.got, m)
		rc.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) versions(id string) []int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var vs []int
	for _, m := range rc.got {
		if m["type"] == "change" && m["id"] == id {
			vs = append(vs, int(m["version"].(float64)))
		}
	}
	return vs
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWebhookSignedDeadAndResumed: deliveries carry an HMAC signature of the
// secret returned at registration; a callback failing for DeadAfter marks its
// webhook dead, visibly, with the error; a callback too slow for its queue is
// resumed from its cursor, losing and repeating nothing.
func TestWebhookSignedDeadAndResumed(t *testing.T) {
	lg := &memLog{}
	svc := NewService(lg, limits(16))
	reg := NewRegistry(svc, log.NewNopLogger())
	reg.Policy, reg.DeadAfter = loopbackAllowed, 300*time.Millisecond
	ctx := context.Background()
	rc := newReceiver(t)
	resp, err := reg.Create(ctx, CreateRequest{IDPrefix: "doc", CallbackURL: rc.srv.URL, Owner: "ai-001"})
	if err != nil || resp.Secret == "" {
		t.Fatalf("create: %+v %v", resp, err)
	}
	rc.secret = func() string { return resp.Secret }
	// Slow: 100 changes through a queue of 16 at 2 ms per delivery.
	rc.delay = 2 * time.Millisecond
	for i := 1; i <= 100; i++ {
		_, c := lg.commit(t, "doc", `{"n":`+strconv.Itoa(i)+`}`, nil, false)
		svc.Publish(ctx, c)
	}
	waitUntil(t, "100 deliveries", func() bool { return len(rc.versions("doc")) >= 100 })
	for i, v := range rc.versions("doc") {
		if v != i+1 {
			t.Fatalf("delivery %d is version %d: %v", i, v, rc.versions("doc"))
		}
	}
	// Now the callback fails for good.
	rc.mu.Lock()
	rc.fail = true
	rc.mu.Unlock()
	_, c := lg.commit(t, "doc", `{"n":101}`, nil, false)
	svc.Publish(ctx, c)
	waitUntil(t, "the webhook marked dead", func() bool {
		list, _ := reg.List(ctx, "ai-001")
		return len(list) == 1 && list[0].Status == StatusDead
	})
	list, _ := reg.List(ctx, "ai-001")
	if !strings.Contains(list[0].LastError, "500") || list[0].Cursor != FormatCursor(100) {
		t.Fatalf("dead webhook view: %+v", list[0])
	}
}

// memRegLog is an in-memory fedsync.webhooks with two partitions, read by
// several replicas, each record delivered to all of them in log order.
type memRegLog struct {
	mu       sync.Mutex
	replicas []*Registry
	ch       chan [2]any
}

func newMemRegLog() *memRegLog {
	l := &memRegLog{ch: make(chan [2]any, 1000)}
	go func() {
		for kv := range l.ch {
			key, value := kv[0].(string), kv[1].([]byte)
			h := fnv.New32a()
			h.Write([]byte(key))
			l.mu.Lock()
			rs := append([]*Registry(nil), l.replicas...)
			l.mu.Unlock()
			for _, r := range rs {
				r.Load(key, value, int32(h.Sum32()%2))
			}
		}
	}()
	return l
}

func (l *memRegLog) Put(_ context.Context, key string, value []byte) error {
	l.ch <- [2]any{key, value}
	return nil
}

// TestWebhooksSharedByReplicas: registrations made on one replica are known
// to the other; each webhook is delivered by the one replica that owns its
// partition; when ownership moves, the new owner resumes from the saved
// cursor and nothing is delivered twice.
func TestWebhooksSharedByReplicas(t *testing.T) {
	lg := &memLog{}
	rl := newMemRegLog()
	mk := func() (*Registry, *service) {
		svc := NewService(lg, limits(64))
		reg := NewRegistry(svc, log.NewNopLogger())
		reg.Policy, reg.Log, reg.SaveEvery = loopbackAllowed, rl, 0
		rl.mu.Lock()
		rl.replicas = append(rl.replicas, reg)
		rl.mu.Unlock()
		return reg, svc
	}
	a, svcA := mk()
	b, svcB := mk()
	a.SetOwned([]int32{0, 1})
	b.SetOwned(nil)
	ctx := context.Background()
	rc := newReceiver(t)
	var ids []string
	for _, prefix := range []string{"p1", "p2", "p3", "p4"} {
		resp, err := a.Create(ctx, CreateRequest{IDPrefix: prefix, CallbackURL: rc.srv.URL, Owner: "ai-001"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.SubscriptionID)
	}
	waitUntil(t, "replica b knows the registrations", func() bool { l, _ := b.List(ctx, "ai-001"); return len(l) == 4 })
	publish := func(id string) {
		_, c := lg.commit(t, id, `{"x":1}`, nil, false)
		svcA.Publish(ctx, c)
		svcB.Publish(ctx, c)
	}
	for _, id := range []string{"p1", "p2", "p3", "p4"} {
		publish(id)
	}
	waitUntil(t, "first deliveries", func() bool {
		return len(rc.versions("p1"))+len(rc.versions("p2"))+len(rc.versions("p3"))+len(rc.versions("p4")) == 4
	})
	// Ownership moves to b: a stops (saving cursors), b resumes.
	a.SetOwned(nil)
	b.SetOwned([]int32{0, 1})
	for _, id := range []string{"p1", "p2", "p3", "p4"} {
		publish(id)
	}
	waitUntil(t, "deliveries after the move", func() bool {
		return len(rc.versions("p1"))+len(rc.versions("p2"))+len(rc.versions("p3"))+len(rc.versions("p4")) >= 8
	})
	time.Sleep(200 * time.Millisecond)
	for _, id := range []string{"p1", "p2", "p3", "p4"} {
		if vs := rc.versions(id); len(vs) != 2 || vs[0] != 1 || vs[1] != 2 {
			t.Errorf("%s delivered %v, want [1 2] once each", id, vs)
		}
	}
	// Deleted on b: gone from a too, and no longer delivered.
	if err := b.Delete(ctx, ids[0], "ai-001"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "replica a forgets the deleted one", func() bool { l, _ := a.List(ctx, "ai-001"); return len(l) == 3 })
	a.Close()
	b.Close()
}

// TestDisabledClientsWebhookHolds: a disabled client's webhook delivers
// nothing, and delivers what it held, in order, once the client is enabled.
func TestDisabledClientsWebhookHolds(t *testing.T) {
	lg := &memLog{}
	svc := NewService(lg, limits(64))
	reg := NewRegistry(svc, log.NewNopLogger())
	var mu sync.Mutex
	disabled := true
	reg.Policy = loopbackAllowed
	reg.Disabled = func(string) bool { mu.Lock(); defer mu.Unlock(); return disabled }
	defer reg.Close()
	rc := newReceiver(t)
	ctx := context.Background()
	if _, err := reg.Create(ctx, CreateRequest{IDPrefix: "doc", CallbackURL: rc.srv.URL, Owner: "ai-009"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		_, c := lg.commit(t, "doc", `{"n":`+strconv.Itoa(i)+`}`, nil, false)
		svc.Publish(ctx, c)
	}
	time.Sleep(500 * time.Millisecond)
	if vs := rc.versions("doc"); len(vs) != 0 {
		t.Fatalf("a disabled client's webhook delivered %v", vs)
	}
	mu.Lock()
	disabled = false
	mu.Unlock()
	waitUntil(t, "deliveries after enabling", func() bool { return len(rc.versions("doc")) == 3 })
	if vs := rc.versions("doc"); vs[0] != 1 || vs[2] != 3 {
		t.Fatalf("delivered %v", vs)
	}
}
