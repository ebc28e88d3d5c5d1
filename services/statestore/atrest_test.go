package statestore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/fedsync/fedsync/libs/atrest"
	"github.com/fedsync/fedsync/libs/raftgroup"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// grepFiles returns the files under dir that hold needle.
func grepFiles(t *testing.T, dir string, needle []byte) []string {
	t.Helper()
	var hits []string
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			if raw, _ := os.ReadFile(path); bytes.Contains(raw, needle) {
				hits = append(hits, path)
			}
		}
		return nil
	})
	return hits
}

// A value written to a replicated statestore with at-rest keys never reaches
// any replica's disk in the clear: not the store, the Raft log, a snapshot,
// nor the store a lost replica rebuilds from one. After the keys rotate,
// everything is re-sealed with the new key and the old one can go.
func TestNothingInTheClearOnDisk(t *testing.T) {
	marker := "top-secret-7d1c9e"
	k1, k2 := atrest.NewKeyFile("k1"), atrest.NewKeyFile("k2")
	keyPath := filepath.Join(t.TempDir(), "keys.json")
	writeKeys := func(f atrest.KeyFile) {
		raw, _ := json.Marshal(f)
		if err := os.WriteFile(keyPath, raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKeys(k1)
	var vaults []*atrest.Vault
	group := startGroupWith(t, 3, func(c *raftgroup.Config) {
		v, err := atrest.NewVault(atrest.FileSource(keyPath))
		if err != nil {
			t.Fatal(err)
		}
		c.Vault, c.TrailingLogs = v, 2
		vaults = append(vaults, v)
	})
	leader := leaderOf(t, group)
	put := func(round int) {
		req := &fedsyncv1.ApplyBatchRequest{}
		for i := range 5 {
			req.Items = append(req.Items, &fedsyncv1.ApplyRequest{Id: fmt.Sprintf("doc-%d", i), DataType: "note", Writer: "ai-001",
				MessageId: fmt.Sprintf("m-%d-%d", round, i), Patch: []byte(fmt.Sprintf(`{"secret":"%s","round":%d}`, marker, round))})
		}
		req.Outcomes = append(req.Outcomes, &fedsyncv1.RecordOutcomeRequest{Outcome: &fedsyncv1.Outcome{MessageId: fmt.Sprintf("o-%d", round), Status: "rejected", Reason: marker}})
		if _, err := leader.svc.ApplyBatch(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 10 {
		put(round)
	}
	lost := followerOf(group, leader)
	lost.stop()
	for round := 10; round < 15; round++ {
		put(round)
	}
	if err := leader.node.Raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	lost.dir = t.TempDir() // rebuilt from the leader's snapshot
	startReplica(t, lost)
	put(15)
	waitConverged(t, group)
	if st, err := lost.st.get("doc-0"); err != nil || !bytes.Contains(st.GetValue(), []byte(marker)) {
		t.Fatalf("the rebuilt replica reads doc-0 as %q, %v", st.GetValue(), err)
	}
	for _, r := range group {
		if hits := grepFiles(t, r.dir, []byte(marker)); len(hits) > 0 {
			t.Errorf("in the clear on disk: %v", hits)
		}
	}

	// Rotation: k2 becomes active beside k1; a re-seal pass leaves nothing
	// under k1, which then leaves the ring while writes go on.
	writeKeys(atrest.KeyFile{Active: "k2", Keys: map[string]string{"k1": k1.Keys["k1"], "k2": k2.Keys["k2"]}})
	for i, r := range group {
		if err := vaults[i].Reload(); err != nil {
			t.Fatal(err)
		}
		put(16 + i)
		refs, err := (&raftgroup.Replica{Node: r.node, Vault: r.cfg.Vault}).Reseal(r.st.db, sealedBuckets)
		if err != nil {
			t.Fatal(err)
		}
		if refs["k1"] != 0 || refs[""] != 0 || refs["k2"] == 0 {
			t.Fatalf("replica %s after re-sealing: %v", r.cfg.ID, refs)
		}
	}
	writeKeys(k2)
	for i := range group {
		if err := vaults[i].Reload(); err != nil {
			t.Fatal(err)
		}
	}
	put(20)
	waitConverged(t, group)
	for _, r := range group {
		if st, err := r.st.get("doc-3"); err != nil || !bytes.Contains(st.GetValue(), []byte(`"round":20`)) {
			t.Fatalf("replica %s with k1 retired: %q %v", r.cfg.ID, st.GetValue(), err)
		}
		if hits := grepFiles(t, r.dir, []byte(marker)); len(hits) > 0 {
			t.Errorf("in the clear on disk after rotation: %v", hits)
		}
	}
}
