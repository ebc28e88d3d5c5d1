package raftgroup

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/fedsync/fedsync/libs/atrest"
)

func vault(t *testing.T, f atrest.KeyFile) *atrest.Vault {
	t.Helper()
	raw, _ := json.Marshal(f)
	v, err := atrest.NewVault(atrest.StaticSource(raw))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// grepDir fails when any file under dir holds needle.
func grepDir(t *testing.T, dir string, needle []byte) {
	t.Helper()
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		if raw, _ := os.ReadFile(path); bytes.Contains(raw, needle) {
			t.Errorf("%s holds %q in the clear", path, needle)
		}
		return nil
	})
}

// Snapshots of every size round-trip through the sealed store, report their
// plaintext size, and do not hold the plaintext; a snapshot written before
// encryption was on still opens.
func TestSealedSnapshots(t *testing.T) {
	dir := t.TempDir()
	files, err := raft.NewFileSnapshotStore(dir, 10, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	marker := []byte("PLAINTEXT-MARKER-7f3a")
	plainStore := &sealedSnaps{SnapshotStore: files}
	store := &sealedSnaps{SnapshotStore: files, vault: vault(t, atrest.NewKeyFile("k1"))}
	write := func(s *sealedSnaps, index uint64, data []byte) string {
		sink, err := s.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		// In uneven pieces, as bbolt writes.
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 1000+int(index)%7000)
			if _, err := sink.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if err := sink.Close(); err != nil {
			t.Fatal(err)
		}
		return sink.ID()
	}
	for i, size := range []int{0, 1, atrest.StreamChunk - 1, atrest.StreamChunk, atrest.StreamChunk + 1, 3*atrest.StreamChunk + 17} {
		data := make([]byte, size)
		rand.Read(data)
		if size > len(marker) {
			copy(data[size/2:], marker)
		}
		id := write(store, uint64(i+1), data)
		meta, rc, err := store.Open(id)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data) || meta.Size != int64(size) {
			t.Fatalf("size %d: read %d bytes (meta %d), equal %v, err %v", size, len(got), meta.Size, bytes.Equal(got, data), err)
		}
	}
	grepDir(t, dir, marker)
	legacy := write(plainStore, 100, []byte("an unsealed snapshot"))
	if _, rc, err := store.Open(legacy); err != nil {
		t.Fatal(err)
	} else if got, _ := io.ReadAll(rc); string(got) != "an unsealed snapshot" {
		t.Fatalf("legacy snapshot: %q", got)
	}
}

// Log entries are sealed in the log store, read back in the clear, and
// re-sealed with a new active key.
func TestSealedLogs(t *testing.T) {
	dir := t.TempDir()
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	k1, k2 := atrest.NewKeyFile("k1"), atrest.NewKeyFile("k2")
	logs := &sealedLogs{LogStore: bolt, vault: vault(t, k1)}
	marker := []byte("LOG-MARKER-42c1")
	for i := uint64(1); i <= 50; i++ {
		if err := logs.StoreLog(&raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: append([]byte("cmd "), marker...)}); err != nil {
			t.Fatal(err)
		}
	}
	var l raft.Log
	if err := logs.GetLog(7, &l); err != nil || !bytes.Equal(l.Data, append([]byte("cmd "), marker...)) {
		t.Fatalf("entry 7: %q %v", l.Data, err)
	}
	both := atrest.KeyFile{Active: "k2", Keys: map[string]string{"k1": k1.Keys["k1"], "k2": k2.Keys["k2"]}}
	logs.vault = vault(t, both)
	refs, err := logs.reseal()
	if err != nil || refs["k2"] != 50 || refs["k1"] != 0 {
		t.Fatalf("reseal: %v %v", refs, err)
	}
	logs.vault = vault(t, k2)
	if err := logs.GetLog(50, &l); err != nil || !bytes.Equal(l.Data, append([]byte("cmd "), marker...)) {
		t.Fatalf("entry 50 with k1 retired: %q %v", l.Data, err)
	}
	bolt.Close()
	grepDir(t, dir, marker)
}
