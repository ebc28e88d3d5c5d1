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

// Snapshots are sealed as a header (magic, key id) and chunks of
// snapChunk plaintext bytes, the last one shorter (possibly empty), each
// [nonce][ciphertext][tag] bound to its position and to whether it is the
// last: a truncated or reordered snapshot does not open.
const snapChunk = 64 << 10

var snapMagic = []byte("FSS1")

type sealedSnaps struct {
	raft.SnapshotStore
	vault *atrest.Vault
	// trans encodes the peers of a snapshot's configuration when reseal
	// writes it again.
	trans raft.Transport
}

func chunkAAD(i uint64, last bool) []byte {
	b := binary.BigEndian.AppendUint64([]byte("raft-snapshot"), i)
	if last {
		return append(b, 1)
	}
	return append(b, 0)
}

func (s *sealedSnaps) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil || !s.vault.On() {
		return sink, err
	}
	ring := s.vault.Ring()
	header := append(append([]byte(nil), snapMagic...), byte(len(ring.Active())))
	header = append(header, ring.Active()...)
	if _, err := sink.Write(header); err != nil {
		sink.Cancel()
		return nil, err
	}
	return &sealedSink{SnapshotSink: sink, ring: ring}, nil
}

type sealedSink struct {
	raft.SnapshotSink
	ring *atrest.Keyring
	buf  []byte
	n    uint64
}

func (w *sealedSink) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		take := min(snapChunk-len(w.buf), len(p))
		w.buf = append(w.buf, p[:take]...)
		p, written = p[take:], written+take
		if len(w.buf) == snapChunk {
			if err := w.flush(false); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (w *sealedSink) flush(last bool) error {
	sealed := w.ring.Seal(w.buf, chunkAAD(w.n, last))
	// The chunk without the value header (the key is in the stream's).
	_, body, _ := cutHeader(sealed)
	w.n++
	w.buf = w.buf[:0]
	_, err := w.SnapshotSink.Write(body)
	return err
}

func (w *sealedSink) Close() error {
	if err := w.flush(true); err != nil {
		w.SnapshotSink.Cancel()
		return err
	}
	return w.SnapshotSink.Close()
}

// cutHeader splits a sealed value into its header and [nonce][ciphertext].
func cutHeader(sealed []byte) (header, body []byte, ok bool) {
	if len(sealed) < 5 {
		return nil, nil, false
	}
	n := 5 + int(sealed[4])
	return sealed[:n], sealed[n:], len(sealed) >= n
}

const chunkOverhead = 12 + 16 // GCM nonce and tag

func (s *sealedSnaps) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	head := make([]byte, len(snapMagic)+1)
	if _, err := io.ReadFull(rc, head); err != nil || string(head[:len(snapMagic)]) != string(snapMagic) {
		// Not sealed (written before encryption was on): read it as it is.
		rc.Close()
		return s.SnapshotStore.Open(id)
	}
	keyID := make([]byte, head[len(snapMagic)])
	if _, err := io.ReadFull(rc, keyID); err != nil {
		rc.Close()
		return nil, nil, err
	}
	ring := s.vault.Ring()
	if ring == nil {
		rc.Close()
		return nil, nil, fmt.Errorf("snapshot %s is sealed with at-rest key %q, and no keyring is configured", id, keyID)
	}
	body := meta.Size - int64(len(head)+len(keyID))
	full := body / (snapChunk + chunkOverhead)
	rest := body % (snapChunk + chunkOverhead)
	if rest < chunkOverhead {
		rc.Close()
		return nil, nil, fmt.Errorf("snapshot %s is truncated", id)
	}
	plain := *meta
	plain.Size = full*snapChunk + rest - chunkOverhead
	// The chunks were sealed as values: put back the value header the
	// stream's header stands for.
	prefix := append([]byte("FSE1"), byte(len(keyID)))
	prefix = append(prefix, keyID...)
	return &plain, &sealedReader{rc: rc, ring: ring, prefix: prefix, chunks: uint64(full) + 1}, nil
}

// sealedReader opens a sealed snapshot chunk by chunk.
type sealedReader struct {
	rc     io.ReadCloser
	ring   *atrest.Keyring
	prefix []byte // the value header the chunks were sealed under
	chunks uint64
	n      uint64
	buf    []byte
}

func (r *sealedReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.n == r.chunks {
			return 0, io.EOF
		}
		last := r.n == r.chunks-1
		size := snapChunk + chunkOverhead
		chunk := make([]byte, size)
		got, err := io.ReadFull(r.rc, chunk)
		if last {
			if err != io.ErrUnexpectedEOF && err != io.EOF && err != nil {
				return 0, err
			}
			chunk = chunk[:got]
		} else if err != nil {
			return 0, fmt.Errorf("read sealed snapshot chunk %d: %w", r.n, err)
		}
		plain, err := r.ring.Open(append(append([]byte(nil), r.prefix...), chunk...), chunkAAD(r.n, last))
		if err != nil {
			return 0, fmt.Errorf("snapshot chunk %d: %w", r.n, err)
		}
		r.n++
		r.buf = plain
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *sealedReader) Close() error { return r.rc.Close() }

// snapshotKey returns the id of the key snapshot id is sealed with ("" when
// it is not sealed).
func (s *sealedSnaps) snapshotKey(id string) (string, error) {
	_, rc, err := s.SnapshotStore.Open(id)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	head := make([]byte, len(snapMagic)+1)
	if _, err := io.ReadFull(rc, head); err != nil || string(head[:len(snapMagic)]) != string(snapMagic) {
		return "", nil
	}
	keyID := make([]byte, head[len(snapMagic)])
	if _, err := io.ReadFull(rc, keyID); err != nil {
		return "", err
	}
	return string(keyID), nil
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
