package raftgroup

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/fedsync/fedsync/libs/atrest"
	"github.com/fedsync/fedsync/libs/backup"
)

// A backup (libs/backup) of a group's state is what a Raft snapshot holds:
// the store as one read transaction sees it. Restoring one is Raft's user
// restore: the leader installs it as a snapshot at an index past its log and
// the followers are sent it, so the whole group takes it, in order with the
// writes around it.

// AppliedIn returns the applied index recorded in tx.
func (f *BoltFSM) AppliedIn(tx *bolt.Tx) uint64 {
	if b := tx.Bucket(f.Meta); b != nil {
		if v := b.Get(keyApplied); len(v) == 8 {
			return binary.BigEndian.Uint64(v)
		}
	}
	return 0
}

// ExportBackup stores a backup of the store in st, sealed with the vault's
// active key: m's ID, RaftIndex and CreatedAt are set here; describe fills
// in the rest (Documents, DocumentsDigest) from the same transaction.
func ExportBackup(ctx context.Context, st backup.Store, f *BoltFSM, vault *atrest.Vault, service string, describe func(tx *bolt.Tx, m *backup.Manifest) error) (backup.Manifest, error) {
	tx, err := f.DB.Begin(false)
	if err != nil {
		return backup.Manifest{}, err
	}
	defer tx.Rollback()
	now := time.Now().UTC()
	m := backup.Manifest{Service: service, CreatedAt: now, RaftIndex: f.AppliedIn(tx)}
	m.ID = backup.NewID(service, now, m.RaftIndex)
	if err := describe(tx, &m); err != nil {
		return m, err
	}
	return backup.Create(ctx, st, m, vault.Ring(), func(w io.Writer) (int64, error) { return tx.WriteTo(w) })
}

// OpenedBackup is a backup fetched, its digest checked and opened into a
// temporary bbolt file.
type OpenedBackup struct {
	Manifest backup.Manifest
	DB       *bolt.DB
	path     string
	closed   bool
}

// Close closes and removes the temporary file.
func (o *OpenedBackup) Close() {
	if !o.closed {
		atrest.Forget(o.DB)
		o.DB.Close()
	}
	os.Remove(o.path)
}

// FetchBackup fetches backup id into a temporary file in dir, checks its
// digest and opens it read-only, its sealed values readable with vault.
func FetchBackup(ctx context.Context, st backup.Store, id, dir string, vault *atrest.Vault) (*OpenedBackup, error) {
	tmp, err := os.CreateTemp(dir, "backup-*.db")
	if err != nil {
		return nil, err
	}
	m, err := backup.Fetch(ctx, st, id, vault.Ring(), tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return nil, err
	}
	db, err := bolt.Open(tmp.Name(), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("backup %s: not a store: %w", id, err)
	}
	atrest.Register(db, vault)
	return &OpenedBackup{Manifest: m, DB: db, path: tmp.Name()}, nil
}

// Restore makes the backup the group's state: a Raft user restore on this
// replica, which must lead. The snapshot goes in at an index past both the
// group's log and the backup's (so the store's applied index stays behind
// every entry that follows), and the call returns once a majority holds it.
func (n *Node) Restore(o *OpenedBackup, timeout time.Duration) error {
	if !n.IsLeader() {
		return n.NotLeader()
	}
	atrest.Forget(o.DB)
	o.closed = true
	if err := o.DB.Close(); err != nil {
		return err
	}
	f, err := os.Open(o.path)
	if err != nil {
		return err
	}
	defer f.Close()
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: o.Manifest.RaftIndex, Size: o.Manifest.PlainSize}
	if err := n.Raft.Restore(meta, f, timeout); err != nil {
		return fmt.Errorf("restore backup %s into the %s group: %w", o.Manifest.ID, n.Group, err)
	}
	return nil
}
