package statestore

import (
	"context"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/raftgroup"
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
	// seq and retention: cmdPublished (seq also: cmdDropConflicts), with
	// the log's age (ns, before now) and size (bytes) bounds.
	seq, retention uint64
	retentionAge   int64
	retentionBytes uint64
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
	}{{5, c.seq}, {6, c.retention}, {9, uint64(c.cutoff)}, {10, c.limit}, {11, uint64(c.retentionAge)}, {12, c.retentionBytes}} {
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
			case 11:
				c.retentionAge = int64(v)
			case 12:
				c.retentionBytes = v
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

// fsm applies commands to the store: Raft's state machine (a
// raftgroup.BoltFSM whose commands are those above), and the local
// proposer's.
type fsm struct {
	*raftgroup.BoltFSM
	store *store
}

func newFSM(st *store, applied func()) *fsm {
	f := &fsm{store: st}
	f.BoltFSM = &raftgroup.BoltFSM{DB: st.db, Buckets: allBuckets, Meta: bucketMeta, Notify: applied,
		Command: func(tx *bolt.Tx, raw []byte) (any, bool, error) {
			c, err := decodeCommand(raw)
			if err != nil {
				// A command this build cannot read: a newer build wrote it.
				// Stop instead of diverging.
				return nil, false, err
			}
			return f.applyTx(tx, c)
		}}
	return f
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
		return nil, false, markPublishedTx(tx, c.seq, logRetention{count: c.retention, before: c.now - c.retentionAge, bytes: c.retentionBytes, byAge: c.retentionAge > 0})
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
	return p.f.ApplyLocal(raw)
}
