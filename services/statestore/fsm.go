package statestore

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Every change to the store is a command. The proposer (the Raft leader, or
// the local proposer of a store that is not replicated) fixes everything a
// command depends on (its time included) before it goes into the log, so each
// replica applying the same commands in the same order holds the same bytes.

type cmdKind uint64

const (
	cmdBatch         cmdKind = 1 // ApplyBatch: commits and outcomes
	cmdOutcome       cmdKind = 2 // RecordOutcome
	cmdPublished     cmdKind = 3 // the outbox's published position, and log trimming
	cmdDropConflicts cmdKind = 4 // conflicts now on fedsync.conflicts
	cmdControl       cmdKind = 5 // the operating state (pause)
	cmdSweep         cmdKind = 6 // forget old message ids and outcomes, a slice at a time
)

// command is one replicated change.
type command struct {
	kind cmdKind
	now  int64
	// body is the request: ApplyBatchRequest, RecordOutcomeRequest or
	// ControlState.
	body  proto.Message
	trace map[string]string
	// seq and retention: cmdPublished (seq also: cmdDropConflicts).
	seq, retention uint64
	// cmdSweep: the bucket, where to continue, the cutoff and the slice size.
	bucket, after []byte
	cutoff        int64
	limit         uint64
}

// batchResult is what a cmdBatch did to each item.
type batchResult struct{ items []*batchItem }

// sweepResult is what a cmdSweep removed, and where the next slice starts.
type sweepResult struct {
	removed int
	next    []byte
}

func (c *command) encode() ([]byte, error) {
	b := protowire.AppendTag(nil, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(c.kind))
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(c.now))
	if c.body != nil {
		raw, err := proto.Marshal(c.body)
		if err != nil {
			return nil, err
		}
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, raw)
	}
	for k, v := range c.trace {
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendString(b, k+"\x00"+v)
	}
	for _, f := range []struct {
		num protowire.Number
		v   uint64
	}{{5, c.seq}, {6, c.retention}, {9, uint64(c.cutoff)}, {10, c.limit}} {
		if f.v != 0 {
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, f.v)
		}
	}
	if c.bucket != nil {
		b = protowire.AppendTag(b, 7, protowire.BytesType)
		b = protowire.AppendBytes(b, c.bucket)
	}
	if c.after != nil {
		b = protowire.AppendTag(b, 8, protowire.BytesType)
		b = protowire.AppendBytes(b, c.after)
	}
	return b, nil
}

func decodeCommand(b []byte) (*command, error) {
	c := &command{}
	var body []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			b = b[n:]
			switch num {
			case 1:
				c.kind = cmdKind(v)
			case 2:
				c.now = int64(v)
			case 5:
				c.seq = v
			case 6:
				c.retention = v
			case 9:
				c.cutoff = int64(v)
			case 10:
				c.limit = v
			}
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			b = b[n:]
			switch num {
			case 3:
				body = v
			case 4:
				k, val, _ := strings.Cut(string(v), "\x00")
				if c.trace == nil {
					c.trace = map[string]string{}
				}
				c.trace[k] = val
			case 7:
				c.bucket = append([]byte{}, v...)
			case 8:
				c.after = append([]byte{}, v...)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	switch c.kind {
	case cmdBatch:
		c.body = &fedsyncv1.ApplyBatchRequest{}
	case cmdOutcome:
		c.body = &fedsyncv1.RecordOutcomeRequest{}
	case cmdControl:
		c.body = &fedsyncv1.ControlState{}
	case cmdPublished, cmdDropConflicts, cmdSweep:
	default:
		return nil, fmt.Errorf("unknown command kind %d", c.kind)
	}
	if c.body != nil {
		if err := proto.Unmarshal(body, c.body); err != nil {
			return nil, fmt.Errorf("decode command %d: %w", c.kind, err)
		}
	}
	return c, nil
}

// batchItems decodes a batch command's items: each item's patch once, and its
// own trace context (set by the proposer) when it has one.
func batchItems(req *fedsyncv1.ApplyBatchRequest) []*batchItem {
	items := make([]*batchItem, len(req.GetItems()))
	for i, r := range req.GetItems() {
		it := &batchItem{req: r}
		if it.err = checkApply(r); it.err == nil {
			it.patch, it.err = decodePatch(r)
		}
		if len(r.GetTrace()) > 0 {
			it.trace = r.GetTrace()
		}
		items[i] = it
	}
	return items
}

// fsm applies commands to the store: Raft's state machine, and the local
// proposer's.
type fsm struct {
	store *store
	// applied is called after a transaction with commands committed (wakes
	// the outbox publisher).
	applied func()
	// fatal is told when the store cannot apply a command (its disk): the
	// replica must stop rather than skip it; a restart replays the log.
	fatal func(error)

	mu     sync.Mutex
	broken error
	// lastIndex caches the store's last applied Raft index for ApplyBatch (Raft
	// calls it, Restore and Snapshot from one goroutine); known says whether
	// it has been read from the store.
	lastIndex uint64
	known     bool
}

var keyRaftApplied = []byte("raft_applied") // the index of the last Raft entry applied

// appliedIndex returns the index of the last Raft entry the store holds.
func (f *fsm) appliedIndex() (uint64, error) {
	var idx uint64
	err := f.store.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyRaftApplied); len(v) == 8 {
			idx = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return idx, err
}

// Apply applies one entry (raft.FSM).
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies the commands among logs in one transaction and one fsync
// (raft.BatchingFSM). Entries the store already holds (a restart replays the
// log from the last snapshot; the store itself is durable) are skipped.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	var cmds []*command
	var at []int
	var last uint64
	if !f.known {
		if idx, err := f.appliedIndex(); err == nil {
			f.lastIndex, f.known = idx, true
		}
	}
	done := f.lastIndex
	for i, l := range logs {
		if l.Type != raft.LogCommand || l.Index <= done {
			continue
		}
		last = l.Index
		c, err := decodeCommand(l.Data)
		if err != nil {
			// A command this build cannot read: a newer build wrote it. Stop
			// instead of diverging.
			f.fail(fmt.Errorf("raft entry %d: %w", l.Index, err))
			out[i] = err
			continue
		}
		cmds = append(cmds, c)
		at = append(at, i)
	}
	if len(cmds) == 0 {
		return out
	}
	res, err := f.applyCommands(last, cmds)
	if err == nil {
		f.lastIndex = last
	}
	for j, i := range at {
		if err != nil {
			out[i] = err
		} else {
			out[i] = res[j]
		}
	}
	return out
}

func (f *fsm) fail(err error) {
	f.mu.Lock()
	first := f.broken == nil
	if first {
		f.broken = err
	}
	f.mu.Unlock()
	if first && f.fatal != nil {
		f.fatal(err)
	}
}

// applyCommands applies cmds in one transaction and records index (when not
// 0) as applied in the same transaction. A result is a *batchResult, a
// *sweepResult or nil.
func (f *fsm) applyCommands(index uint64, cmds []*command) ([]any, error) {
	f.mu.Lock()
	broken := f.broken
	f.mu.Unlock()
	if broken != nil {
		return nil, fmt.Errorf("statestore stopped applying changes: %w", broken)
	}
	res := make([]any, len(cmds))
	wake := false
	err := f.store.db.Update(func(tx *bolt.Tx) error {
		for i, c := range cmds {
			r, w, err := f.applyTx(tx, c)
			if err != nil {
				return err
			}
			res[i], wake = r, wake || w
		}
		if index > 0 {
			return tx.Bucket(bucketMeta).Put(keyRaftApplied, u64(index))
		}
		return nil
	})
	if err != nil {
		f.fail(err)
		return nil, err
	}
	if wake && f.applied != nil {
		f.applied()
	}
	return res, nil
}

// applyTx applies one command; wake reports whether it gave the outbox
// something to publish.
func (f *fsm) applyTx(tx *bolt.Tx, c *command) (res any, wake bool, err error) {
	switch c.kind {
	case cmdBatch:
		req := c.body.(*fedsyncv1.ApplyBatchRequest)
		items := batchItems(req)
		if err := f.store.applyBatchTx(tx, items, req.GetOutcomes(), c.trace, c.now); err != nil {
			return nil, false, err
		}
		for _, it := range items {
			wake = wake || (it.err == nil && !it.out.duplicate)
		}
		for _, o := range req.GetOutcomes() {
			wake = wake || len(o.GetConflicts()) > 0
		}
		return &batchResult{items: items}, wake, nil
	case cmdOutcome:
		req := c.body.(*fedsyncv1.RecordOutcomeRequest)
		return nil, len(req.GetConflicts()) > 0, f.store.recordOutcomeTx(tx, req, c.now)
	case cmdPublished:
		return nil, false, markPublishedTx(tx, c.seq, c.retention)
	case cmdDropConflicts:
		return nil, false, dropConflictOutboxTx(tx, c.seq)
	case cmdControl:
		return nil, false, setControlTx(tx, c.body.(*fedsyncv1.ControlState))
	case cmdSweep:
		n, next, err := sweepBatchTx(tx, c.bucket, c.after, c.cutoff, int(c.limit))
		return &sweepResult{removed: n, next: next}, false, err
	}
	return nil, false, fmt.Errorf("unknown command kind %d", c.kind)
}

// Snapshot returns a point-in-time copy of the store (raft.FSM): the bbolt
// file as one read transaction sees it.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	tx, err := f.store.db.Begin(false)
	if err != nil {
		return nil, err
	}
	return &boltSnapshot{tx: tx}, nil
}

type boltSnapshot struct{ tx *bolt.Tx }

func (s *boltSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.tx.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *boltSnapshot) Release() { s.tx.Rollback() }

// Restore replaces the store's contents with a snapshot (raft.FSM): a replica
// too far behind the leader's log catches up this way. The snapshot is a
// bbolt file; its buckets are copied into the open store in one transaction,
// so readers see either the old state or the new one.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.known = false // the snapshot brings its own applied index
	tmp, err := os.CreateTemp(filepath.Dir(f.store.db.Path()), "restore-*.db")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, rc); err != nil {
		tmp.Close()
		return fmt.Errorf("receive snapshot: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	src, err := bolt.Open(tmp.Name(), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("open snapshot: %w", err)
	}
	defer src.Close()
	return src.View(func(from *bolt.Tx) error {
		return f.store.db.Update(func(to *bolt.Tx) error { return copyBuckets(from, to) })
	})
}

// copyBuckets makes to's buckets those of from: keys, values and sequences.
func copyBuckets(from, to *bolt.Tx) error {
	for _, name := range allBuckets {
		if to.Bucket(name) != nil {
			if err := to.DeleteBucket(name); err != nil {
				return err
			}
		}
		dst, err := to.CreateBucket(name)
		if err != nil {
			return err
		}
		src := from.Bucket(name)
		if src == nil {
			continue
		}
		dst.FillPercent = 1 // keys arrive in order
		if err := src.ForEach(func(k, v []byte) error { return dst.Put(k, v) }); err != nil {
			return err
		}
		if err := dst.SetSequence(src.Sequence()); err != nil {
			return err
		}
	}
	return nil
}

// proposer puts commands through: the Raft group, or directly.
type proposer interface {
	propose(ctx context.Context, c *command) (any, error)
}

// localProposer applies each command at once, in its own transaction: a store
// that is not replicated (unit tests of the service's logic).
type localProposer struct{ f *fsm }

func (p localProposer) propose(_ context.Context, c *command) (any, error) {
	// The same path as a replica's: through the encoding.
	raw, err := c.encode()
	if err != nil {
		return nil, err
	}
	if c, err = decodeCommand(raw); err != nil {
		return nil, err
	}
	res, err := p.f.applyCommands(0, []*command{c})
	if err != nil {
		return nil, err
	}
	return res[0], nil
}
