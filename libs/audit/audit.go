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
//
// The log rotates into segments (Segments): when the active file reaches
// MaxBytes it is renamed audit.<first seq>.log and a new active file goes on
// with the same chain, so a segment's first record carries the hash of the
// previous segment's last. VerifyFile checks the segments and the active file
// as one chain. Segments older than Retention are deleted; the chain is then
// verified from the oldest one kept.
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
	"sort"
	"strconv"
	"strings"
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
	// first is the sequence number of the active file's first record (0
	// while it is empty).
	first uint64
	// retry holds records whose write failed; they go first next time.
	retry []Record
	seg   Segments
}

// Segments is how the log rotates.
type Segments struct {
	// MaxBytes rotates the active file once it holds this much (0: never).
	MaxBytes int64
	// Retention deletes segments whose last record is older (0: keep all).
	Retention time.Duration
}

// Open opens (creating) the audit log at path and reads where its chain
// ends; it never rotates.
func Open(path, service, instance string, logger log.Logger) (*Log, error) {
	return OpenSegmented(path, service, instance, logger, Segments{})
}

// lastRecord returns the first and the last record of the file at path
// (zero records when it is empty or absent).
func lastRecord(path string) (first, last Record, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return first, last, nil
	}
	if err != nil {
		return first, last, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r Record
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			if first.Seq == 0 {
				first = r
			}
			last = r
		}
	}
	return first, last, sc.Err()
}

// OpenSegmented opens (creating) the audit log at path, rotating into
// segments as seg says.
func OpenSegmented(path, service, instance string, logger log.Logger, seg Segments) (*Log, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	l := &Log{path: path, headPath: path + ".head", service: service, instance: instance, logger: logger,
		ch: make(chan Record, 10000), done: make(chan struct{}), seg: seg}
	first, last, err := lastRecord(path)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	if last.Seq == 0 {
		// An empty active file (just rotated): the chain ends in the newest
		// segment.
		if segs, err := segments(path); err == nil && len(segs) > 0 {
			if _, last, err = lastRecord(segs[len(segs)-1].path); err != nil {
				return nil, fmt.Errorf("read audit segment: %w", err)
			}
		}
	}
	l.seq, l.prev, l.first = last.Seq, last.Hash, first.Seq
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
	if l.first == 0 {
		l.first = l.seq + 1
	}
	l.seq, l.prev = seq, prev
	l.written.Add(int64(n))
	if err := writeFileSynced(l.headPath, mustJSON(head{Seq: seq, Hash: prev})); err != nil {
		return err
	}
	if l.seg.MaxBytes > 0 && l.size >= l.seg.MaxBytes {
		if err := l.rotate(); err != nil {
			// The records are written; the file grows until a rotation works.
			level.Error(l.logger).Log("msg", "rotate the audit log", "err", err)
		}
	}
	return nil
}

// segment is a rotated file of the log.
type segment struct {
	path  string
	first uint64
}

// segmentName is the file a segment whose first record is seq goes to:
// audit.log -> audit.00000000000000000042.log, so names sort by sequence.
func segmentName(path string, seq uint64) string {
	ext := filepath.Ext(path)
	return fmt.Sprintf("%s.%020d%s", strings.TrimSuffix(path, ext), seq, ext)
}

// segments lists the segments of the log at path, oldest first.
func segments(path string) ([]segment, error) {
	ext := filepath.Ext(path)
	base := strings.TrimSuffix(filepath.Base(path), ext)
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	var out []segment
	for _, e := range entries {
		name := e.Name()
		mid, ok := strings.CutPrefix(name, base+".")
		if !ok {
			continue
		}
		mid, ok = strings.CutSuffix(mid, ext)
		if !ok || len(mid) != 20 {
			continue
		}
		seq, err := strconv.ParseUint(mid, 10, 64)
		if err != nil {
			continue
		}
		out = append(out, segment{path: filepath.Join(filepath.Dir(path), name), first: seq})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].first < out[j].first })
	return out, nil
}

// rotate renames the active file to a segment and starts a new one that
// continues the chain, then deletes segments past the retention.
func (l *Log) rotate() error {
	if l.first == 0 {
		return nil
	}
	if err := l.f.Close(); err != nil {
		return err
	}
	if err := os.Rename(l.path, segmentName(l.path, l.first)); err != nil {
		// Keep appending to the file we have.
		f, oerr := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if oerr == nil {
			l.f = f
		}
		return err
	}
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	l.f, l.size, l.first = f, 0, 0
	if err := syncDir(filepath.Dir(l.path)); err != nil {
		return err
	}
	if l.seg.Retention > 0 {
		segs, err := segments(l.path)
		if err != nil {
			return err
		}
		// The newest segment always stays: it anchors the active file. The
		// base records where the kept chain starts: the last record
		// deleted, written before the segments go.
		var gone []segment
		for i, s := range segs[:max(0, len(segs)-1)] {
			st, err := os.Stat(s.path)
			if err != nil || time.Since(st.ModTime()) <= l.seg.Retention {
				break
			}
			gone = append(gone, segs[i])
		}
		if len(gone) > 0 {
			_, last, err := lastRecord(gone[len(gone)-1].path)
			if err != nil {
				return err
			}
			if err := writeFileSynced(l.path+".base", mustJSON(head{Seq: last.Seq, Hash: last.Hash})); err != nil {
				return err
			}
			for _, s := range gone {
				if err := os.Remove(s.path); err != nil {
					return err
				}
			}
			level.Info(l.logger).Log("msg", "deleted audit segments past retention", "segments", len(gone), "chain_starts_after_seq", last.Seq, "retention", l.seg.Retention)
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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
	return syncDir(filepath.Dir(path))
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
	var c chain
	n, err := c.verify(r)
	if err != nil {
		return n, err
	}
	return n, c.checkHead(headFile, n)
}

// chain is where a verification has got to, across files.
type chain struct {
	prev string
	seq  uint64
}

// verify checks the records of r following c.
func (c *chain) verify(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	prev, seq := c.prev, c.seq
	defer func() { c.prev, c.seq = prev, seq }()
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
	return line, sc.Err()
}

func (c *chain) checkHead(headFile io.Reader, line int) error {
	if headFile == nil {
		return nil
	}
	var h head
	if err := json.NewDecoder(headFile).Decode(&h); err == nil && (h.Seq != c.seq || h.Hash != c.prev) {
		return &BadRecord{Line: line + 1, Seq: h.Seq, Reason: fmt.Sprintf("the head says the log ends at seq %d but it ends at %d: records were cut off the end", h.Seq, c.seq)}
	}
	return nil
}

// VerifyFile verifies the log at path (the active file) with its segments
// and its head file when present, as one chain, and returns how many
// records it holds; a *SegmentError names the file of a bad record.
func VerifyFile(path string) (int, error) {
	n, _, err := VerifyLog(path)
	return n, err
}

// SegmentError is a bad record in one file of a segmented log.
type SegmentError struct {
	File string
	Err  error
}

func (e *SegmentError) Error() string { return filepath.Base(e.File) + ": " + e.Err.Error() }
func (e *SegmentError) Unwrap() error { return e.Err }

// VerifyLog verifies the log at path with its segments and head; it also
// returns how many files it read.
func VerifyLog(path string) (records, files int, err error) {
	segs, err := segments(path)
	if err != nil {
		return 0, 0, err
	}
	// Segments deleted past retention leave a base: the last record they
	// held, which the oldest segment kept must follow.
	var c chain
	if raw, err := os.ReadFile(path + ".base"); err == nil {
		var b head
		if err := json.Unmarshal(raw, &b); err != nil {
			return 0, 0, fmt.Errorf("%s.base: %w", filepath.Base(path), err)
		}
		c.seq, c.prev = b.Seq, b.Hash
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, 0, err
	}
	for i, s := range segs {
		f, err := os.Open(s.path)
		if err != nil {
			return records, files, err
		}
		n, err := c.verify(f)
		f.Close()
		records, files = records+n, files+1
		if err != nil {
			return records, files, &SegmentError{File: s.path, Err: err}
		}
		if i+1 < len(segs) && segs[i+1].first != c.seq+1 {
			return records, files, &SegmentError{File: segs[i+1].path, Err: fmt.Errorf("it starts at seq %d, after %d: a segment is missing", segs[i+1].first, c.seq)}
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return records, files, err
	}
	defer f.Close()
	n, err := c.verify(f)
	records, files = records+n, files+1
	if err != nil {
		if len(segs) > 0 {
			err = &SegmentError{File: path, Err: err}
		}
		return records, files, err
	}
	if hf, err := os.Open(path + ".head"); err == nil {
		defer hf.Close()
		return records, files, c.checkHead(hf, n)
	} else if !errors.Is(err, os.ErrNotExist) {
		return records, files, err
	}
	return records, files, nil
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
