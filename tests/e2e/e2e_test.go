package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDeltaReachesOtherAgentAndGet is the mesh's core promise: a delta pushed by
// one agent in one region reaches another agent's subscription in the other
// region and the read API, as version 1, then 2 after a second push.
func TestDeltaReachesOtherAgentAndGet(t *testing.T) {
	s := startStack(t)
	writer := newAgent(t, s, "ai-001", "na")
	reader := newAgent(t, s, "ai-052", "eu")
	sub, subscribed := reader.subscribe(map[string]any{"id_prefix": "ai-001:"})
	if subscribed["type"] != "subscribed" || subscribed["subscription_id"] == "" {
		t.Fatalf("subscribe answered %v", subscribed)
	}
	for version, patch := range []string{`{"topic":"weather","confidence":0.7}`, `{"confidence":0.9}`} {
		status, body := writer.push(`{"id":"ai-001:beliefs","data_type":"note","patch":` + patch + `}`)
		if status != http.StatusAccepted || body["status"] != "accepted" || body["message_id"] == "" {
			t.Fatalf("push %d: %d %v", version+1, status, body)
		}
		ch := sub.next(20 * time.Second)
		if ch["type"] != "change" || ch["id"] != "ai-001:beliefs" || ch["version"] != float64(version+1) || ch["updated_by"] != "ai-001" {
			t.Fatalf("change %d: %v", version+1, ch)
		}
	}
	got := reader.waitVersion("ai-001:beliefs", 2, 10*time.Second)
	value, _ := json.Marshal(got["value"])
	if string(value) != `{"confidence":0.9,"topic":"weather"}` || got["updated_by"] != "ai-001" || got["data_type"] != "note" {
		t.Fatalf("GET %v", got)
	}
	if _, err := time.Parse(time.RFC3339, got["updated_at"].(string)); err != nil {
		t.Fatalf("updated_at %v: %v", got["updated_at"], err)
	}
	// Query finds it, and the health API sees every service.
	status, q, _ := reader.do("POST", "/api/v1/sync/query", []byte(`{"id_prefix":"ai-001:","data_type":"note"}`), reader.token)
	if items, _ := q["items"].([]any); status != 200 || len(items) != 1 {
		t.Fatalf("query: %d %v", status, q)
	}
	var health map[string]any
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if status, health, _ = reader.do("GET", "/api/v1/sync/health", nil, ""); status == 200 && health["status"] == "healthy" {
			break
		}
	}
	services, _ := health["services"].(map[string]any)
	if health["status"] != "healthy" || len(services) != 6 {
		t.Fatalf("health: %v", health)
	}
	if hm, _ := services["healthmonitor"].(map[string]any); hm["healthy_instances"] != float64(1) {
		t.Fatalf("healthmonitor lists itself: %v", hm)
	}
	if issues, ok := health["issues"].([]any); !ok || len(issues) != 0 {
		t.Fatalf("a healthy federation's issues: %v", health["issues"])
	}
	if v, _ := services["validation"].(map[string]any); v["instances"] != float64(2) {
		t.Fatalf("validation instances: %v", v)
	}
}

// TestResumeFromCursor reconnects with the cursor of the last change received
// and gets exactly the changes committed meanwhile.
func TestResumeFromCursor(t *testing.T) {
	s := startStack(t)
	a := newAgent(t, s, "ai-003", "na")
	sub, _ := a.subscribe(map[string]any{"id_prefix": "ai-003:"})
	a.push(`{"id":"ai-003:r","data_type":"note","patch":{"n":1}}`)
	first := sub.next(20 * time.Second)
	sub.conn.CloseNow()
	for n := 2; n <= 4; n++ {
		a.push(fmt.Sprintf(`{"id":"ai-003:r","data_type":"note","patch":{"n":%d}}`, n))
	}
	a.waitVersion("ai-003:r", 4, 20*time.Second)
	sub2, _ := a.subscribe(map[string]any{"id_prefix": "ai-003:", "from_cursor": first["cursor"]})
	for v := 2; v <= 4; v++ {
		if ch := sub2.next(20 * time.Second); ch["version"] != float64(v) {
			t.Fatalf("resumed stream gave %v, want version %d", ch, v)
		}
	}
}

// TestBadInputGetsDocumentedErrors checks each kind of bad request through the
// edge gets the contract's status and error code.
func TestBadInputGetsDocumentedErrors(t *testing.T) {
	s := startStack(t)
	a := newAgent(t, s, "ai-001", "na")
	tests := []struct {
		name, method, path, body, token string
		status                          int
		code                            string
	}{
		{"malformed json", "POST", "/api/v1/sync/state", `{"id":"ai-001:x",`, a.token, 400, "invalid_argument"},
		{"missing field", "POST", "/api/v1/sync/state", `{"id":"ai-001:x","patch":{}}`, a.token, 400, "invalid_argument"},
		{"bad id", "POST", "/api/v1/sync/state", `{"id":"../etc","data_type":"note","patch":{}}`, a.token, 400, "invalid_argument"},
		{"oversized body", "POST", "/api/v1/sync/state", `{"id":"ai-001:x","data_type":"note","patch":{"b":"` + strings.Repeat("x", 1<<20) + `"}}`, a.token, 413, "too_large"},
		{"no token", "POST", "/api/v1/sync/state", `{"id":"ai-001:x","data_type":"note","patch":{}}`, "", 401, "unauthenticated"},
		{"forged token", "POST", "/api/v1/sync/state", `{"id":"ai-001:x","data_type":"note","patch":{}}`, a.token[:len(a.token)-4] + "AAAA", 401, "unauthenticated"},
		{"unknown route", "GET", "/api/v1/sync/nowhere", ``, a.token, 404, "not_found"},
		{"missing state", "GET", "/api/v1/sync/state/ai-001:never", ``, a.token, 404, "not_found"},
		{"read without token", "GET", "/api/v1/sync/state/ai-001:x", ``, "", 401, "unauthenticated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, _ := a.do(tt.method, tt.path, []byte(tt.body), tt.token)
			e, _ := body["error"].(map[string]any)
			if status != tt.status || e["code"] != tt.code || e["message"] == "" {
				t.Fatalf("got %d %v, want %d %s", status, body, tt.status, tt.code)
			}
		})
	}
	resp, err := http.PostForm(a.edge+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"ai-001"}, "client_secret": {"wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 401 || body["error"] != "invalid_client" {
		t.Fatalf("bad credentials: %d %v", resp.StatusCode, body)
	}
}

// TestStrongWritesCompareAndSet: of two writers based on the same version, one
// commits (200 with the version) and the other gets 409 with the current version.
func TestStrongWritesCompareAndSet(t *testing.T) {
	s := startStack(t)
	a := newAgent(t, s, "ai-001", "na")
	b := newAgent(t, s, "ai-030", "eu")
	results := make([]int, 2)
	bodies := make([]map[string]any, 2)
	var wg sync.WaitGroup
	for i, ag := range []*agent{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], bodies[i] = ag.push(`{"id":"shared-lock","data_type":"note","patch":{"owner":` + fmt.Sprint(i) + `},"consistency":"strong","expected_version":0}`)
		}()
	}
	wg.Wait()
	ok, conflict := 0, 0
	for i := range results {
		switch results[i] {
		case 200:
			ok++
			if bodies[i]["status"] != "committed" || bodies[i]["version"] != float64(1) {
				t.Fatalf("commit body %v", bodies[i])
			}
		case 409:
			conflict++
			e := bodies[i]["error"].(map[string]any)
			if e["code"] != "version_conflict" || e["details"].(map[string]any)["current_version"] != float64(1) {
				t.Fatalf("conflict body %v", bodies[i])
			}
		}
	}
	if ok != 1 || conflict != 1 {
		t.Fatalf("statuses %v, want one 200 and one 409", results)
	}
}

// TestPauseStopsWritesEverywhere: a pause sent to one region's edge stops writes
// in every region within a second; reads keep working; resume lets writes in.
func TestPauseStopsWritesEverywhere(t *testing.T) {
	s := startStack(t)
	admin := newAgent(t, s, "admin", "na")
	eu := newAgent(t, s, "ai-030", "eu")
	if st, _ := eu.push(`{"id":"ai-030:p","data_type":"note","patch":{"n":1}}`); st != 202 {
		t.Fatalf("before pause: %d", st)
	}
	if st, b, _ := admin.do("POST", "/api/v1/control/pause", []byte(`{"reason":"e2e"}`), admin.token); st != 200 {
		t.Fatalf("pause: %d %v", st, b)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, b := eu.push(`{"id":"ai-030:p","data_type":"note","patch":{"n":2}}`)
		if st == 503 && b["error"].(map[string]any)["code"] == "unavailable" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("region eu still accepts writes 5s after the pause: %d", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Reads keep working, and what was accepted before the pause still
	// commits (the pause now holds at once, so give the commit its moment).
	eu.waitVersion("ai-030:p", 1, 20*time.Second)
	if st, _, _ := admin.do("POST", "/api/v1/control/resume", nil, admin.token); st != 200 {
		t.Fatalf("resume: %d", st)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if st, _ := eu.push(`{"id":"ai-030:p","data_type":"note","patch":{"n":3}}`); st == 202 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("writes still refused 5s after resume")
		}
	}
}
