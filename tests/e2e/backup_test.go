package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedsync/fedsync/libs/backup/backuptest"
	"github.com/fedsync/fedsync/tools/devstack"
)

// TestBackupRestoreIntoAFreshMesh takes a cold backup of a running mesh
// into a real S3 API server (s3proxy) with fedctl, verifies it, starts a new
// mesh with nothing in it (same at-rest keys, same bucket), restores the
// backup there with fedctl, and compares every document: id, version and
// value. The restored mesh then takes writes on top.
func TestBackupRestoreIntoAFreshMesh(t *testing.T) {
	s3 := backuptest.StartS3(t)
	args := []string{"-backup.target=s3://fedsync-e2e/statestore", "-backup.s3-endpoint=" + s3.Endpoint, "-backup.s3-insecure",
		"-backup.s3-access-key=" + s3.AccessKey, "-backup.s3-secret-key=" + s3.SecretKey, "-backup.s3-region=" + s3.Region}
	withS3 := func(o *devstack.Options) { o.BackupArgs = args }

	dirA := t.TempDir()
	a := startStackWith(t, dirA, withS3)
	agent := newAgent(t, a, "ai-001", "na")
	for i := 0; i < 30; i++ {
		if st, b := agent.push(fmt.Sprintf(`{"id":"ai-001:doc-%d","data_type":"note","patch":{"n":%d,"text":"the plan of ai-001, part %d"}}`, i%7, i, i)); st != 202 {
			t.Fatalf("push %d: %d %v", i, st, b)
		}
	}
	agent.waitVersion("ai-001:doc-1", 5, 30*time.Second) // 1, 8, 15, 22, 29
	agent.waitVersion("ai-001:doc-0", 5, 30*time.Second)

	f := newFedctl(t, a)
	f.login("admin")
	code, out, errs := f.run("", "backup", "create", "-o", "json")
	var created struct {
		ID        string `json:"id"`
		Documents int64  `json:"documents"`
		Digest    string `json:"documents_digest"`
		Where     string `json:"where"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &created) != nil || created.Documents < 7 || !strings.HasPrefix(created.Where, "s3://fedsync-e2e/") {
		t.Fatalf("backup create: exit %d %s %s", code, out, errs)
	}
	if out := f.must(0, "", "backup", "list"); !strings.Contains(out, created.ID) {
		t.Fatalf("backup list: %s", out)
	}
	f.must(0, "", "backup", "verify", created.ID)
	f.must(5, "", "backup", "verify", "statestore-no-such-backup")
	want := allDocuments(t, f)
	a.Stop()

	// A new mesh, empty, with the same at-rest keys (the Secret an operator
	// keeps apart from the backups) and the same bucket.
	dirB := t.TempDir()
	keys, err := os.ReadFile(filepath.Join(dirA, "keys", "at-rest-statestore.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dirB, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, "keys", "at-rest-statestore.json"), keys, 0o600); err != nil {
		t.Fatal(err)
	}
	b := startStackWith(t, dirB, withS3)
	g := newFedctl(t, b)
	g.login("admin")
	if got := allDocuments(t, g); len(got) != 0 {
		t.Fatalf("the new mesh is not empty: %d documents", len(got))
	}
	g.must(2, "", "backup", "restore", created.ID) // no --yes
	g.must(0, "", "backup", "restore", created.ID, "--yes")
	got := allDocuments(t, g)
	if len(got) != len(want) {
		t.Fatalf("after the restore: %d documents, want %d", len(got), len(want))
	}
	for id, w := range want {
		if got[id] != w {
			t.Fatalf("%s after the restore: %s, want %s", id, got[id], w)
		}
	}
	// Writes go on from the restored versions.
	agentB := newAgent(t, b, "ai-001", "na")
	if st, body := agentB.push(`{"id":"ai-001:doc-0","data_type":"note","patch":{"after":"restore"}}`); st != 202 {
		t.Fatalf("push after the restore: %d %v", st, body)
	}
	agentB.waitVersion("ai-001:doc-0", 6, 30*time.Second)
}

// allDocuments reads every document through fedctl: id -> version and value.
func allDocuments(t *testing.T, f *fedctlRunner) map[string]string {
	t.Helper()
	code, out, errs := f.run("", "query", "--all", "-o", "json")
	var items []struct {
		ID      string          `json:"id"`
		Version int64           `json:"version"`
		Value   json.RawMessage `json:"value"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &items) != nil {
		t.Fatalf("query: exit %d %s %s", code, out, errs)
	}
	docs := map[string]string{}
	for _, it := range items {
		docs[it.ID] = fmt.Sprintf("v%d %s", it.Version, it.Value)
	}
	return docs
}
