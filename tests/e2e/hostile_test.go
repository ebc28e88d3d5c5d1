package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedsync/fedsync/libs/mtls"
	"github.com/fedsync/fedsync/libs/webhooksig"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
	"github.com/fedsync/fedsync/tools/devstack"
)

// TestHostileInputs runs the cases of the hostile-input campaign (issue 13)
// through the real edge of a running mesh and asserts the answer each must
// get; docs/security.md lists them.
func TestHostileInputs(t *testing.T) {
	// The health monitor's pipeline watch at test speed (services read their
	// FEDSYNC_* variables).
	t.Setenv("FEDSYNC_PIPELINE_STALL", "2s")
	t.Setenv("FEDSYNC_PIPELINE_INTERVAL", "250ms")
	// The webhook receiver below listens on loopback, which webhooks may not
	// call by default.
	t.Setenv("FEDSYNC_WEBHOOKS_ALLOW_CIDRS", "127.0.0.0/8")
	s := startStackWith(t, t.TempDir(), func(o *devstack.Options) { o.RevocationRefresh = 200 * time.Millisecond })
	a := newAgent(t, s, "ai-001", "na")
	b := newAgent(t, s, "ai-002", "na")

	t.Run("hostile request bodies and URLs", func(t *testing.T) {
		for _, c := range []struct {
			name, method, path, body string
			status                   int
			reason                   string
		}{
			{"invalid UTF-8 in a string (F3)", "POST", "/api/v1/sync/state", "{\"id\":\"shared-u\",\"data_type\":\"note\",\"patch\":{\"s\":\"\xff\"}}", 400, "invalid_utf8"},
			{"a number no double holds (F4)", "POST", "/api/v1/sync/state", `{"id":"shared-n","data_type":"note","patch":{"x":1e400}}`, 400, ""},
			{"a 5,000-digit integer (F4)", "POST", "/api/v1/sync/state", `{"id":"shared-n","data_type":"note","patch":{"x":` + strings.Repeat("9", 5000) + `}}`, 400, ""},
			{"a case-folded field name", "POST", "/api/v1/sync/state", `{"Id":"shared-c","data_type":"note","patch":{}}`, 400, ""},
			{"an id with invalid UTF-8 in the path", "GET", "/api/v1/sync/state/shared-%FF", "", 400, "invalid_utf8"},
		} {
			st, body, _ := a.do(c.method, c.path, []byte(c.body), a.token)
			e, _ := body["error"].(map[string]any)
			d, _ := e["details"].(map[string]any)
			if st != c.status || e["code"] != "invalid_argument" || (c.reason != "" && d["reason"] != c.reason) {
				t.Errorf("%s: %d %v, want %d invalid_argument %s", c.name, st, body, c.status, c.reason)
			}
		}
		// access_token is for the WebSocket handshake only.
		st, _, _ := a.do("GET", "/api/v1/sync/state/ai-001:x?access_token="+a.token, nil, "")
		if st != 401 {
			t.Errorf("access_token on REST: %d, want 401", st)
		}
		// A sum that would overflow is refused, the total kept (F4).
		for i, m := range []string{"ovf-1", "ovf-2"} {
			if st, b := a.push(`{"id":"shared-sum","data_type":"knowledge_graph","message_id":"` + m + `","patch":{"observations":1.7e308}}`); st != 202 {
				t.Fatalf("sum %d: %d %v", i, st, b)
			}
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			st, out, _ := a.do("GET", "/api/v1/sync/outcomes/ovf-2", nil, a.token)
			if st == 200 && out["status"] == "rejected" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("outcome of the overflowing sum: %d %v", st, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, doc := a.get("shared-sum"); doc["value"].(map[string]any)["observations"] != 1.7e308 {
			t.Fatalf("after an overflowing sum: %v", doc)
		}
		// A strong write sent again with its message_id gets its first answer.
		body := `{"id":"shared-strong-retry","data_type":"note","consistency":"strong","expected_version":0,"message_id":"sr-1","patch":{"a":1}}`
		st1, b1 := a.push(body)
		st2, b2 := a.push(body)
		if st1 != 200 || st2 != 200 || b1["version"] != b2["version"] {
			t.Fatalf("strong retry: %d %v then %d %v", st1, b1, st2, b2)
		}
	})
	t.Run("a document growing past the size limit", func(t *testing.T) {
		// 900 KB per write, under the 1 MiB body limit: the fifth passes 4 MiB.
		sub, _ := b.subscribe(map[string]any{"id_prefix": "shared-"})
		chunk := strings.Repeat("z", 900_000)
		var last map[string]any
		status := 0
		for i := 0; i < 6 && status != 413; i++ {
			status, last = a.push(fmt.Sprintf(`{"id":"shared-grow","data_type":"note","consistency":"strong","expected_version":%d,"patch":{"f%d":"%s"}}`, i, i, chunk))
			if status != 200 && status != 413 {
				t.Fatalf("write %d: %d %v", i, status, last)
			}
		}
		e, _ := last["error"].(map[string]any)
		details, _ := e["details"].(map[string]any)
		if status != 413 || e["code"] != "too_large" || details["limit"] != float64(4<<20) {
			t.Fatalf("a write past the limit got %d %v, want 413 too_large with details.limit", status, last)
		}
		// Delivery goes on for everyone: a small change after the large ones
		// reaches the subscriber, after the large changes, whole.
		if st, body := a.push(`{"id":"shared-after","data_type":"note","patch":{"ok":1}}`); st != 202 {
			t.Fatalf("small write: %d %v", st, body)
		}
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			m := sub.next(20 * time.Second)
			if m["type"] == "change" && m["id"] == "shared-after" {
				return
			}
			if m["type"] != "change" {
				t.Fatalf("subscriber got %v", m)
			}
		}
		t.Fatal("the change after the large ones did not arrive")
	})

	t.Run("framing and media type at the edge", func(t *testing.T) {
		addr := strings.TrimPrefix(a.edge, "http://")
		auth := "Authorization: Bearer " + a.token + "\r\n"
		for _, c := range []struct{ name, req, want string }{
			{"declared Content-Length of 1e14", "POST /api/v1/sync/state HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: application/json\r\nContent-Length: 100000000000000\r\n\r\n", "413"},
			{"malformed chunk", "POST /api/v1/sync/state HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", "400"},
			{"text/plain body", "POST /api/v1/sync/state HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}", "415"},
		} {
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			conn.Write([]byte(c.req))
			line, err := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if !strings.Contains(line, " "+c.want+" ") {
				t.Errorf("%s: %q %v, want %s at once", c.name, line, err, c.want)
			}
		}
	})

	t.Run("a service certificate calling a method it has no business with", func(t *testing.T) {
		idCfg, err := s.ClientIdentity("broadcaster")
		if err != nil {
			t.Fatal(err)
		}
		id, err := mtls.Load(idCfg)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(s.GRPCAddr("statestore"), grpc.WithTransportCredentials(id.ClientCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		store := fedsyncv1.NewStateStoreServiceClient(cc)
		if _, err := store.Apply(ctx, &fedsyncv1.ApplyRequest{Id: "shared-x", DataType: "note", Patch: []byte(`{"owned":1}`)}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("broadcaster certificate calling statestore Apply: %v, want PERMISSION_DENIED", err)
		}
		if _, err := store.SetControl(ctx, &fedsyncv1.SetControlRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("broadcaster certificate calling SetControl: %v", err)
		}
		if _, err := store.ReadLog(ctx, &fedsyncv1.ReadLogRequest{Limit: 1}); err != nil {
			t.Fatalf("broadcaster certificate reading the log: %v", err)
		}
		// The refusal is in statestore's audit log, naming the service.
		deadline := time.Now().Add(5 * time.Second)
		for {
			raw, _ := os.ReadFile(filepath.Join(s.DataDir("statestore"), "audit.log"))
			if strings.Contains(string(raw), "service:broadcaster") && strings.Contains(string(raw), "StateStoreService/Apply") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the denial is not in statestore's audit log")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("a pause holds in every region when the call returns", func(t *testing.T) {
		admin := newAgent(t, s, "admin", "na")
		euWriter := newAgent(t, s, "ai-003", "eu")
		st, body, _ := admin.do("POST", "/api/v1/control/pause", []byte(`{"reason":"hostile suite"}`), admin.token)
		if st != 200 || body["paused"] != true || body["instances"] != float64(2) || len(body["unconfirmed"].([]any)) != 0 {
			t.Fatalf("pause: %d %v", st, body)
		}
		defer admin.do("POST", "/api/v1/control/resume", nil, admin.token)
		if st, b := euWriter.push(`{"id":"ai-003:after-pause","data_type":"note","patch":{"x":1}}`); st != 503 {
			t.Fatalf("a write in region eu right after the pause returned: %d %v, want 503", st, b)
		}
	})

	t.Run("a stuck consumer makes health degraded with the reason", func(t *testing.T) {
		health := func() (string, []any) {
			_, h, _ := a.do("GET", "/api/v1/sync/health", nil, "")
			issues, _ := h["issues"].([]any)
			st, _ := h["status"].(string)
			return st, issues
		}
		waitFor := func(what string, ok func(string, []any) bool) {
			t.Helper()
			deadline := time.Now().Add(20 * time.Second)
			for {
				st, issues := health()
				if ok(st, issues) {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: health stayed %s %v", what, st, issues)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		waitFor("healthy before", func(st string, issues []any) bool { return st == "healthy" && len(issues) == 0 })
		if err := s.Signal("merge", syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer s.Signal("merge", syscall.SIGCONT)
		for i := 0; i < 5; i++ {
			if st, b := a.push(fmt.Sprintf(`{"id":"ai-001:stuck-%d","data_type":"note","patch":{"x":1}}`, i)); st != 202 {
				t.Fatalf("push: %d %v", st, b)
			}
		}
		waitFor("merge stopped", func(st string, issues []any) bool {
			for _, i := range issues {
				if m, _ := i.(map[string]any); m["kind"] == "consumer_stuck" && st == "degraded" {
					t.Logf("degraded: %v", m["message"])
					return true
				}
			}
			return false
		})
		s.Signal("merge", syscall.SIGCONT)
		waitFor("merge resumed", func(st string, issues []any) bool { return st == "healthy" && len(issues) == 0 })
	})

	t.Run("webhooks: refused inward, signed, durable across a broadcaster restart", func(t *testing.T) {
		// SSRF: cloud metadata, unspecified, multicast and loopback (IPv6;
		// IPv4 loopback is opened here for the receiver) are refused.
		for _, u := range []string{"http://169.254.169.254/latest/meta-data", "http://0.0.0.0:9/hook", "http://224.0.0.1/hook", "http://[::1]:9/hook"} {
			st, body, _ := a.do("POST", "/api/v1/sync/subscribe", []byte(`{"id_prefix":"ai-001:","callback_url":"`+u+`"}`), a.token)
			if st != 400 {
				t.Fatalf("callback %s: %d %v, want 400", u, st, body)
			}
		}
		var mu sync.Mutex
		var got []map[string]any
		var secret string
		bad := 0
		hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			mu.Lock()
			defer mu.Unlock()
			if !webhooksig.Verify(secret, r.Header.Get(webhooksig.Header), body, time.Now(), 5*time.Minute) {
				bad++
			}
			var m map[string]any
			json.Unmarshal(body, &m)
			got = append(got, m)
		}))
		defer hook.Close()
		st, body, _ := a.do("POST", "/api/v1/sync/subscribe", []byte(`{"id_prefix":"ai-001:hook-","callback_url":"`+hook.URL+`"}`), a.token)
		if st != 201 || body["secret"] == nil {
			t.Fatalf("register: %d %v", st, body)
		}
		mu.Lock()
		secret = body["secret"].(string)
		mu.Unlock()
		id := body["subscription_id"].(string)
		versions := func() []float64 {
			mu.Lock()
			defer mu.Unlock()
			var vs []float64
			for _, m := range got {
				if m["type"] == "change" && m["id"] == "ai-001:hook-doc" {
					vs = append(vs, m["version"].(float64))
				}
			}
			return vs
		}
		push := func(n int) {
			if st, b := a.push(fmt.Sprintf(`{"id":"ai-001:hook-doc","data_type":"note","patch":{"n":%d}}`, n)); st != 202 {
				t.Fatalf("push: %d %v", st, b)
			}
		}
		waitVersions := func(n int) {
			deadline := time.Now().Add(20 * time.Second)
			for len(versions()) < n {
				if time.Now().After(deadline) {
					t.Fatalf("webhook got versions %v, want %d", versions(), n)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		push(1)
		push(2)
		waitVersions(2)
		// The cursor is saved after each delivery; give the last save its
		// moment (a crash inside it would repeat that one delivery, which
		// receivers drop by cursor).
		time.Sleep(300 * time.Millisecond)
		// Both broadcasters go down and come back: the registration and its
		// cursor survive, and delivery goes on where it stopped.
		for _, b := range []string{"broadcaster-na", "broadcaster-eu"} {
			if err := s.Kill(b); err != nil {
				t.Fatal(err)
			}
		}
		push(3)
		for _, b := range []string{"broadcaster-na", "broadcaster-eu"} {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			err := s.Restart(ctx, b)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
		push(4)
		waitVersions(4)
		time.Sleep(500 * time.Millisecond)
		if vs := versions(); fmt.Sprint(vs) != "[1 2 3 4]" {
			t.Fatalf("webhook deliveries %v, want [1 2 3 4] once each", vs)
		}
		mu.Lock()
		if bad > 0 {
			t.Errorf("%d deliveries with a bad signature", bad)
		}
		mu.Unlock()
		st, view, _ := a.do("GET", "/api/v1/sync/subscribe?subscription_id="+id, nil, a.token)
		if st != 200 || view["status"] != "active" || view["callback_url"] != hook.URL {
			t.Fatalf("registration after the restart: %d %v", st, view)
		}
	})
	t.Run("stream limits and a foreign Origin", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		wsURL := "ws" + strings.TrimPrefix(a.edge, "http") + "/stream?access_token=" + a.token
		_, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://evil.example"}}})
		if err == nil || resp == nil || resp.StatusCode != 403 {
			t.Fatalf("a foreign Origin: %v %v, want 403", resp, err)
		}
		conn, _, err := websocket.Dial(ctx, wsURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseNow()
		for i := 0; i < 1000; i++ {
			wsjson.Write(ctx, conn, map[string]any{"type": "subscribe", "id_prefix": fmt.Sprintf("ai-001:sub-%d", i)})
		}
		subscribed := 0
		for subscribed < 1000 {
			var m map[string]any
			if err := wsjson.Read(ctx, conn, &m); err != nil {
				t.Fatal(err)
			}
			if m["type"] != "subscribed" {
				t.Fatalf("subscription %d: %v", subscribed+1, m)
			}
			subscribed++
		}
		wsjson.Write(ctx, conn, map[string]any{"type": "subscribe", "id_prefix": "ai-001:one-too-many"})
		var m map[string]any
		if err := wsjson.Read(ctx, conn, &m); err != nil {
			t.Fatal(err)
		}
		if e, _ := m["error"].(map[string]any); m["type"] != "error" || e["code"] != "rate_limited" {
			t.Fatalf("subscription 1,001 on one socket: %v", m)
		}
	})
	// Last: it leaves this machine's address throttled at the token endpoint.
	t.Run("guessing a client secret is throttled", func(t *testing.T) {
		throttled, fastest := 0, time.Hour
		for i := 0; i < 30; i++ {
			start := time.Now()
			resp, err := http.PostForm(a.edge+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"ai-005"}, "client_secret": {fmt.Sprint("guess-", i)}})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			switch resp.StatusCode {
			case 429:
				throttled++
				fastest = min(fastest, time.Since(start))
				if resp.Header.Get("Retry-After") == "" {
					t.Fatal("429 without Retry-After")
				}
			case 401:
			default:
				t.Fatalf("guess %d: %d", i, resp.StatusCode)
			}
		}
		if throttled < 20 {
			t.Fatalf("%d of 30 guesses throttled", throttled)
		}
		t.Logf("%d of 30 guesses throttled; a throttled answer took %s", throttled, fastest)
	})

}
