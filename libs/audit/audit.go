// Package audit keeps the tamper-evident audit log of seed 6.3: every record
// (UTC time, actor, action, data affected, result, trace id) carries the SHA-256
// of the record before it, so editing, removing or reordering any record breaks
// the chain, and Verify names the first bad one. A head file holds the last
// sequence number and hash, so cutting records off the end is detected too.
//
// Records go through a buffer to a writer goroutine that appends and fsyncs in
// batches. When the buffer is full (the disk is stuck), Record waits for room:
// no record is dropped while its caller waits. Only when the caller's context
// ends first is the record dropped, and never silently: the drop is logged with
// the record and counted. A batch is chained only once it is on disk: a failed
// write is cut off the file and retried, so the chain never breaks, and the head
// file is replaced atomically and fsynced.
package audit

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"go.opentelemetry.io/otel/trace"
)

// Record is one audit record.
type Record struct {
	Seq      uint64 `json:"seq"`
	Time     string `json:"time"`
	Service  string `json:"service"`
	Instance string `json:"instance"`
	Actor    string `json:"actor"`
	Action   string `json:"action"`
	Data     string `json:"data"`
	Result   string `json:"result"`
	TraceID  string `json:"trace_id,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Prev     string `json:"prev"`
	Hash     string `json:"hash"`
}

// digest is the hash of a record: SHA-256 of its JSON with Hash empty.
func digest(r Record) string {
	r.Hash = ""
	b, _ := json.Marshal(r)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

type head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// Log appends records to a file.
type Log struct {
	path, headPath    string
	service, instance string
	logger            log.Logger

	ch      chan Record
	done    chan struct{}
	dropped atomic.Int64
	written atomic.Int64

	mu   sync.Mutex // guards seq, prev, size and retry (writer goroutine only, plus Open)
	seq  uint64
	prev string
	f    *os.File
	size int64 // bytes of whole records in the file
	// retry holds records whose write failed; they go first next time.
	retry []Record
}

// Open opens (creating) the audit log at path and reads where its chain ends.
func Open(path, service, instance string, logger log.Logger) (*Log, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	l := &Log{path: path, headPath: path + ".head", service: service, instance: instance, logger: logger,
		ch: make(chan Record, 10000), done: make(chan struct{})}
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r Record
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				l.seq, l.prev = r.Seq, r.Hash
			}
		}
		f.Close()
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	l.f, l.size = f, st.Size()
	return l, nil
}

// Record queues a record. Time, sequence, chain and trace id (from ctx) are
// filled in.
func (l *Log) Record(ctx context.Context, r Record) {
	if l == nil {
		return
	}
	r.Time = time.Now().UTC().Format(time.RFC3339Nano)
	r.Service, r.Instance = l.service, l.instance
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		r.TraceID = sc.TraceID().String()
	}
	select {
	case l.ch <- r:
		return
	default:
	}
	// Full: the disk is behind. Wait for room as long as the caller does.
	select {
	case l.ch <- r:
	case <-ctx.Done():
		l.dropped.Add(1)
		level.Error(l.logger).Log("msg", "audit record dropped: the audit log did not keep up before the request ended", "actor", r.Actor, "action", r.Action, "data", r.Data, "result", r.Result, "dropped_total", l.dropped.Load())
	}
}

// Dropped counts records dropped because the log did not keep up.
func (l *Log) Dropped() int64 { return l.dropped.Load() }

// Written counts records appended.
func (l *Log) Written() int64 { return l.written.Load() }

// Run appends queued records until ctx ends, then drains the queue and closes.
func (l *Log) Run(ctx context.Context) error {
	defer close(l.done)
	defer l.f.Close()
	for {
		select {
		case r := <-l.ch:
			if err := l.writeBatch(r); err != nil {
				// Kept for the next batch; wait a moment before trying the
				// disk again.
				level.Error(l.logger).Log("msg", "write audit log; the records are kept and retried", "err", err, "pending", len(l.retry))
				select {
				case <-time.After(100 * time.Millisecond):
				case <-ctx.Done():
				}
			}
		case <-ctx.Done():
			for {
				select {
				case r := <-l.ch:
					if err := l.writeBatch(r); err != nil {
						return err
					}
				default:
					return nil
				}
			}
		}
	}
}

// writeBatch appends the records kept from a failed write, first and whatever
// else is queued, then fsyncs and updates the head file. The chain advances
// only when the batch is on disk; on failure the partial write is cut off and
// the batch kept for the next call.
func (l *Log) writeBatch(first Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	batch := append(l.retry, first)
	l.retry = nil
	seq, prev := l.seq, l.prev
	var buf []byte
	add := func(r Record) {
		seq++
		r.Seq, r.Prev = seq, prev
		r.Hash = digest(r)
		prev = r.Hash
		b, _ := json.Marshal(r)
		buf = append(append(buf, b...), '\n')
	}
	for _, r := range batch {
		add(r)
	}
	n := len(batch)
	// Linger up to 20 ms for company: one fsync then covers a burst of
	// records instead of one each.
	linger := time.NewTimer(20 * time.Millisecond)
	defer linger.Stop()
collect:
	for n < 1000 {
		select {
		case r := <-l.ch:
			batch = append(batch, r)
			add(r)
			n++
		case <-linger.C:
			break collect
		}
	}
	if err := l.appendSynced(buf); err != nil {
		l.retry = batch
		return err
	}
	l.seq, l.prev = seq, prev
	l.written.Add(int64(n))
	return writeFileSynced(l.headPath, mustJSON(head{Seq: seq, Hash: prev}))
}

// appendSynced appends buf and fsyncs; on failure it cuts the file back to
// its last whole record, so a retry starts clean.
func (l *Log) appendSynced(buf []byte) error {
	_, err := l.f.Write(buf)
	if err == nil {
		err = l.f.Sync()
	}
	if err != nil {
		if terr := l.f.Truncate(l.size); terr != nil {
			return fmt.Errorf("%w (and cutting the partial write failed: %v)", err, terr)
		}
		return err
	}
	l.size += int64(len(buf))
	return nil
}

// writeFileSynced replaces path atomically: a synced temporary file renamed
// over it, then the directory synced so the rename survives a crash.
func writeFileSynced(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// BadRecord names the first record that breaks the chain.
type BadRecord struct {
	Line   int
	Seq    uint64
	Reason string
}

func (b *BadRecord) Error() string {
	return fmt.Sprintf("audit log broken at line %d (seq %d): %s", b.Line, b.Seq, b.Reason)
}

// Verify checks a log's chain and returns how many records it holds, or the
// first bad record. With a head (its .head file), records cut off the end are
// detected too.
func Verify(r io.Reader, headFile io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var prev string
	var seq uint64
	line := 0
	for sc.Scan() {
		line++
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return line - 1, &BadRecord{Line: line, Seq: seq + 1, Reason: "not a JSON record"}
		}
		switch {
		case rec.Seq != seq+1:
			return line - 1, &BadRecord{Line: line, Seq: rec.Seq, Reason: fmt.Sprintf("sequence %d follows %d: a record was removed or moved", rec.Seq, seq)}
		case rec.Prev != prev:
			return line - 1, &BadRecord{Line: line, Seq: rec.Seq, Reason: "its prev hash is not the hash of the record before: a record was removed, moved or edited"}
		case digest(rec) != rec.Hash:
			return line - 1, &BadRecord{Line: line, Seq: rec.Seq, Reason: "its hash does not match its content: the record was edited"}
		}
		prev, seq = rec.Hash, rec.Seq
	}
	if err := sc.Err(); err != nil {
		return line, err
	}
	if headFile != nil {
		var h head
		if err := json.NewDecoder(headFile).Decode(&h); err == nil && (h.Seq != seq || h.Hash != prev) {
			return line, &BadRecord{Line: line + 1, Seq: h.Seq, Reason: fmt.Sprintf("the head says the log ends at seq %d but it ends at %d: records were cut off the end", h.Seq, seq)}
		}
	}
	return line, nil
}

// VerifyFile verifies the log at path with its head file when present.
func VerifyFile(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var h io.Reader
	if hf, err := os.Open(path + ".head"); err == nil {
		defer hf.Close()
		h = hf
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	return Verify(f, h)
}

type actorKey struct{}

// Actor is who a request acts as, set by authentication and read by the
// audit of the request's outcome.
type Actor struct{ ID string }

// WithActor returns ctx carrying an empty actor for authentication to fill in.
func WithActor(ctx context.Context) (context.Context, *Actor) {
	a := &Actor{}
	return context.WithValue(ctx, actorKey{}, a), a
}

// SetActor records the authenticated caller of ctx's request.
func SetActor(ctx context.Context, id string) {
	if a, ok := ctx.Value(actorKey{}).(*Actor); ok {
		a.ID = id
	}
}
