package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/fedsync/fedsync/tools/devstack"
)

// TestKillAuthnLeader kills -9 the leader of authn's Raft group. Tokens are
// still issued through the edge with no failure, a client created by the
// administration API right after the kill can get a token, and the killed
// replica, restarted, holds that client.
func TestKillAuthnLeader(t *testing.T) {
	s := startStack(t)
	ctx := context.Background()
	admin := newAgent(t, s, "admin", "na")
	leader, err := s.AuthnLeader(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Kill(leader); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	for i := range 10 {
		if _, err := devstack.Token(ctx, s.EdgeURL("na"), devstack.Client{ClientID: "ai-001", ClientSecret: clientSecret(t, s, "ai-001")}); err != nil {
			t.Fatalf("token %d with the authn leader %s dead: %v", i, leader, err)
		}
	}
	st, body, _ := admin.do("POST", "/api/v1/admin/clients", []byte(`{"client_id":"late-agent","role":"observer","level":"L1","region":"na"}`), admin.token)
	if st != http.StatusCreated {
		t.Fatalf("create a client with the authn leader dead: %d %v", st, body)
	}
	t.Logf("client created %v after the leader (%s) was killed", time.Since(killedAt).Round(time.Millisecond), leader)
	secret, _ := body["client_secret"].(string)
	late := devstack.Client{ClientID: "late-agent", ClientSecret: secret}
	if _, err := devstack.Token(ctx, s.EdgeURL("na"), late); err != nil {
		t.Fatalf("token for the new client: %v", err)
	}
	if st, body, _ := admin.do("POST", "/api/v1/admin/clients", []byte(`{"client_id":"late-agent","role":"observer","level":"L1"}`), admin.token); st != http.StatusConflict {
		t.Fatalf("the same client again: %d %v, want 409", st, body)
	}

	if err := s.Restart(ctx, leader); err != nil {
		t.Fatal(err)
	}
	// The returned replica alone answers: ask it directly.
	direct := &agent{t: t, edge: "http://" + s.HTTPAddr(leader), token: admin.token}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, body, _ := direct.do("GET", "/api/v1/admin/clients", nil, admin.token)
		if st == http.StatusOK && fmt.Sprint(body["clients"]) != "" && containsClient(body, "late-agent") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted replica %s does not hold the client created while it was dead: %d %v", leader, st, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func containsClient(body map[string]any, id string) bool {
	list, _ := body["clients"].([]any)
	for _, c := range list {
		if m, _ := c.(map[string]any); m["client_id"] == id {
			return true
		}
	}
	return false
}
