package statestore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/periodic"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// publisher copies the committed-change log to Kafka in commit order. It records
// the highest published seq only after Kafka acknowledged, so a crash at any point
// republishes instead of losing; consumers drop repeats by seq.
type publisher struct {
	store *store
	// repl records the published position and drops published conflicts
	// (replicated commands: a new leader resumes where this one stopped).
	repl      proposer
	producer  *kafkabus.Producer
	conflicts *kafkabus.Producer
	wake      <-chan struct{}
	retention LogRetention
	// wholeMax is the largest stored entry published whole.
	wholeMax int
	// maxRecord is the largest record published; a change larger even
	// without its document goes out without its fields (change_omitted).
	maxRecord int
	logger    log.Logger
	pending   prometheus.Gauge
	// saveEvery is how often the published position is written to the
	// database (0: after every publish). Between writes it is kept in memory:
	// a crash republishes at most that much, and consumers drop repeats by seq.
	saveEvery time.Duration

	loaded  bool
	last    uint64 // highest seq Kafka acknowledged
	saved   uint64 // highest seq recorded in the database
	savedAt time.Time
}

const publishBatch = 500

func (p *publisher) run(ctx context.Context) error {
	backoff := periodic.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	p.loaded = false // a new term: resume from the replicated position
	defer func() {
		if p.loaded && p.last > p.saved {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := p.markPublished(ctx, p.last); err != nil {
				level.Warn(p.logger).Log("msg", "record published position at stop", "err", err)
			}
		}
	}()
	for {
		n, err := p.publishOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			level.Warn(p.logger).Log("msg", "publish committed changes", "err", err)
			if !backoff.Wait(ctx) {
				return nil
			}
			continue
		}
		backoff.Reset()
		if n == publishBatch {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-p.wake:
		case <-time.After(time.Second):
		}
	}
}

func (p *publisher) publishOnce(ctx context.Context) (int, error) {
	if err := p.publishConflicts(ctx); err != nil {
		return 0, err
	}
	if !p.loaded {
		seq, err := p.store.published()
		if err != nil {
			return 0, err
		}
		p.last, p.saved, p.loaded = seq, seq, true
	}
	from := p.last
	entries, head, err := p.store.readLog(from, publishBatch)
	if err != nil {
		return 0, err
	}
	p.pending.Set(float64(head - from))
	if len(entries) == 0 {
		return 0, nil
	}
	records := make([]kafkabus.Record, 0, len(entries))
	var last uint64
	for _, e := range entries {
		id := e.msg.GetMetadata()[metaStateID]
		if id == "" { // an entry written before the id was kept in its envelope
			ch, err := decodeChange(e.msg)
			if err != nil {
				return 0, err
			}
			id = ch.GetState().GetId()
		}
		// The stored bytes are the record: no decode and re-encode per change,
		// except for a large document, whose change goes out without its value.
		raw := e.raw
		if len(raw) > p.wholeMax {
			var err error
			if raw, err = withoutValue(e.msg, false); err != nil {
				return 0, err
			}
			if p.maxRecord > 0 && len(raw) > p.maxRecord {
				// No change may jam the topic: what is too large even
				// alone is announced, and read from the log.
				if raw, err = withoutValue(e.msg, true); err != nil {
					return 0, err
				}
			}
		}
		rec := kafkabus.Record{Key: []byte(id), Value: raw}
		if tp := e.msg.GetMetadata()["traceparent"]; strings.HasSuffix(tp, "-01") {
			// A traced commit's event continues its own trace, not the
			// batch's first writer's.
			rec.Headers = map[string]string{"traceparent": tp}
			if ts := e.msg.GetMetadata()["tracestate"]; ts != "" {
				rec.Headers["tracestate"] = ts
			}
		}
		records = append(records, rec)
		last = e.seq
	}
	// Continue the trace of the first writer in the batch.
	tctx := otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier(entries[0].msg.GetMetadata()))
	if err := p.producer.Publish(tctx, records...); err != nil {
		return 0, err
	}
	p.last = last
	if p.saveEvery == 0 || time.Since(p.savedAt) >= p.saveEvery {
		if err := p.markPublished(ctx, last); err != nil {
			return 0, fmt.Errorf("record published seq %d: %w", last, err)
		}
		p.saved, p.savedAt = last, time.Now()
	}
	p.pending.Set(float64(head - last))
	return len(entries), nil
}

// withoutValue re-encodes a log entry with its document's value and field
// provenance left out: what the change set and removed is enough for consumers,
// and the whole document can be read from the log (ReadLog). With change set,
// set and removed are left out too (change_omitted).
func withoutValue(m *fedsyncv1.SyncMessage, change bool) ([]byte, error) {
	ch, err := decodeChange(m)
	if err != nil {
		return nil, err
	}
	ch.State.Value, ch.State.Fields, ch.ValueOmitted = nil, nil, true
	if change {
		ch.Set, ch.Removed, ch.ChangeOmitted = nil, nil, true
	}
	payload, err := proto.Marshal(ch)
	if err != nil {
		return nil, err
	}
	env := proto.Clone(m).(*fedsyncv1.SyncMessage)
	env.Payload = payload
	return proto.Marshal(env)
}

func decodeChange(m *fedsyncv1.SyncMessage) (*fedsyncv1.Change, error) {
	ch := &fedsyncv1.Change{}
	if err := proto.Unmarshal(m.GetPayload(), ch); err != nil {
		return nil, fmt.Errorf("decode change %s: %w", m.GetMessageId(), err)
	}
	return ch, nil
}

// publishConflicts copies recorded conflicts to fedsync.conflicts, then drops
// them from the conflict outbox.
func (p *publisher) publishConflicts(ctx context.Context) error {
	if p.conflicts == nil {
		return nil
	}
	keys, vals, err := p.store.conflictOutbox(publishBatch)
	if err != nil || len(keys) == 0 {
		return err
	}
	records := make([]kafkabus.Record, len(vals))
	for i, v := range vals {
		c := &fedsyncv1.Conflict{}
		if err := proto.Unmarshal(v, c); err != nil {
			return fmt.Errorf("decode conflict: %w", err)
		}
		env, _ := proto.Marshal(&fedsyncv1.SyncMessage{MessageId: c.GetId(), SenderId: "merge", Timestamp: c.GetDetectedAt(), Type: fedsyncv1.MessageType_EVENT, Payload: v,
			Metadata: map[string]string{"kind": "conflict", "conflict_type": c.GetType(), "status": c.GetStatus()}})
		records[i] = kafkabus.Record{Key: []byte(c.GetStateId()), Value: env}
	}
	if err := p.conflicts.Publish(ctx, records...); err != nil {
		return err
	}
	_, err = p.repl.propose(ctx, &command{kind: cmdDropConflicts, seq: keys[len(keys)-1]})
	return err
}

// markPublished records that every entry up to seq is in Kafka, and trims log
// entries beyond the retention.
func (p *publisher) markPublished(ctx context.Context, seq uint64) error {
	_, err := p.repl.propose(ctx, &command{kind: cmdPublished, now: p.store.now().UnixNano(), seq: seq, retention: p.retention.Count,
		retentionAge: int64(p.retention.Age), retentionBytes: p.retention.Bytes})
	return err
}
