package merge

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/kafkatest"
	"github.com/fedsync/fedsync/libs/statedoc"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// BenchmarkPlan measures the pure merge step: one delta of 8 fields (mixed
// resolvers) into a document of 16 fields. Field merges/s = 8 * ops/s.
func BenchmarkPlan(b *testing.B) {
	kg, _ := testRegistry(b).Get().Lookup("kg")
	e := &Engine{Resolvers: NewResolvers()}
	cur := &fedsyncv1.State{Id: "doc", DataType: "kg", Version: 10, Fields: map[string]*fedsyncv1.FieldMeta{}}
	val := statedoc.Object{}
	for i := 0; i < 12; i++ {
		val[fmt.Sprintf("f%d", i)] = []byte(fmt.Sprint(i))
		cur.Fields[fmt.Sprintf("f%d", i)] = &fedsyncv1.FieldMeta{Hlc: 100, Writer: "ai-001", Version: 9}
	}
	for _, k := range []string{"tags", "best", "low", "count"} {
		cur.Fields[k] = &fedsyncv1.FieldMeta{Hlc: 100, Writer: "ai-001", Version: 9}
	}
	val["tags"], val["best"], val["low"], val["count"] = []byte(`["a","b"]`), []byte(`5`), []byte(`5`), []byte(`5`)
	cur.Value = val.Encode()
	raw := []byte(`{"f1":"x","f2":2,"f3":null,"f4":[1],"tags":["c"],"best":9,"low":1,"count":1}`)
	patch, _ := statedoc.DecodeObject(raw)
	d := &fedsyncv1.Delta{Id: "doc", DataType: "kg", Patch: raw, Writer: "ai-002", Hlc: 200, MessageId: "m"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.Plan(cur, d, patch, kg, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(8*b.N)/b.Elapsed().Seconds(), "fields/s")
}

// BenchmarkConsumeFromBroker measures the merge service consuming deltas from
// the embedded Kafka-protocol broker (kafka-go consumer group, the real batch
// handler) into an in-memory statestore: deltas/s through merge alone, with
// batches of one delta (the old per-record path's shape) and of up to 1,000.
func BenchmarkConsumeFromBroker(b *testing.B) {
	for _, max := range []int{1, 1000} {
		b.Run(fmt.Sprintf("batch=%d", max), func(b *testing.B) { benchConsume(b, max) })
	}
}

func benchConsume(b *testing.B, maxBatch int) {
	cfg := &kafkabus.Config{Brokers: kafkatest.Brokers(b), Partitions: 4, Replication: 1, BatchTimeout: 2 * time.Millisecond,
		TopicPrefix: fmt.Sprintf("bench-%d-", time.Now().UnixNano())}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := kafkabus.EnsureAll(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	producer := kafkabus.NewProducer(cfg, kafkabus.TopicDeltas)
	defer producer.Close()
	var recs []kafkabus.Record
	for i := 0; i < b.N; i++ {
		d := &fedsyncv1.Delta{Id: fmt.Sprintf("doc-%d", i%64), DataType: "note", Patch: []byte(fmt.Sprintf(`{"f%d":%d}`, i%16, i)),
			Writer: "ai-001", Hlc: int64(i + 1), MessageId: fmt.Sprintf("m%d", i), Consistency: fedsyncv1.Consistency_CONSISTENCY_EVENTUAL}
		payload, _ := proto.Marshal(d)
		env, _ := proto.Marshal(&fedsyncv1.SyncMessage{MessageId: d.MessageId, Type: fedsyncv1.MessageType_STATE_UPDATE, Payload: payload})
		recs = append(recs, kafkabus.Record{Key: []byte(d.Id), Value: env})
	}
	for i := 0; i < len(recs); i += 1000 {
		if err := producer.Publish(ctx, recs[i:min(i+1000, len(recs))]...); err != nil {
			b.Fatal(err)
		}
	}
	st := newMemStore()
	svc := newTestService(b, st)
	eps := MakeEndpoints(svc, func(string) endpointMiddleware { return passthrough })
	done := make(chan struct{})
	var n int
	handler := batchHandler(eps, svc, &memDLQ{}, 5, log.NewNopLogger(), func(string) {})
	count := func(ctx context.Context, ms []kafkabus.Message) error {
		err := handler(ctx, ms)
		if n += len(ms); n >= b.N {
			close(done)
			n = -1 << 40
		}
		return err
	}
	b.ResetTimer()
	cctx, ccancel := context.WithCancel(ctx)
	c := kafkabus.NewConsumer(cfg, kafkabus.TopicDeltas, "bench", kafkabus.StartEarliest, log.NewNopLogger())
	defer c.Close()
	go c.RunBatch(cctx, count, kafkabus.BatchOptions{MaxRecords: maxBatch, MaxBytes: 8 << 20, Linger: time.Millisecond})
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("consumed %d of %d", n, b.N)
	}
	b.StopTimer()
	ccancel()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deltas/s")
	b.ReportMetric(float64(b.N)/float64(max(st.batches, 1)), "deltas/commit")
}

// memDLQ collects dead-lettered records.
type memDLQ struct {
	mu      sync.Mutex
	records []kafkabus.Record
}

func (q *memDLQ) Publish(_ context.Context, rs ...kafkabus.Record) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.records = append(q.records, rs...)
	return nil
}
