package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestNothingInTheClearAtRest writes a known value through the edge (a
// document, and a client whose domain names it) and searches every file of
// every statestore and authn replica for it: the store, the Raft log and
// snapshots are sealed with the at-rest keys make run generates.
func TestNothingInTheClearAtRest(t *testing.T) {
	s := startStack(t)
	marker := fmt.Sprintf("plaintext-canary-%d", time.Now().UnixNano())
	a := newAgent(t, s, "ai-001", "na")
	if st, body := a.push(`{"id":"ai-001:canary","data_type":"note","patch":{"secret":"` + marker + `"},"message_id":"canary-1"}`); st != 202 {
		t.Fatalf("push: %d %v", st, body)
	}
	doc := a.waitVersion("ai-001:canary", 1, 30*time.Second)
	if fmt.Sprint(doc) == "" || !bytes.Contains([]byte(fmt.Sprint(doc)), []byte(marker)) {
		t.Fatalf("the document reads back as %v", doc)
	}
	admin := newAgent(t, s, "admin", "na")
	if st, body, _ := admin.do("POST", "/api/v1/admin/clients", []byte(`{"client_id":"canary-agent","role":"ai_system_basic","level":"L2","region":"na","domains":["`+marker+`"]}`), admin.token); st != http.StatusCreated {
		t.Fatalf("create client: %d %v", st, body)
	}
	time.Sleep(500 * time.Millisecond) // every replica applies
	searched := 0
	for _, name := range append(s.StateStoreNames(), s.AuthnNames()...) {
		filepath.Walk(s.DataDir(name), func(path string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() {
				return nil
			}
			searched++
			if raw, _ := os.ReadFile(path); bytes.Contains(raw, []byte(marker)) {
				t.Errorf("%s holds the value in the clear", path)
			}
			return nil
		})
	}
	t.Logf("searched %d files of %d replicas", searched, len(s.StateStoreNames())+len(s.AuthnNames()))
}
