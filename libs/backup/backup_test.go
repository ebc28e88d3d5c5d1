package backup_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedsync/fedsync/libs/atrest"
	"github.com/fedsync/fedsync/libs/backup"
	"github.com/fedsync/fedsync/libs/backup/backuptest"
)

func ring(t *testing.T, id string) *atrest.Keyring {
	t.Helper()
	kf := atrest.NewKeyFile(id)
	raw, _ := jsonOf(kf)
	r, err := atrest.Load(atrest.StaticSource(raw))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// roundTrip stores a backup of 300 KiB (several sealed chunks) with a known
// phrase in it and reads it back; the stored bytes never hold the phrase.
func roundTrip(t *testing.T, st backup.Store, raw func(name string) []byte, tamper func(name string)) {
	ctx := context.Background()
	r := ring(t, "k1")
	plain := make([]byte, 300<<10)
	rand.Read(plain)
	secret := []byte("the-secret-plan-of-ai-007")
	copy(plain[1000:], secret)
	m, err := backup.Create(ctx, st, backup.Manifest{ID: backup.NewID("statestore", time.Now(), 42), Service: "statestore", CreatedAt: time.Now().UTC(), RaftIndex: 42},
		r, func(w io.Writer) (int64, error) { n, err := w.Write(plain); return int64(n), err })
	if err != nil {
		t.Fatal(err)
	}
	if m.PlainSize != int64(len(plain)) || m.KeyID != "k1" || len(m.SHA256) != 64 || m.Size <= m.PlainSize {
		t.Fatalf("manifest %+v", m)
	}
	if bytes.Contains(raw(m.ID+".snap"), secret) {
		t.Fatal("the stored backup holds the phrase in the clear")
	}
	list, err := backup.List(ctx, st)
	if err != nil || len(list) != 1 || list[0].ID != m.ID || list[0].SHA256 != m.SHA256 {
		t.Fatalf("list: %+v %v", list, err)
	}
	var got bytes.Buffer
	if _, err := backup.Fetch(ctx, st, m.ID, r, &got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), plain) {
		t.Fatal("fetched bytes differ")
	}
	// Without the key it does not open.
	if _, err := backup.Fetch(ctx, st, m.ID, ring(t, "other"), io.Discard); !errors.Is(err, atrest.ErrNoKey) {
		t.Fatalf("fetch with another keyring: %v", err)
	}
	if _, err := backup.Fetch(ctx, st, "statestore-nope", r, io.Discard); !errors.Is(err, backup.ErrNoBackup) {
		t.Fatalf("fetch an unknown id: %v", err)
	}
	// One flipped byte anywhere is a digest mismatch.
	tamper(m.ID + ".snap")
	if _, err := backup.Fetch(ctx, st, m.ID, r, io.Discard); !errors.Is(err, backup.ErrDigest) {
		t.Fatalf("fetch a damaged backup: %v", err)
	}
}

func TestDirRoundTrip(t *testing.T) {
	dir := t.TempDir()
	st := backup.Dir{Path: dir}
	roundTrip(t, st, func(name string) []byte {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return b
	}, func(name string) {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		b[len(b)/2] ^= 1
		os.WriteFile(filepath.Join(dir, name), b, 0o600)
	})
}

// TestS3RoundTrip runs the same against a real S3 API server (s3proxy).
func TestS3RoundTrip(t *testing.T) {
	o := backuptest.StartS3(t)
	st, err := backup.Open("s3://fedsync-backups/prod/statestore", o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if list, err := backup.List(ctx, st); err != nil || len(list) != 0 {
		t.Fatalf("an empty (absent) bucket lists %v, %v", list, err)
	}
	get := func(name string) []byte {
		rc, err := st.Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		return b
	}
	roundTrip(t, st, get, func(name string) {
		b := get(name)
		b[len(b)/2] ^= 1
		if err := st.Put(ctx, name, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	})
	bad, _ := backup.Open("s3://fedsync-backups/prod", backup.S3Options{Endpoint: o.Endpoint, Insecure: true, AccessKey: "wrong", SecretKey: "wrong"})
	if _, err := backup.List(ctx, bad); err == nil {
		t.Fatal("wrong credentials listed the bucket")
	}
}

func TestPruneKeepsTheNewest(t *testing.T) {
	ctx := context.Background()
	st := backup.Dir{Path: t.TempDir()}
	now := time.Now().UTC()
	for _, age := range []time.Duration{100 * 24 * time.Hour, 91 * 24 * time.Hour, 10 * 24 * time.Hour} {
		at := now.Add(-age)
		if _, err := backup.Create(ctx, st, backup.Manifest{ID: backup.NewID("statestore", at, 1), Service: "statestore", CreatedAt: at}, nil,
			func(w io.Writer) (int64, error) { n, err := io.WriteString(w, "x"); return int64(n), err }); err != nil {
			t.Fatal(err)
		}
	}
	gone, err := backup.Prune(ctx, st, "statestore", 90*24*time.Hour, now)
	if err != nil || len(gone) != 2 {
		t.Fatalf("pruned %v, %v", gone, err)
	}
	list, _ := backup.List(ctx, st)
	if len(list) != 1 || now.Sub(list[0].CreatedAt) > 11*24*time.Hour {
		t.Fatalf("left %+v", list)
	}
	// All past retention: the newest stays.
	gone, _ = backup.Prune(ctx, st, "statestore", time.Hour, now)
	if list, _ := backup.List(ctx, st); len(gone) != 0 || len(list) != 1 {
		t.Fatalf("the newest backup was pruned: %v", gone)
	}
	objs, _ := st.List(ctx)
	for _, o := range objs {
		if !strings.HasPrefix(o.Name, list[0].ID) {
			t.Fatalf("left behind %s", o.Name)
		}
	}
}

func TestOpenTargets(t *testing.T) {
	for target, ok := range map[string]bool{"/var/backups": true, "file:///var/backups": true, "s3://bucket/p": true, "s3:///p": false, "gs://b": false, "": false} {
		_, err := backup.Open(target, backup.S3Options{})
		if (err == nil) != ok {
			t.Errorf("Open(%q): %v", target, err)
		}
	}
}

func jsonOf(kf atrest.KeyFile) ([]byte, error) { return json.Marshal(kf) }
