package broadcaster

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/go-kit/log"

	"github.com/fedsync/fedsync/libs/apierr"
)

func TestSubscriptionsPerClientAndRegistrationsAreBounded(t *testing.T) {
	svc := NewService(&memLog{}, Options{MaxPerClient: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a1, err1 := svc.Subscribe(ctx, SubscribeRequest{Subscriber: "ai-001"})
	_, err2 := svc.Subscribe(ctx, SubscribeRequest{Subscriber: "ai-001"})
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	_, err := svc.Subscribe(ctx, SubscribeRequest{Subscriber: "ai-001"})
	if e := apierr.As(err); e.Code != apierr.RateLimited || e.Details["limit"] != 2 {
		t.Fatalf("third subscription: %v", err)
	}
	if _, err := svc.Subscribe(ctx, SubscribeRequest{Subscriber: "ai-002"}); err != nil {
		t.Fatalf("another client is not affected: %v", err)
	}
	svc.Unsubscribe(a1.ID)
	if _, err := svc.Subscribe(ctx, SubscribeRequest{Subscriber: "ai-001"}); err != nil {
		t.Fatalf("after closing one: %v", err)
	}

	reg := NewRegistry(NewService(&memLog{}, Options{}), log.NewNopLogger())
	reg.MaxPerClient = 1
	if _, err := reg.Create(ctx, CreateRequest{Owner: "ai-001"}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Create(ctx, CreateRequest{Owner: "ai-001"}); apierr.As(err).Code != apierr.RateLimited {
		t.Fatalf("second registration: %v", err)
	}
}

func TestSocketLimitAndOrigin(t *testing.T) {
	ts := newTestStreamWith(t, &memLog{}, limits(64), func(o *HTTPOptions) {
		o.MaxPerSocket, o.OriginPatterns = 2, []string{"*.agents.example"}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := ts.wsURL(t, "ai-001", "L2")
	host := strings.TrimPrefix(ts.url, "http://")

	for origin, ok := range map[string]bool{
		"":                           true, // an agent, not a browser
		"http://" + host:             true, // the edge's own pages
		"https://ui.agents.example":  true,
		"https://evil.example":       false,
		"null":                       false,
		"https://agents.example.bad": false,
	} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
		if ok != (err == nil) {
			t.Errorf("origin %q: %v (%v)", origin, err, resp)
		}
		if !ok && (resp == nil || resp.StatusCode != http.StatusForbidden) {
			t.Errorf("origin %q: want 403, got %v", origin, resp)
		}
		if conn != nil {
			conn.CloseNow()
		}
	}

	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	for i := 0; i < 3; i++ {
		wsjson.Write(ctx, conn, map[string]any{"type": "subscribe", "id_prefix": "ai-001:"})
		var m map[string]any
		if err := wsjson.Read(ctx, conn, &m); err != nil {
			t.Fatal(err)
		}
		want := "subscribed"
		if i == 2 {
			want = "error"
		}
		if m["type"] != want {
			t.Fatalf("subscribe %d: %v", i+1, m)
		}
		if e, _ := m["error"].(map[string]any); i == 2 && (e["code"] != "rate_limited" || e["details"].(map[string]any)["limit"] != float64(2)) {
			t.Fatalf("third subscription on the socket: %v", m)
		}
	}
}

// TestSocketMessagesAreStrict: a client message with invalid UTF-8, a
// case-folded or an unknown field is refused with invalid_argument naming the
// problem, and the connection stays usable.
func TestSocketMessagesAreStrict(t *testing.T) {
	ts := newTestStream(t, &memLog{}, limits(64))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, ts.wsURL(t, "ai-001", "L2"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	for _, raw := range [][]byte{
		[]byte("{\"type\":\"subscribe\",\"id_prefix\":\"shared-\xff\"}"),
		[]byte(`{"type":"subscribe","ID_Prefix":"shared-"}`),
		[]byte(`{"type":"subscribe","id_prefx":"shared-"}`),
	} {
		if err := conn.Write(ctx, websocket.MessageText, raw); err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := wsjson.Read(ctx, conn, &m); err != nil {
			t.Fatal(err)
		}
		if e, _ := m["error"].(map[string]any); m["type"] != "error" || e["code"] != "invalid_argument" {
			t.Fatalf("%q answered %v", raw, m)
		}
	}
	wsjson.Write(ctx, conn, map[string]any{"type": "subscribe", "id_prefix": "shared-"})
	var m map[string]any
	if err := wsjson.Read(ctx, conn, &m); err != nil || m["type"] != "subscribed" {
		t.Fatalf("after the refusals: %v %v", m, err)
	}
}
