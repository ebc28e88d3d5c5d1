package raftgroup

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// BoltFSM is a Raft state machine over a bbolt database. Each round of
// entries Raft hands it (BatchApplyCh) is applied in one transaction and one
// fsync, together with the index of its last entry, so a restart skips what
// the store already holds. A snapshot is the bbolt file as one read
// transaction sees it; a restore copies its buckets in one transaction, so
// readers see either the old state or the new one.
type BoltFSM struct {
	DB *bolt.DB
	// Buckets hold the replicated state: a snapshot carries them and a
	// restore replaces them. Meta, one of them, keeps the applied index.
	Buckets [][]byte
	Meta    []byte
	// Command applies one encoded command in tx and returns its result (a
	// business refusal is a result: an error value the proposer gets back).
	// notify says the change should wake Notify. An error aborts the round:
	// the store cannot apply it (its disk, or a command this build cannot
	// read), and the replica stops rather than diverge (Fatal); a restart
	// replays the log.
	Command func(tx *bolt.Tx, cmd []byte) (result any, notify bool, err error)
	// Notify, when set, is called after a round in which a command asked for
	// it committed.
	Notify func()
	// Fatal, when set, is told once that the store cannot apply a command.
	Fatal func(error)

	mu     sync.Mutex
	broken error
	// lastIndex caches the store's last applied index for ApplyBatch (Raft
	// calls it, Restore and Snapshot from one goroutine); known says whether
	// it has been read from the store.
	lastIndex uint64
	known     bool
}

var keyApplied = []byte("raft_applied") // the index of the last Raft entry applied

// AppliedIndex returns the index of the last Raft entry the store holds.
func (f *BoltFSM) AppliedIndex() (uint64, error) {
	var idx uint64
	err := f.DB.View(func(tx *bolt.Tx) error {
		idx = f.AppliedIn(tx)
		return nil
	})
	return idx, err
}

// Apply applies one entry (raft.FSM).
func (f *BoltFSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies the commands among logs in one transaction and one
// fsync (raft.BatchingFSM). Entries the store already holds (a restart
// replays the log from the last snapshot) are skipped.
func (f *BoltFSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	if !f.known {
		if idx, err := f.AppliedIndex(); err == nil {
			f.lastIndex, f.known = idx, true
		}
	}
	var cmds [][]byte
	var at []int
	var last uint64
	for i, l := range logs {
		if l.Type != raft.LogCommand || l.Index <= f.lastIndex {
			continue
		}
		last = l.Index
		cmds = append(cmds, l.Data)
		at = append(at, i)
	}
	if len(cmds) == 0 {
		return out
	}
	res, err := f.apply(last, cmds)
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

// ApplyLocal applies one command at once, in its own transaction: a store
// that is not replicated (unit tests of a service's logic). A result that is
// an error is returned as the error.
func (f *BoltFSM) ApplyLocal(cmd []byte) (any, error) {
	res, err := f.apply(0, [][]byte{cmd})
	if err != nil {
		return nil, err
	}
	if err, ok := res[0].(error); ok {
		return nil, err
	}
	return res[0], nil
}

// apply applies cmds in one transaction and records index (when not 0) as
// applied in the same transaction.
func (f *BoltFSM) apply(index uint64, cmds [][]byte) ([]any, error) {
	f.mu.Lock()
	broken := f.broken
	f.mu.Unlock()
	if broken != nil {
		return nil, fmt.Errorf("stopped applying changes: %w", broken)
	}
	res := make([]any, len(cmds))
	notify := false
	err := f.DB.Update(func(tx *bolt.Tx) error {
		for i, c := range cmds {
			r, n, err := f.Command(tx, c)
			if err != nil {
				return err
			}
			res[i], notify = r, notify || n
		}
		if index > 0 {
			return tx.Bucket(f.Meta).Put(keyApplied, binary.BigEndian.AppendUint64(nil, index))
		}
		return nil
	})
	if err != nil {
		f.fail(err)
		return nil, err
	}
	if notify && f.Notify != nil {
		f.Notify()
	}
	return res, nil
}

func (f *BoltFSM) fail(err error) {
	f.mu.Lock()
	first := f.broken == nil
	if first {
		f.broken = err
	}
	f.mu.Unlock()
	if first && f.Fatal != nil {
		f.Fatal(err)
	}
}

// Snapshot returns a point-in-time copy of the store (raft.FSM).
func (f *BoltFSM) Snapshot() (raft.FSMSnapshot, error) {
	tx, err := f.DB.Begin(false)
	if err != nil {
		return nil, err
	}
	return &boltSnapshot{tx: tx}, nil
}

type boltSnapshot struct {
	tx   *bolt.Tx
	once sync.Once
}

// Persist writes the snapshot and ends its read transaction: a caller that
// never calls Release (raft.RecoverCluster) does not keep the store from
// closing.
func (s *boltSnapshot) Persist(sink raft.SnapshotSink) error {
	defer s.Release()
	if _, err := s.tx.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *boltSnapshot) Release() { s.once.Do(func() { s.tx.Rollback() }) }

// Restore replaces the store's contents with a snapshot (raft.FSM): a
// replica too far behind the leader's log, or one whose store was lost,
// catches up this way.
func (f *BoltFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.known = false // the snapshot brings its own applied index
	tmp, err := os.CreateTemp(filepath.Dir(f.DB.Path()), "restore-*.db")
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
		return f.DB.Update(func(to *bolt.Tx) error { return CopyBuckets(from, to, f.Buckets) })
	})
}

// CopyBuckets makes to's named buckets those of from: keys, values and
// sequences.
func CopyBuckets(from, to *bolt.Tx, names [][]byte) error {
	for _, name := range names {
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
