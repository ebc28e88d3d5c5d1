package statestore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/atrest"
	"github.com/fedsync/fedsync/libs/backup"
	"github.com/fedsync/fedsync/libs/raftgroup"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Cold backups (seed 4.2, tier 3): the leader exports the store, sealed with
// its at-rest key, to a directory or an S3 bucket, daily by default
// (-backup.*); fedctl backup create|list|verify|restore drives them through
// the admin API. A restore is a Raft user restore: the whole group takes it.

// backups is what the backup methods need; nil where there is no Raft group
// (unit tests of the service's logic).
type backups struct {
	store backup.Store
	vault *atrest.Vault
	node  *raftgroup.Node
	dir   string // where fetched backups are opened
}

// restoreTimeout bounds a restore's wait for a majority to take it.
const restoreTimeout = 5 * time.Minute

// describeDocuments counts the documents tx holds and digests them: their
// ids, versions and values (SHA-256) in id order. Two stores with the same
// digest hold the same documents.
func describeDocuments(tx *bolt.Tx, m *backup.Manifest) error {
	h := sha256.New()
	var n int64
	docs := tx.Bucket(bucketDocs)
	c := docs.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		v, err := atrest.OpenValue(tx, bucketDocs, k, v)
		if err != nil {
			return fmt.Errorf("document %s: %w", k, err)
		}
		version, value, err := versionAndValue(v)
		if err != nil {
			return fmt.Errorf("decode document %s: %w", k, err)
		}
		vh := sha256.Sum256(value)
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(k))))
		h.Write(k)
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(version)))
		h.Write(vh[:])
		n++
	}
	m.Documents, m.DocumentsDigest = n, hex.EncodeToString(h.Sum(nil))
	return nil
}

func (s *service) backupsOn() (*backups, error) {
	if s.backups == nil {
		return nil, apierr.New(apierr.Unavailable, "This statestore keeps no backups (it is not a replica of a Raft group).")
	}
	return s.backups, nil
}

func backupInfo(m backup.Manifest) *fedsyncv1.BackupInfo {
	return &fedsyncv1.BackupInfo{Id: m.ID, Service: m.Service, CreatedAt: m.CreatedAt.UnixNano(), RaftIndex: m.RaftIndex, Size: m.Size,
		Sha256: m.SHA256, PlainSize: m.PlainSize, KeyId: m.KeyID, Documents: m.Documents, DocumentsDigest: m.DocumentsDigest, Where: m.Where}
}

// backupErr maps libs/backup's errors to the contract's codes.
func backupErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, backup.ErrNoBackup):
		return apierr.New(apierr.NotFound, "%v", err)
	case errors.Is(err, backup.ErrDigest):
		return apierr.New(apierr.Internal, "%v. The object was altered or damaged in the store; use another backup.", err).WithDetail("cause", "digest_mismatch")
	case errors.Is(err, atrest.ErrNoKey):
		return apierr.New(apierr.Internal, "%v: add the key the backup was sealed with to this service's at-rest keys (fedctl at-rest add-key keeps old keys).", err).WithDetail("cause", "missing_key")
	case apierr.IsAnswered(err):
		return err
	}
	return apierr.New(apierr.Unavailable, "Backup store: %v. Retry.", err).WithRetryAfter(5 * time.Second)
}

// CreateBackup exports the store now.
func (s *service) CreateBackup(ctx context.Context, _ *fedsyncv1.CreateBackupRequest) (*fedsyncv1.CreateBackupResponse, error) {
	b, err := s.backupsOn()
	if err != nil {
		return nil, err
	}
	m, err := s.exportBackup(ctx, b)
	if err != nil {
		return nil, backupErr(err)
	}
	return &fedsyncv1.CreateBackupResponse{Backup: backupInfo(m)}, nil
}

func (s *service) exportBackup(ctx context.Context, b *backups) (backup.Manifest, error) {
	return raftgroup.ExportBackup(ctx, b.store, s.fsm.BoltFSM, b.vault, "statestore", describeDocuments)
}

// ListBackups lists the backups in the store, newest first.
func (s *service) ListBackups(ctx context.Context, _ *fedsyncv1.ListBackupsRequest) (*fedsyncv1.ListBackupsResponse, error) {
	b, err := s.backupsOn()
	if err != nil {
		return nil, err
	}
	all, err := backup.List(ctx, b.store)
	if err != nil {
		return nil, backupErr(err)
	}
	out := &fedsyncv1.ListBackupsResponse{Backups: []*fedsyncv1.BackupInfo{}}
	for _, m := range all {
		out.Backups = append(out.Backups, backupInfo(m))
	}
	return out, nil
}

// openVerified fetches backup id and checks it whole: the digest of its
// bytes, every sealed chunk, and the documents it holds against the
// manifest's count and digest.
func (s *service) openVerified(ctx context.Context, id string) (*raftgroup.OpenedBackup, error) {
	b, err := s.backupsOn()
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, apierr.New(apierr.InvalidArgument, "Field id is required: a backup id from fedctl backup list.")
	}
	o, err := raftgroup.FetchBackup(ctx, b.store, id, b.dir, b.vault)
	if err != nil {
		return nil, backupErr(err)
	}
	var got backup.Manifest
	err = o.DB.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketDocs) == nil {
			return errors.New("it holds no documents bucket: not a statestore backup")
		}
		got.RaftIndex = s.fsm.AppliedIn(tx)
		return describeDocuments(tx, &got)
	})
	m := o.Manifest
	switch {
	case err != nil:
		o.Close()
		return nil, apierr.New(apierr.Internal, "Backup %s opened but does not read: %v.", id, err)
	case got.Documents != m.Documents || got.DocumentsDigest != m.DocumentsDigest || got.RaftIndex != m.RaftIndex:
		o.Close()
		return nil, apierr.New(apierr.Internal, "Backup %s holds %d documents with digest %s at index %d; its manifest says %d, %s at %d.",
			id, got.Documents, got.DocumentsDigest, got.RaftIndex, m.Documents, m.DocumentsDigest, m.RaftIndex).WithDetail("cause", "digest_mismatch")
	}
	return o, nil
}

// VerifyBackup reads a backup whole and checks it against its manifest.
func (s *service) VerifyBackup(ctx context.Context, req *fedsyncv1.VerifyBackupRequest) (*fedsyncv1.VerifyBackupResponse, error) {
	o, err := s.openVerified(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	defer o.Close()
	return &fedsyncv1.VerifyBackupResponse{Backup: backupInfo(o.Manifest)}, nil
}

// RestoreBackup verifies a backup and makes it the group's state.
func (s *service) RestoreBackup(ctx context.Context, req *fedsyncv1.RestoreBackupRequest) (*fedsyncv1.RestoreBackupResponse, error) {
	o, err := s.openVerified(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	defer o.Close()
	if err := s.backups.node.Restore(o, restoreTimeout); err != nil {
		if raftgroup.IsNotLeader(err) {
			return nil, err
		}
		return nil, apierr.New(apierr.Unavailable, "%v. The group's state is unchanged unless a majority took the snapshot; retry.", err).WithRetryAfter(5 * time.Second)
	}
	s.wake()
	return &fedsyncv1.RestoreBackupResponse{Backup: backupInfo(o.Manifest)}, nil
}
