package statestore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/statedoc"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

var (
	bucketDocs    = []byte("docs")    // id -> State
	bucketApplied = []byte("applied") // id \x00 message_id -> version
	bucketLog     = []byte("log")     // seq -> SyncMessage{EVENT, Change}
	bucketMeta    = []byte("meta")
	keyPublished  = []byte("published_seq") // highest seq acknowledged by Kafka
)

// store keeps documents, the applied message ids and the committed-change log in
// one bbolt file, changed together in one transaction per commit.
type store struct {
	db  *bolt.DB
	now func() time.Time
}

func openStore(dir string) (*store, error) {
	path := filepath.Join(dir, "statestore.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketDocs, bucketApplied, bucketLog, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("create buckets in %s: %w", path, err)
	}
	return &store{db: db, now: time.Now}, nil
}

func (s *store) close() error { return s.db.Close() }

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func appliedKey(id, messageID string) []byte { return []byte(id + "\x00" + messageID) }

// commit is the outcome of apply.
type commit struct {
	version   int64
	seq       uint64
	duplicate bool
}

// apply commits req as the next version of its document, atomically with its log
// entry and its message id. traceMeta is stored with the log entry so the
// publisher continues the writer's trace.
func (s *store) apply(req *fedsyncv1.ApplyRequest, traceMeta map[string]string) (commit, error) {
	var out commit
	patch, err := statedoc.DecodeObject(req.GetPatch())
	if err != nil {
		return out, apierr.New(apierr.InvalidArgument, "Field patch %v.", err)
	}
	err = s.db.Batch(func(tx *bolt.Tx) error {
		out = commit{}
		docs, applied, logb := tx.Bucket(bucketDocs), tx.Bucket(bucketApplied), tx.Bucket(bucketLog)
		if req.GetMessageId() != "" {
			if v := applied.Get(appliedKey(req.GetId(), req.GetMessageId())); v != nil {
				out = commit{version: int64(binary.BigEndian.Uint64(v)), duplicate: true}
				return nil
			}
		}
		cur := &fedsyncv1.State{}
		if raw := docs.Get([]byte(req.GetId())); raw != nil {
			if err := proto.Unmarshal(raw, cur); err != nil {
				return fmt.Errorf("decode state %s: %w", req.GetId(), err)
			}
		}
		if req.GetHasExpectedVersion() && cur.GetVersion() != req.GetExpectedVersion() {
			return apierr.New(apierr.VersionConflict, "State %s is at version %d, not %d.", req.GetId(), cur.GetVersion(), req.GetExpectedVersion()).
				WithDetail("current_version", cur.GetVersion())
		}
		if cur.GetVersion() > 0 && cur.GetDataType() != req.GetDataType() {
			return apierr.New(apierr.InvalidArgument, "Field data_type is %q but state %s has data_type %q.", req.GetDataType(), req.GetId(), cur.GetDataType())
		}
		value, err := statedoc.DecodeObject(orEmpty(cur.GetValue()))
		if err != nil {
			return fmt.Errorf("decode value of %s: %w", req.GetId(), err)
		}
		value.Apply(patch)
		next := &fedsyncv1.State{
			Id:          req.GetId(),
			DataType:    req.GetDataType(),
			Value:       value.Encode(),
			Version:     cur.GetVersion() + 1,
			VectorClock: mergeClocks(cur.GetVectorClock(), req.GetVectorClock()),
			UpdatedAt:   s.now().UnixNano(),
			UpdatedBy:   req.GetWriter(),
			Fields:      cur.GetFields(),
		}
		if next.Fields == nil {
			next.Fields = map[string]*fedsyncv1.FieldMeta{}
		}
		for k, v := range patch {
			meta := &fedsyncv1.FieldMeta{Writer: req.GetWriter(), Version: next.Version, Deleted: statedoc.IsNull(v)}
			if m := req.GetFields()[k]; m != nil {
				meta.Hlc, meta.Writer = m.GetHlc(), m.GetWriter()
			}
			next.Fields[k] = meta
		}
		raw, err := proto.Marshal(next)
		if err != nil {
			return err
		}
		if err := docs.Put([]byte(next.Id), raw); err != nil {
			return err
		}
		seq, err := logb.NextSequence()
		if err != nil {
			return err
		}
		change := &fedsyncv1.Change{Seq: seq, State: next, MessageId: req.GetMessageId(), AdmittedAt: req.GetAdmittedAt(), Region: req.GetRegion()}
		payload, err := proto.Marshal(change)
		if err != nil {
			return err
		}
		entry, err := proto.Marshal(&fedsyncv1.SyncMessage{
			MessageId: req.GetMessageId(), SenderId: req.GetWriter(), Timestamp: next.UpdatedAt,
			Type: fedsyncv1.MessageType_EVENT, Payload: payload, Metadata: traceMeta,
		})
		if err != nil {
			return err
		}
		if err := logb.Put(u64(seq), entry); err != nil {
			return err
		}
		if req.GetMessageId() != "" {
			if err := applied.Put(appliedKey(next.Id, req.GetMessageId()), u64(uint64(next.Version))); err != nil {
				return err
			}
		}
		out = commit{version: next.Version, seq: seq}
		return nil
	})
	return out, err
}

func orEmpty(b []byte) []byte {
	if len(b) == 0 {
		return []byte("{}")
	}
	return b
}

func mergeClocks(a, b map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if v > out[k] {
			out[k] = v
		}
	}
	return out
}

var errNotFound = errors.New("not found")

func (s *store) get(id string) (*fedsyncv1.State, error) {
	st := &fedsyncv1.State{}
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketDocs).Get([]byte(id))
		if raw == nil {
			return errNotFound
		}
		return proto.Unmarshal(raw, st)
	})
	return st, err
}

// query returns up to limit documents with ids after `after` that start with
// prefix and have dataType (any when empty), and whether more may follow.
func (s *store) query(prefix, dataType, after string, limit int) ([]*fedsyncv1.State, bool, error) {
	var items []*fedsyncv1.State
	more := false
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDocs).Cursor()
		start := []byte(prefix)
		if after != "" && after >= prefix {
			start = []byte(after + "\x00")
		}
		for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
			st := &fedsyncv1.State{}
			if err := proto.Unmarshal(v, st); err != nil {
				return fmt.Errorf("decode state %s: %w", k, err)
			}
			if dataType != "" && st.GetDataType() != dataType {
				continue
			}
			if len(items) == limit {
				more = true
				return nil
			}
			items = append(items, st)
		}
		return nil
	})
	return items, more, err
}

// readLog returns log entries with seq > after, at most limit, and the head seq.
// It fails with cursor_expired when entries after `after` were trimmed.
func (s *store) readLog(after uint64, limit int) ([]*fedsyncv1.SyncMessage, uint64, error) {
	var out []*fedsyncv1.SyncMessage
	var head uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLog)
		head = b.Sequence()
		c := b.Cursor()
		first, _ := c.First()
		if after < head && (first == nil || binary.BigEndian.Uint64(first) > after+1) {
			return apierr.New(apierr.CursorExpired, "Cursor %d is older than the retained log; read a snapshot and subscribe again.", after)
		}
		for k, v := c.Seek(u64(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			m := &fedsyncv1.SyncMessage{}
			if err := proto.Unmarshal(v, m); err != nil {
				return fmt.Errorf("decode log entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, m)
		}
		return nil
	})
	return out, head, err
}

// published returns the highest seq Kafka acknowledged.
func (s *store) published() (uint64, error) {
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyPublished); v != nil {
			seq = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return seq, err
}

// markPublished records that every entry up to seq is in Kafka, and trims log
// entries beyond the retention.
func (s *store) markPublished(seq, retention uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketMeta).Put(keyPublished, u64(seq)); err != nil {
			return err
		}
		if seq <= retention {
			return nil
		}
		c := tx.Bucket(bucketLog).Cursor()
		cut := seq - retention
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= cut; k, _ = c.Next() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}

// head returns the highest committed seq.
func (s *store) head() (uint64, error) {
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		seq = tx.Bucket(bucketLog).Sequence()
		return nil
	})
	return seq, err
}
