package raftgroup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/fedsync/fedsync/libs/atrest"
)

// The Raft log and snapshots are sealed at rest with the service's at-rest
// keyring (libs/atrest): entries' data in the log store, snapshots in
// chunks. Replicas exchange them in the clear over mutual TLS, each sealing
// with its own keyring, so every replica rotates its keys on its own.

var aadLog = []byte("raft-log")

// sealedLogs seals each entry's data (and extensions) in the log store.
type sealedLogs struct {
	raft.LogStore
	vault *atrest.Vault
	// mu keeps Reseal's rewrite of an entry apart from Raft's writes and
	// deletions of the same range.
	mu sync.RWMutex
}

func entryAAD(index uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), aadLog...), index)
}

func (s *sealedLogs) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

func (s *sealedLogs) StoreLogs(logs []*raft.Log) error {
	if !s.vault.On() {
		return s.LogStore.StoreLogs(logs)
	}
	out := make([]*raft.Log, len(logs))
	for i, l := range logs {
		c := *l
		if len(c.Data) > 0 {
			c.Data = s.vault.Seal(c.Data, entryAAD(c.Index))
		}
		if len(c.Extensions) > 0 {
			c.Extensions = s.vault.Seal(c.Extensions, entryAAD(c.Index))
		}
		out[i] = &c
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.LogStore.StoreLogs(out)
}

func (s *sealedLogs) GetLog(index uint64, l *raft.Log) error {
	if err := s.LogStore.GetLog(index, l); err != nil {
		return err
	}
	var err error
	if l.Data, err = s.vault.Open(l.Data, entryAAD(index)); err != nil {
		return fmt.Errorf("raft log entry %d: %w", index, err)
	}
	if l.Extensions, err = s.vault.Open(l.Extensions, entryAAD(index)); err != nil {
		return fmt.Errorf("raft log entry %d: %w", index, err)
	}
	return nil
}

func (s *sealedLogs) DeleteRange(min, max uint64) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.LogStore.DeleteRange(min, max)
}

// reseal re-seals with the active key every entry sealed with another (or
// not sealed), and counts the entries each key seals after the pass.
func (s *sealedLogs) reseal() (map[string]int, error) {
	refs := map[string]int{}
	ring := s.vault.Ring()
	if ring == nil {
		return refs, nil
	}
	first, err := s.LogStore.FirstIndex()
	if err != nil {
		return refs, err
	}
	last, err := s.LogStore.LastIndex()
	if err != nil {
		return refs, err
	}
	for i := first; i <= last && i > 0; i++ {
		err := func() error {
			s.mu.Lock()
			defer s.mu.Unlock()
			var raw raft.Log
			if err := s.LogStore.GetLog(i, &raw); err != nil {
				if errors.Is(err, raft.ErrLogNotFound) {
					return nil // compacted meanwhile
				}
				return err
			}
			if (len(raw.Data) == 0 || !ring.Stale(raw.Data)) && (len(raw.Extensions) == 0 || !ring.Stale(raw.Extensions)) {
				if len(raw.Data) > 0 {
					refs[atrest.KeyOf(raw.Data)]++
				}
				return nil
			}
			var plain raft.Log
			if err := s.GetLog(i, &plain); err != nil {
				return err
			}
			refs[ring.Active()]++
			// Written back under the write lock: StoreLogs would wait for it.
			c := plain
			if len(c.Data) > 0 {
				c.Data = ring.Seal(c.Data, entryAAD(i))
			}
			if len(c.Extensions) > 0 {
				c.Extensions = ring.Seal(c.Extensions, entryAAD(i))
			}
			return s.LogStore.StoreLogs([]*raft.Log{&c})
		}()
		if err != nil {
			return refs, err
		}
	}
	return refs, nil
}

// Snapshots are sealed streams (atrest.SealWriter): a header naming the
// key, then chunks each bound to their position and to whether they are the
// last, so a truncated or reordered snapshot does not open.
const snapPurpose = "raft-snapshot"

type sealedSnaps struct {
	raft.SnapshotStore
	vault *atrest.Vault
	// trans encodes the peers of a snapshot's configuration when reseal
	// writes it again.
	trans raft.Transport
}

func (s *sealedSnaps) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil || !s.vault.On() {
		return sink, err
	}
	return &sealedSink{SnapshotSink: sink, w: atrest.NewSealWriter(sink, s.vault.Ring(), snapPurpose)}, nil
}

type sealedSink struct {
	raft.SnapshotSink
	w      io.WriteCloser
	closed bool
}

func (w *sealedSink) Write(p []byte) (int, error) { return w.w.Write(p) }

// Close seals the last chunk and closes the snapshot, once (raft's
// RecoverCluster closes a sink the snapshot's Persist already closed).
func (w *sealedSink) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if err := w.w.Close(); err != nil {
		w.SnapshotSink.Cancel()
		return err
	}
	return w.SnapshotSink.Close()
}

func (s *sealedSnaps) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	keyID, err := atrest.ReadStreamHeader(rc)
	if errors.Is(err, atrest.ErrNotSealedStream) {
		// Not sealed (written before encryption was on): read it as it is.
		rc.Close()
		return s.SnapshotStore.Open(id)
	}
	if err != nil {
		rc.Close()
		return nil, nil, err
	}
	body := meta.Size - int64(len(atrest.StreamHeader(keyID)))
	full := body / (atrest.StreamChunk + atrest.ChunkOverhead)
	rest := body % (atrest.StreamChunk + atrest.ChunkOverhead)
	if rest < atrest.ChunkOverhead {
		rc.Close()
		return nil, nil, fmt.Errorf("snapshot %s is truncated", id)
	}
	or, err := atrest.NewOpenReader(rc, s.vault.Ring(), keyID, snapPurpose)
	if err != nil {
		rc.Close()
		return nil, nil, fmt.Errorf("snapshot %s: %w", id, err)
	}
	plain := *meta
	plain.Size = full*atrest.StreamChunk + rest - atrest.ChunkOverhead
	return &plain, struct {
		io.Reader
		io.Closer
	}{or, rc}, nil
}

// snapshotKey returns the id of the key snapshot id is sealed with ("" when
// it is not sealed).
func (s *sealedSnaps) snapshotKey(id string) (string, error) {
	_, rc, err := s.SnapshotStore.Open(id)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	keyID, err := atrest.ReadStreamHeader(rc)
	if errors.Is(err, atrest.ErrNotSealedStream) {
		return "", nil
	}
	return keyID, err
}

// reseal rewrites the newest snapshot with the active key when any kept
// snapshot is sealed with another (or not sealed): as many times as
// snapshots are kept, so the store's reaping drops every older copy. It
// counts the snapshots each key seals after the pass.
func (s *sealedSnaps) reseal(retain int) (map[string]int, error) {
	refs := map[string]int{}
	ring := s.vault.Ring()
	if ring == nil {
		return refs, nil
	}
	list, err := s.SnapshotStore.List()
	if err != nil || len(list) == 0 {
		return refs, err
	}
	stale := false
	for _, m := range list {
		k, err := s.snapshotKey(m.ID)
		if err != nil {
			return refs, err
		}
		refs[k]++
		stale = stale || k != ring.Active()
	}
	if !stale {
		return refs, nil
	}
	for range retain {
		list, err := s.SnapshotStore.List()
		if err != nil {
			return refs, err
		}
		meta, rc, err := s.Open(list[0].ID)
		if err != nil {
			return refs, err
		}
		sink, err := s.Create(meta.Version, meta.Index, meta.Term, meta.Configuration, meta.ConfigurationIndex, s.trans)
		if err != nil {
			rc.Close()
			return refs, err
		}
		_, err = io.Copy(sink, rc)
		rc.Close()
		if err != nil {
			sink.Cancel()
			return refs, err
		}
		if err := sink.Close(); err != nil {
			return refs, err
		}
	}
	return map[string]int{ring.Active(): min(len(list), retain)}, nil
}
