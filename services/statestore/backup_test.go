package statestore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/atrest"
	"github.com/fedsync/fedsync/libs/backup"
	"github.com/fedsync/fedsync/libs/backup/backuptest"
	"github.com/fedsync/fedsync/libs/raftgroup"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// sealedGroup starts three replicas that seal with the keys in keyFile and
// keep backups in st.
func sealedGroup(t *testing.T, keyFile string, st backup.Store) []*replica {
	t.Helper()
	v, err := atrest.NewVault(atrest.FileSource(keyFile))
	if err != nil {
		t.Fatal(err)
	}
	group := startGroupWith(t, 3, func(c *raftgroup.Config) { c.Vault = v })
	for _, r := range group {
		r.stop()
		r.backups = st
		startReplica(t, r)
	}
	return group
}

// documents reads every document a replica holds, by id.
func documents(t *testing.T, r *replica) map[string]string {
	t.Helper()
	states, _, err := r.st.query("", "", "", 100000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range states {
		out[s.GetId()] = fmt.Sprintf("%s@%d", s.GetValue(), s.GetVersion())
	}
	return out
}

// TestBackupRestoreIntoAFreshCluster takes a backup of a group's state
// through a real S3 API server, checks that it is sealed, verifies it,
// restores it into a new group of three with the same keys, and compares
// every document on every replica; a damaged backup is refused.
func TestBackupRestoreIntoAFreshCluster(t *testing.T) {
	ctx := context.Background()
	s3 := backuptest.StartS3(t)
	st, err := backup.Open("s3://fedsync-backups/statestore", s3)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	raw, _ := json.Marshal(atrest.NewKeyFile("k1"))
	os.WriteFile(keyFile, raw, 0o600)

	source := sealedGroup(t, keyFile, st)
	for round := 0; round < 12; round++ {
		commitBatch(t, source, round)
	}
	waitConverged(t, source)
	created, err := leaderOf(t, source).svc.CreateBackup(ctx, &fedsyncv1.CreateBackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	m := created.GetBackup()
	if m.GetDocuments() != 4 || m.GetKeyId() != "k1" || m.GetRaftIndex() == 0 {
		t.Fatalf("backup %+v", m)
	}
	// The object holds no document value in the clear.
	rc, err := st.Get(ctx, m.GetId()+".snap")
	if err != nil {
		t.Fatal(err)
	}
	var obj bytes.Buffer
	obj.ReadFrom(rc)
	rc.Close()
	if bytes.Contains(obj.Bytes(), []byte(`"round"`)) {
		t.Fatal("the backup object holds a document value in the clear")
	}
	if _, err := leaderOf(t, source).svc.VerifyBackup(ctx, &fedsyncv1.VerifyBackupRequest{Id: m.GetId()}); err != nil {
		t.Fatal(err)
	}
	want := documents(t, leaderOf(t, source))
	// Changes after the backup are not in it.
	commitBatch(t, source, 12)

	fresh := sealedGroup(t, keyFile, st)
	leader := leaderOf(t, fresh)
	list, err := leader.svc.ListBackups(ctx, &fedsyncv1.ListBackupsRequest{})
	if err != nil || len(list.GetBackups()) != 1 {
		t.Fatalf("the fresh group lists %v, %v", list, err)
	}
	if _, err := followerOf(fresh, leader).svc.RestoreBackup(ctx, &fedsyncv1.RestoreBackupRequest{Id: m.GetId()}); !raftgroup.IsNotLeader(err) {
		t.Fatalf("a follower restored: %v", err)
	}
	if _, err := leader.svc.RestoreBackup(ctx, &fedsyncv1.RestoreBackupRequest{Id: m.GetId()}); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, fresh)
	for _, r := range fresh {
		var got backup.Manifest
		r.st.db.View(func(tx *bolt.Tx) error { return describeDocuments(tx, &got) })
		if got.DocumentsDigest != m.GetDocumentsDigest() || got.Documents != m.GetDocuments() {
			t.Fatalf("replica %s after the restore: %d documents, digest %s; the backup: %d, %s", r.cfg.ID, got.Documents, got.DocumentsDigest, m.GetDocuments(), m.GetDocumentsDigest())
		}
		if g := documents(t, r); len(g) != len(want) {
			t.Fatalf("replica %s holds %d documents, want %d", r.cfg.ID, len(g), len(want))
		} else {
			for id, v := range want {
				if g[id] != v {
					t.Fatalf("replica %s: %s is %s, want %s", r.cfg.ID, id, g[id], v)
				}
			}
		}
	}
	// The restored group takes writes after the restore, on top of it.
	commitBatch(t, fresh, 13)
	waitConverged(t, fresh)
	if st, _ := leaderOf(t, fresh).st.get("doc-0"); st.GetVersion() != 12*3+3 {
		t.Fatalf("doc-0 after the restore and a round: version %d, want %d", st.GetVersion(), 12*3+3)
	}

	// A damaged object is refused before anything is touched.
	b := obj.Bytes()
	b[len(b)/2] ^= 1
	if err := st.Put(ctx, m.GetId()+".snap", bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	_, err = leaderOf(t, fresh).svc.RestoreBackup(ctx, &fedsyncv1.RestoreBackupRequest{Id: m.GetId()})
	if e := apierr.As(err); e.Details["cause"] != "digest_mismatch" {
		t.Fatalf("restore a damaged backup: %v", err)
	}
	if _, err := leaderOf(t, fresh).svc.VerifyBackup(ctx, &fedsyncv1.VerifyBackupRequest{Id: "statestore-nope"}); apierr.As(err).Code != apierr.NotFound {
		t.Fatalf("verify an unknown backup: %v", err)
	}
}
