package merge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/apierr"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

var bucketCausal = []byte("causal")

// causalQueue holds causal deltas whose dependencies are not committed yet (seed
// 3.1: a buffer of 10,000 events). It is durable: a delta is written to disk
// before its Kafka offset is committed, and loaded again after a restart. A delta
// is ready when its writer's previous delta is settled (the frontier of its
// writer is its counter - 1) and every other agent's frontier has reached the
// counter the delta depends on. Statestore checks the writer's frontier in the
// commit's transaction, so the order holds even with several merge instances.
type causalQueue struct {
	db      *bolt.DB
	max     int
	timeout time.Duration
	logger  log.Logger
	now     func() time.Time

	// maxPerWriter is one writer's share of the buffer (0: no share), so
	// one agent whose dependency never commits cannot fill it for all.
	maxPerWriter int

	mu       sync.Mutex
	pending  map[string]*waiting // by message id
	byWriter map[string]int      // pending deltas per writer
	frontier map[string]int64
	wake     chan struct{}
	// onReject is told about each delta rejected for good.
	onReject func(reason string)
}

type waiting struct {
	d     *fedsyncv1.Delta
	since time.Time
}

// openCausalQueue opens (or creates) the queue file in dir and loads it.
func openCausalQueue(dir string, max int, timeout time.Duration, logger log.Logger) (*causalQueue, error) {
	path := filepath.Join(dir, "merge.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	q := &causalQueue{db: db, max: max, timeout: timeout, logger: logger, now: time.Now,
		pending: map[string]*waiting{}, byWriter: map[string]int{}, frontier: map[string]int64{}, wake: make(chan struct{}, 1), onReject: func(string) {}}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketCausal)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			if len(v) < 8 {
				return nil
			}
			d := &fedsyncv1.Delta{}
			if err := proto.Unmarshal(v[8:], d); err != nil {
				return fmt.Errorf("decode buffered delta %s: %w", k, err)
			}
			q.pending[string(k)] = &waiting{d: d, since: time.Unix(0, int64(binary.BigEndian.Uint64(v[:8])))}
			q.byWriter[d.GetWriter()]++
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return q, nil
}

func (q *causalQueue) close() error { return q.db.Close() }

// Len is how many deltas wait.
func (q *causalQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// ready reports whether d's dependencies are committed under frontier.
func ready(d *fedsyncv1.Delta, frontier map[string]int64) bool {
	own := d.GetVectorClock()[d.GetWriter()]
	if frontier[d.GetWriter()] < own-1 {
		return false
	}
	for agent, n := range d.GetVectorClock() {
		if agent != d.GetWriter() && frontier[agent] < n {
			return false
		}
	}
	return true
}

func (q *causalQueue) refresh(ctx context.Context, store StateStore) error {
	f, err := store.GetFrontier(ctx)
	if err != nil {
		return err
	}
	q.mu.Lock()
	q.frontier = f
	q.mu.Unlock()
	return nil
}

// settled returns the writer's frontier as last read.
func (q *causalQueue) settled(d *fedsyncv1.Delta) int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.frontier[d.GetWriter()]
}

func (q *causalQueue) isReady(d *fedsyncv1.Delta) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return ready(d, q.frontier)
}

// offer applies d now if its dependencies are committed, else buffers it.
func (q *causalQueue) offer(ctx context.Context, s *service, d *fedsyncv1.Delta) (*MergeResult, error) {
	if !q.isReady(d) {
		if err := q.refresh(ctx, s.store); err != nil {
			return nil, err
		}
	}
	if q.isReady(d) {
		res, err := q.apply(ctx, s, d)
		if !errors.Is(err, errNotReady) {
			q.poke()
			return res, err
		}
		if used := q.settled(d); used >= d.GetVectorClock()[d.GetWriter()] {
			// Not a re-delivery (that would be a duplicate) but a new delta
			// reusing a counter: it can never be next.
			reason := fmt.Sprintf("vector_clock counter %d of %s was already used; the next one is %d", d.GetVectorClock()[d.GetWriter()], d.GetWriter(), used+1)
			if err := s.reject(ctx, d, Ordering, reason); err != nil {
				return nil, err
			}
			q.onReject("counter_reused")
			return &MergeResult{Outcome: Rejected}, nil
		}
	}
	if err := q.add(d); err != nil {
		var full *bufferFull
		if !errors.As(err, &full) {
			return nil, err // the disk: retried, not rejected
		}
		if rerr := s.reject(ctx, d, Ordering, err.Error()); rerr != nil {
			return nil, rerr
		}
		q.onReject(full.reason)
		return &MergeResult{Outcome: Rejected}, nil
	}
	return &MergeResult{Outcome: Buffered}, nil
}

func (q *causalQueue) apply(ctx context.Context, s *service, d *fedsyncv1.Delta) (res *MergeResult, err error) {
	defer func() {
		if errors.Is(err, errNotReady) {
			_ = q.refresh(ctx, s.store)
		}
	}()
	patch, ty, err := s.admit(d)
	if err != nil {
		return nil, err
	}
	res, err = s.commit(ctx, d, patch, ty, true)
	if err == nil {
		q.mu.Lock()
		own := d.GetVectorClock()[d.GetWriter()]
		q.frontier[d.GetWriter()] = max(q.frontier[d.GetWriter()], own)
		q.mu.Unlock()
	}
	return res, err
}

// bufferFull is why a causal delta found no room: the whole buffer, or its
// writer's share of it, is taken.
type bufferFull struct {
	reason, msg string
}

func (e *bufferFull) Error() string { return e.msg }

func (q *causalQueue) add(d *fedsyncv1.Delta) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.pending[d.GetMessageId()]; ok {
		return nil
	}
	if len(q.pending) >= q.max {
		return &bufferFull{reason: "buffer_full", msg: fmt.Sprintf("the causal buffer is full (%d deltas wait for their dependencies)", q.max)}
	}
	if w := d.GetWriter(); q.maxPerWriter > 0 && q.byWriter[w] >= q.maxPerWriter {
		return &bufferFull{reason: "writer_share", msg: fmt.Sprintf("%s already has %d deltas waiting for their dependencies, its share of the causal buffer", w, q.maxPerWriter)}
	}
	raw, err := proto.Marshal(d)
	if err != nil {
		return err
	}
	now := q.now()
	err = q.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCausal).Put([]byte(d.GetMessageId()), append(binary.BigEndian.AppendUint64(nil, uint64(now.UnixNano())), raw...))
	})
	if err != nil {
		return fmt.Errorf("buffer causal delta: %w", err)
	}
	q.pending[d.GetMessageId()] = &waiting{d: d, since: now}
	q.byWriter[d.GetWriter()]++
	return nil
}

func (q *causalQueue) remove(messageID string) {
	q.mu.Lock()
	if w, ok := q.pending[messageID]; ok {
		delete(q.pending, messageID)
		if q.byWriter[w.d.GetWriter()]--; q.byWriter[w.d.GetWriter()] <= 0 {
			delete(q.byWriter, w.d.GetWriter())
		}
	}
	q.mu.Unlock()
	_ = q.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketCausal).Delete([]byte(messageID)) })
}

func (q *causalQueue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run applies buffered deltas as their dependencies commit, and rejects those
// that waited longer than the timeout, until ctx ends.
func (q *causalQueue) run(ctx context.Context, s *service, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-q.wake:
		}
		if q.Len() == 0 {
			continue
		}
		if err := q.drain(ctx, s); err != nil && ctx.Err() == nil {
			level.Warn(q.logger).Log("msg", "drain causal buffer", "err", err)
		}
	}
}

// drain applies every ready delta (repeatedly, as each one may unblock others)
// and rejects expired ones.
func (q *causalQueue) drain(ctx context.Context, s *service) error {
	if err := q.refresh(ctx, s.store); err != nil {
		return err
	}
	for progress := true; progress; {
		progress = false
		q.mu.Lock()
		list := make([]*waiting, 0, len(q.pending))
		for _, w := range q.pending {
			list = append(list, w)
		}
		q.mu.Unlock()
		sort.Slice(list, func(i, j int) bool { return list[i].since.Before(list[j].since) })
		for _, w := range list {
			if q.isReady(w.d) {
				_, err := q.apply(ctx, s, w.d)
				switch {
				case errors.Is(err, errNotReady):
					continue
				case err != nil && apierr.IsInfrastructure(err):
					return err
				case err != nil:
					if rerr := s.reject(ctx, w.d, Ordering, err.Error()); rerr != nil {
						return rerr
					}
					q.onReject(string(apierr.As(err).Code))
				}
				q.remove(w.d.GetMessageId())
				progress = true
				continue
			}
			if q.now().Sub(w.since) > q.timeout {
				reason := fmt.Sprintf("its causal dependencies %v did not commit within %s", w.d.GetVectorClock(), q.timeout)
				if err := s.reject(ctx, w.d, Ordering, reason); err != nil {
					return err
				}
				level.Warn(q.logger).Log("msg", "rejected causal delta", "message_id", w.d.GetMessageId(), "writer", w.d.GetWriter(), "reason", reason)
				q.onReject("timeout")
				q.remove(w.d.GetMessageId())
				progress = true
				if err := q.refresh(ctx, s.store); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
