package statestore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/atrest"
	"github.com/fedsync/fedsync/libs/digest"
	"github.com/fedsync/fedsync/libs/statedoc"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

var (
	bucketDocs    = []byte("docs")    // id -> State
	bucketApplied = []byte("applied") // id \x00 message_id -> version
	bucketLog     = []byte("log")     // seq -> SyncMessage{EVENT, Change}
	bucketMeta    = []byte("meta")
	keyPublished  = []byte("published_seq") // highest seq acknowledged by Kafka
	// bucketConflicts holds every conflict by id; bucketPending indexes the
	// review queue (conflicts waiting for a person).
	bucketConflicts = []byte("conflicts")
	bucketPending   = []byte("pending")
	// bucketConflictOutbox holds conflicts not yet on fedsync.conflicts.
	bucketConflictOutbox = []byte("conflict_outbox")
	bucketOutcomes       = []byte("outcomes") // message_id -> Outcome
	bucketFrontier       = []byte("frontier") // agent -> causal counter
)

var allBuckets = [][]byte{bucketDocs, bucketApplied, bucketLog, bucketMeta, bucketConflicts, bucketPending, bucketConflictOutbox, bucketOutcomes, bucketFrontier}

// store keeps documents, the applied message ids and the committed-change log in
// one bbolt file, changed together in one transaction per commit.
type store struct {
	db  *bolt.DB
	now func() time.Time
	// maxDoc is the largest document a commit may produce (bytes of its
	// value); 0 means no limit.
	maxDoc int
}

// DefaultMaxDocBytes is the default document size limit (-doc.max-bytes).
const DefaultMaxDocBytes = 4 << 20

func openStore(dir string) (*store, error) {
	path := filepath.Join(dir, "statestore.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
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
	return &store{db: db, now: time.Now, maxDoc: DefaultMaxDocBytes}, nil
}

func (s *store) close() error { return s.db.Close() }

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func appliedKey(id, messageID string) []byte { return []byte(id + "\x00" + messageID) }

// commit is the outcome of apply.
type commit struct {
	version   int64
	seq       uint64
	duplicate bool
	// logBytes is the size of the log entry it added (unsealed).
	logBytes int
}

// decodePatch returns req's patch: its fields as merge sent them, or (from a
// caller that sends JSON) its JSON object decoded.
func decodePatch(req *fedsyncv1.ApplyRequest) (statedoc.Object, error) {
	return statedoc.PatchOf(req.GetPatchFields(), req.GetPatch())
}

// batchItem is one item of applyBatch and what became of it.
type batchItem struct {
	req *fedsyncv1.ApplyRequest
	// patch is the decoded patch; nil when err is already set.
	patch statedoc.Object
	out   commit
	// err is the item's business error (an *apierr.Error), nil when it committed.
	err error
	// trace is the item's own trace context for its log entry; nil takes the
	// batch's.
	trace map[string]string
}

// errAborted is the result of an item skipped because an earlier item of its
// id in the same batch did not commit.
var errAborted = apierr.New(apierr.VersionConflict, "An earlier change of this document in the same batch did not commit; merge it again.")

// applyBatchTx records outcomes and commits items inside tx. A business error
// (version conflict, causal order, data type, a bad conflict to resolve)
// settles only its item and the later items of its id; the others commit.
// Only an infrastructure error (the disk) fails the batch. now is the commit
// time, chosen once by the proposer so every replica commits the same bytes.
func (s *store) applyBatchTx(tx *bolt.Tx, items []*batchItem, outcomes []*fedsyncv1.RecordOutcomeRequest, traceMeta map[string]string, now int64) error {
	for _, o := range outcomes {
		if err := s.recordOutcomeTx(tx, o, now); err != nil {
			return err
		}
	}
	failed := map[string]bool{}
	logBytes := 0
	for _, it := range items {
		it.out = commit{}
		if it.patch == nil {
			continue // refused before the transaction
		}
		it.err = nil
		if failed[it.req.GetId()] {
			it.err = errAborted
			continue
		}
		tm := traceMeta
		if it.trace != nil {
			tm = it.trace
		}
		out, err := s.applyTx(tx, it.req, it.patch, tm, now)
		if err != nil {
			if !isBusiness(err) {
				return err
			}
			it.err = err
			failed[it.req.GetId()] = true
			continue
		}
		it.out = out
		logBytes += out.logBytes
	}
	if logBytes == 0 {
		return nil
	}
	// The log's size, once per batch.
	return tx.Bucket(bucketMeta).Put(keyLogBytes, u64(logBytesTx(tx)+uint64(logBytes)))
}

// isBusiness reports whether err is an answer about the request (a contract
// error code other than unavailable or internal) rather than a failure.
func isBusiness(err error) bool {
	var e *apierr.Error
	return errors.As(err, &e) && !apierr.IsInfrastructure(err)
}

// applyTx commits req inside tx. Every business check comes before the first
// write, so a business error leaves tx untouched.
func (s *store) applyTx(tx *bolt.Tx, req *fedsyncv1.ApplyRequest, patch statedoc.Object, traceMeta map[string]string, now int64) (commit, error) {
	applied, logb := tx.Bucket(bucketApplied), tx.Bucket(bucketLog)
	if req.GetMessageId() != "" {
		if v := applied.Get(appliedKey(req.GetId(), req.GetMessageId())); v != nil {
			return commit{version: int64(binary.BigEndian.Uint64(v[:8])), duplicate: true}, nil
		}
	}
	if err := checkCausal(tx, req.GetCausalAgent(), req.GetCausalCounter()); err != nil {
		return commit{}, err
	}
	cur := &fedsyncv1.State{}
	if raw, err := atrest.Get(tx, bucketDocs, []byte(req.GetId())); err != nil {
		return commit{}, err
	} else if raw != nil {
		if err := proto.Unmarshal(raw, cur); err != nil {
			return commit{}, fmt.Errorf("decode state %s: %w", req.GetId(), err)
		}
	}
	if req.GetHasExpectedVersion() && cur.GetVersion() != req.GetExpectedVersion() {
		return commit{}, apierr.New(apierr.VersionConflict, "State %s is at version %d, not %d.", req.GetId(), cur.GetVersion(), req.GetExpectedVersion()).
			WithDetail("current_version", cur.GetVersion())
	}
	if cur.GetVersion() > 0 && cur.GetDataType() != req.GetDataType() {
		return commit{}, apierr.New(apierr.InvalidArgument, "Field data_type is %q but state %s has data_type %q.", req.GetDataType(), req.GetId(), cur.GetDataType())
	}
	if err := checkConflicts(tx, req.GetResolvesConflictId(), req.GetConflicts()); err != nil {
		return commit{}, err
	}
	nc, err := statedoc.NextCommit(cur, req, patch, now)
	if err != nil {
		return commit{}, apierr.New(apierr.InvalidArgument, "Field patch of %s: %v.", req.GetId(), err)
	}
	next := nc.State
	if s.maxDoc > 0 && len(next.GetValue()) > s.maxDoc {
		return commit{}, apierr.New(apierr.TooLarge, "State %s would be %d bytes after this change; the limit is %d bytes.", req.GetId(), len(next.GetValue()), s.maxDoc).
			WithDetail("limit", s.maxDoc).WithDetail("size", len(next.GetValue()))
	}
	// From here on only writes: an error is the disk's, and fails the transaction.
	if err := advanceCausal(tx, req.GetCausalAgent(), req.GetCausalCounter()); err != nil {
		return commit{}, err
	}
	if err := resolveConflict(tx, req.GetResolvesConflictId(), req.GetWriter(), next.Version); err != nil {
		return commit{}, err
	}
	if err := putConflicts(tx, req.GetConflicts(), next.Version); err != nil {
		return commit{}, err
	}
	if err := putOutcome(tx, &fedsyncv1.Outcome{MessageId: req.GetMessageId(), StateId: next.Id, Status: "committed", Version: next.Version, At: next.UpdatedAt}); err != nil {
		return commit{}, err
	}
	raw, err := proto.Marshal(next)
	if err != nil {
		return commit{}, err
	}
	if err := atrest.Put(tx, bucketDocs, []byte(next.Id), raw); err != nil {
		return commit{}, err
	}
	seq, err := logb.NextSequence()
	if err != nil {
		return commit{}, err
	}
	change := &fedsyncv1.Change{Seq: seq, State: next, MessageId: req.GetMessageId(), AdmittedAt: req.GetAdmittedAt(), Region: req.GetRegion(),
		Set: nc.Set, Removed: nc.Removed, ValueHash: digest.ValueHash(next.GetValue())}
	payload, err := proto.Marshal(change)
	if err != nil {
		return commit{}, err
	}
	entry, err := proto.Marshal(&fedsyncv1.SyncMessage{
		MessageId: req.GetMessageId(), SenderId: req.GetWriter(), Timestamp: next.UpdatedAt,
		Type: fedsyncv1.MessageType_EVENT, Payload: payload, Metadata: withStateID(traceMeta, next.Id),
	})
	if err != nil {
		return commit{}, err
	}
	if err := atrest.Put(tx, bucketLog, u64(seq), entry); err != nil {
		return commit{}, err
	}
	if req.GetMessageId() != "" {
		// Version, then commit time: the time lets sweep forget message ids
		// older than the window in which Kafka can deliver them again.
		if err := applied.Put(appliedKey(next.Id, req.GetMessageId()), append(u64(uint64(next.Version)), u64(uint64(next.UpdatedAt))...)); err != nil {
			return commit{}, err
		}
	}
	return commit{version: next.Version, seq: seq, logBytes: len(entry)}, nil
}

var errNotFound = errors.New("not found")

func (s *store) get(id string) (*fedsyncv1.State, error) {
	st := &fedsyncv1.State{}
	err := s.db.View(func(tx *bolt.Tx) error {
		raw, err := atrest.Get(tx, bucketDocs, []byte(id))
		if err != nil {
			return err
		}
		if raw == nil {
			return errNotFound
		}
		return proto.Unmarshal(raw, st)
	})
	return st, err
}

// getMany returns the stored documents of ids, leaving out those that do not exist.
func (s *store) getMany(ids []string) ([]*fedsyncv1.State, error) {
	var out []*fedsyncv1.State
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, id := range ids {
			raw, err := atrest.Get(tx, bucketDocs, []byte(id))
			if err != nil {
				return err
			}
			if raw == nil {
				continue
			}
			st := &fedsyncv1.State{}
			if err := proto.Unmarshal(raw, st); err != nil {
				return fmt.Errorf("decode state %s: %w", id, err)
			}
			out = append(out, st)
		}
		return nil
	})
	return out, err
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
			v, err := atrest.OpenValue(tx, bucketDocs, k, v)
			if err != nil {
				return err
			}
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

// logEntry is one committed change as stored: its position, its stored bytes
// (what is published), and the decoded envelope.
type logEntry struct {
	seq uint64
	raw []byte
	msg *fedsyncv1.SyncMessage
}

// metaStateID is the envelope metadata key naming the changed document, so the
// publisher keys records without decoding the whole change.
const metaStateID = "state_id"

// readLog returns log entries with seq > after, at most limit, and the head seq.
// It fails with cursor_expired when entries after `after` were trimmed.
func (s *store) readLog(after uint64, limit int) ([]logEntry, uint64, error) {
	var out []logEntry
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
			v, err := atrest.OpenValue(tx, bucketLog, k, v)
			if err != nil {
				return err
			}
			e := logEntry{seq: binary.BigEndian.Uint64(k), raw: append([]byte(nil), v...), msg: &fedsyncv1.SyncMessage{}}
			if err := proto.Unmarshal(e.raw, e.msg); err != nil {
				return fmt.Errorf("decode log entry %d: %w", e.seq, err)
			}
			out = append(out, e)
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

// logRetention bounds the committed-change log: entries beyond the newest
// count, entries committed before a time (byAge), and the oldest entries
// while the log holds more than bytes (of entries as committed, before
// sealing: the same on every replica). Zero is no bound.
type logRetention struct {
	count  uint64
	before int64
	byAge  bool
	bytes  uint64
}

// maxTrimPerRound bounds the entries one trim removes, so that a retention
// made shorter does not become one huge transaction.
const maxTrimPerRound = 10000

var keyLogBytes = []byte("log_bytes") // bytes of the log's entries, unsealed

// logBytesTx returns the log's size as counted (0 for a store that predates
// the count: it then counts only newer entries, and the size bound applies
// late, never early).
func logBytesTx(tx *bolt.Tx) uint64 {
	if v := tx.Bucket(bucketMeta).Get(keyLogBytes); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// markPublished records that every entry up to seq is in Kafka, and trims
// the published entries beyond the retention. A subscriber whose cursor is
// older is told to read a snapshot (snapshot_required).
func markPublishedTx(tx *bolt.Tx, seq uint64, r logRetention) error {
	if err := tx.Bucket(bucketMeta).Put(keyPublished, u64(seq)); err != nil {
		return err
	}
	size := logBytesTx(tx)
	c := tx.Bucket(bucketLog).Cursor()
	trimmed := 0
	for k, v := c.First(); k != nil && trimmed < maxTrimPerRound; k, v = c.Next() {
		s := binary.BigEndian.Uint64(k)
		if s > seq {
			break // never an entry Kafka does not hold yet
		}
		byCount := r.count > 0 && seq > r.count && s <= seq-r.count
		bySize := r.bytes > 0 && size > r.bytes
		if !byCount && !bySize && !r.byAge {
			break
		}
		plain, err := atrest.OpenValue(tx, bucketLog, k, v)
		if err != nil {
			return err
		}
		if !byCount && !bySize {
			var m fedsyncv1.SyncMessage
			if err := proto.Unmarshal(plain, &m); err != nil {
				return fmt.Errorf("decode log entry %d: %w", s, err)
			}
			if m.GetTimestamp() >= r.before {
				break
			}
		}
		size -= min(size, uint64(len(plain)))
		if err := c.Delete(); err != nil {
			return err
		}
		trimmed++
	}
	if trimmed == 0 {
		return nil
	}
	return tx.Bucket(bucketMeta).Put(keyLogBytes, u64(size))
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

// checkCausal refuses a causal commit whose writer's previous delta is not
// settled yet: the frontier of agent must be counter-1.
func checkCausal(tx *bolt.Tx, agent string, counter int64) error {
	if agent == "" || counter <= 0 {
		return nil
	}
	var cur int64
	if v := tx.Bucket(bucketFrontier).Get([]byte(agent)); v != nil {
		cur = int64(binary.BigEndian.Uint64(v))
	}
	if cur != counter-1 {
		return apierr.New(apierr.VersionConflict, "Causal delta %d of %s is not next: the frontier is at %d.", counter, agent, cur).
			WithDetail("frontier", cur)
	}
	return nil
}

func advanceCausal(tx *bolt.Tx, agent string, counter int64) error {
	if agent == "" || counter <= 0 {
		return nil
	}
	return tx.Bucket(bucketFrontier).Put([]byte(agent), u64(uint64(counter)))
}

// checkConflicts refuses, before anything is written, a commit that resolves a
// conflict that is not pending or records a conflict without an id.
func checkConflicts(tx *bolt.Tx, resolves string, conflicts []*fedsyncv1.Conflict) error {
	for _, c := range conflicts {
		if c.GetId() == "" {
			return apierr.New(apierr.InvalidArgument, "A conflict needs an id.")
		}
	}
	if resolves == "" {
		return nil
	}
	raw, err := atrest.Get(tx, bucketConflicts, []byte(resolves))
	if err != nil {
		return err
	}
	if raw == nil {
		return apierr.New(apierr.NotFound, "Conflict %s does not exist.", resolves)
	}
	c := &fedsyncv1.Conflict{}
	if err := proto.Unmarshal(raw, c); err != nil {
		return err
	}
	if c.GetStatus() != "pending" {
		return apierr.New(apierr.VersionConflict, "Conflict %s is already %s.", resolves, c.GetStatus())
	}
	return nil
}

// putConflicts records conflicts, queues the pending ones for review and the
// rest for publication on fedsync.conflicts.
func putConflicts(tx *bolt.Tx, conflicts []*fedsyncv1.Conflict, version int64) error {
	for _, c := range conflicts {
		if c.GetId() == "" {
			return apierr.New(apierr.InvalidArgument, "A conflict needs an id.")
		}
		if tx.Bucket(bucketConflicts).Get([]byte(c.GetId())) != nil {
			continue // recorded before: a re-delivered delta
		}
		if c.LocalVersion == 0 {
			c.LocalVersion = version
		}
		raw, err := proto.Marshal(c)
		if err != nil {
			return err
		}
		if err := atrest.Put(tx, bucketConflicts, []byte(c.GetId()), raw); err != nil {
			return err
		}
		if c.GetStatus() == "pending" {
			if err := tx.Bucket(bucketPending).Put([]byte(c.GetId()), nil); err != nil {
				return err
			}
		}
		seq, _ := tx.Bucket(bucketConflictOutbox).NextSequence()
		if err := atrest.Put(tx, bucketConflictOutbox, u64(seq), raw); err != nil {
			return err
		}
	}
	return nil
}

// resolveConflict marks a pending conflict resolved by resolver at version.
func resolveConflict(tx *bolt.Tx, id, resolver string, version int64) error {
	if id == "" {
		return nil
	}
	raw, err := atrest.Get(tx, bucketConflicts, []byte(id))
	if err != nil {
		return err
	}
	if raw == nil {
		return apierr.New(apierr.NotFound, "Conflict %s does not exist.", id)
	}
	c := &fedsyncv1.Conflict{}
	if err := proto.Unmarshal(raw, c); err != nil {
		return err
	}
	if c.GetStatus() != "pending" {
		return apierr.New(apierr.VersionConflict, "Conflict %s is already %s.", id, c.GetStatus())
	}
	c.Status, c.ResolvedBy = "resolved", resolver
	c.Detail = strings.TrimSpace(c.GetDetail() + fmt.Sprintf(" Resolved by %s at version %d.", resolver, version))
	raw, err = proto.Marshal(c)
	if err != nil {
		return err
	}
	if err := atrest.Put(tx, bucketConflicts, []byte(id), raw); err != nil {
		return err
	}
	seq, _ := tx.Bucket(bucketConflictOutbox).NextSequence()
	if err := atrest.Put(tx, bucketConflictOutbox, u64(seq), raw); err != nil {
		return err
	}
	return tx.Bucket(bucketPending).Delete([]byte(id))
}

func putOutcome(tx *bolt.Tx, o *fedsyncv1.Outcome) error {
	if o.GetMessageId() == "" {
		return nil
	}
	raw, err := proto.Marshal(o)
	if err != nil {
		return err
	}
	return atrest.Put(tx, bucketOutcomes, []byte(o.GetMessageId()), raw)
}

// recordOutcomeTx records what became of a delta that committed nothing, with
// its conflicts, and settles a causal delta. now is the outcome's time when
// the caller gave none.
func (s *store) recordOutcomeTx(tx *bolt.Tx, req *fedsyncv1.RecordOutcomeRequest, now int64) error {
	if err := advanceCausalAtLeast(tx, req.GetCausalAgent(), req.GetCausalCounter()); err != nil {
		return err
	}
	if err := putConflicts(tx, req.GetConflicts(), 0); err != nil {
		return err
	}
	o := req.GetOutcome()
	if o.GetAt() == 0 {
		o.At = now
	}
	if tx.Bucket(bucketOutcomes).Get([]byte(o.GetMessageId())) != nil {
		return nil // the first outcome of a delta stands (a re-delivery changes nothing)
	}
	return putOutcome(tx, o)
}

func advanceCausalAtLeast(tx *bolt.Tx, agent string, counter int64) error {
	if agent == "" || counter <= 0 {
		return nil
	}
	if v := tx.Bucket(bucketFrontier).Get([]byte(agent)); v != nil && int64(binary.BigEndian.Uint64(v)) >= counter {
		return nil
	}
	return advanceCausal(tx, agent, counter)
}

func (s *store) outcome(messageID string) (*fedsyncv1.Outcome, error) {
	o := &fedsyncv1.Outcome{}
	err := s.db.View(func(tx *bolt.Tx) error {
		raw, err := atrest.Get(tx, bucketOutcomes, []byte(messageID))
		if err != nil {
			return err
		}
		if raw == nil {
			return errNotFound
		}
		return proto.Unmarshal(raw, o)
	})
	return o, err
}

func (s *store) frontier() (map[string]int64, error) {
	out := map[string]int64{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFrontier).ForEach(func(k, v []byte) error {
			out[string(k)] = int64(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	return out, err
}

func (s *store) conflict(id string) (*fedsyncv1.Conflict, error) {
	c := &fedsyncv1.Conflict{}
	err := s.db.View(func(tx *bolt.Tx) error {
		raw, err := atrest.Get(tx, bucketConflicts, []byte(id))
		if err != nil {
			return err
		}
		if raw == nil {
			return errNotFound
		}
		return proto.Unmarshal(raw, c)
	})
	return c, err
}

// conflicts lists conflicts with status (any when empty), in descending id order,
// starting before `before`.
func (s *store) conflicts(status, before string, limit int) ([]*fedsyncv1.Conflict, bool, error) {
	var out []*fedsyncv1.Conflict
	more := false
	err := s.db.View(func(tx *bolt.Tx) error {
		src := tx.Bucket(bucketConflicts)
		if status == "pending" {
			src = tx.Bucket(bucketPending)
		}
		c := src.Cursor()
		var k []byte
		if before == "" {
			k, _ = c.Last()
		} else {
			c.Seek([]byte(before))
			k, _ = c.Prev()
		}
		for ; k != nil; k, _ = c.Prev() {
			raw, err := atrest.Get(tx, bucketConflicts, k)
			if err != nil {
				return err
			}
			if raw == nil {
				continue
			}
			cf := &fedsyncv1.Conflict{}
			if err := proto.Unmarshal(raw, cf); err != nil {
				return err
			}
			if status != "" && cf.GetStatus() != status {
				continue
			}
			if len(out) == limit {
				more = true
				return nil
			}
			out = append(out, cf)
		}
		return nil
	})
	return out, more, err
}

// conflictOutbox returns up to limit conflict-outbox entries, oldest first.
func (s *store) conflictOutbox(limit int) ([]uint64, [][]byte, error) {
	var keys []uint64
	var vals [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketConflictOutbox).Cursor()
		for k, v := c.First(); k != nil && len(keys) < limit; k, v = c.Next() {
			v, err := atrest.OpenValue(tx, bucketConflictOutbox, k, v)
			if err != nil {
				return err
			}
			keys = append(keys, binary.BigEndian.Uint64(k))
			vals = append(vals, append([]byte(nil), v...))
		}
		return nil
	})
	return keys, vals, err
}

func dropConflictOutboxTx(tx *bolt.Tx, upTo uint64) error {
	c := tx.Bucket(bucketConflictOutbox).Cursor()
	for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= upTo; k, _ = c.Next() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

var keyControl = []byte("control")

func (s *store) control() (*fedsyncv1.ControlState, error) {
	st := &fedsyncv1.ControlState{}
	err := s.db.View(func(tx *bolt.Tx) error {
		if raw := tx.Bucket(bucketMeta).Get(keyControl); raw != nil {
			return proto.Unmarshal(raw, st)
		}
		return nil
	})
	return st, err
}

func setControlTx(tx *bolt.Tx, st *fedsyncv1.ControlState) error {
	raw, err := proto.Marshal(st)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketMeta).Put(keyControl, raw)
}

// sweepBatchTx examines up to limit entries of bucket b after key `after` and
// deletes those older than cutoff; it returns where to continue (nil at the
// end). The service's sweep runs it as replicated commands.
func sweepBatchTx(tx *bolt.Tx, b, after []byte, cutoff int64, limit int) (int, []byte, error) {
	removed := 0
	c := tx.Bucket(b).Cursor()
	k, v := c.First()
	if after != nil {
		k, v = c.Seek(after)
		if k != nil && string(k) == string(after) {
			k, v = c.Next()
		}
	}
	for seen := 0; k != nil; k, v = c.Next() {
		if seen++; seen > limit {
			return removed, append([]byte(nil), k...), nil
		}
		if string(b) == string(bucketOutcomes) {
			var err error
			if v, err = atrest.OpenValue(tx, b, k, v); err != nil {
				return removed, nil, err
			}
		}
		if at := entryTime(b, v); at > 0 && at < cutoff {
			if err := c.Delete(); err != nil {
				return removed, nil, err
			}
			removed++
		}
	}
	return removed, nil, nil
}

func entryTime(bucket, v []byte) int64 {
	if string(bucket) == string(bucketApplied) {
		if len(v) < 16 {
			return 0 // written before times were kept: kept
		}
		return int64(binary.BigEndian.Uint64(v[8:16]))
	}
	o := &fedsyncv1.Outcome{}
	if proto.Unmarshal(v, o) != nil {
		return 0
	}
	return o.GetAt()
}

func withStateID(meta map[string]string, id string) map[string]string {
	out := make(map[string]string, len(meta)+1)
	for k, v := range meta {
		out[k] = v
	}
	out[metaStateID] = id
	return out
}
