package kafkabus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedsync/fedsync/libs/kafkatest"
)

func testConfig(t *testing.T) *Config {
	return &Config{Brokers: kafkatest.Brokers(t), Partitions: 3, Replication: 1, BatchTimeout: 2 * time.Millisecond, Compression: DefaultCompression}
}

// uniqueTopic keeps runs against a shared real broker apart.
func uniqueTopic(t *testing.T) string {
	return fmt.Sprintf("test.%s.%d", t.Name(), time.Now().UnixNano())
}

func TestEnsureTopicsIsIdempotent(t *testing.T) {
	cfg := testConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	specs := []TopicSpec{{Name: uniqueTopic(t), Partitions: 3}}
	for i := 0; i < 2; i++ {
		if err := EnsureTopics(ctx, cfg, specs); err != nil {
			t.Fatalf("ensure topics, round %d: %v", i, err)
		}
	}
}

func TestEnsureTopicsGivesUpWhenBrokerIsDown(t *testing.T) {
	cfg := &Config{Brokers: []string{"127.0.0.1:1"}, Partitions: 1, Replication: 1, BatchTimeout: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := EnsureTopics(ctx, cfg, cfg.Topics()); err == nil {
		t.Fatal("want an error for an unreachable broker")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"good", Config{Brokers: []string{"a:1"}, Partitions: 1, Replication: 1, BatchTimeout: time.Millisecond}, true},
		{"no brokers", Config{Partitions: 1, Replication: 1, BatchTimeout: time.Millisecond}, false},
		{"the 1s kafka-go default batch timeout", Config{Brokers: []string{"a:1"}, Partitions: 1, Replication: 1, BatchTimeout: time.Second}, false},
		{"zero partitions", Config{Brokers: []string{"a:1"}, Replication: 1, BatchTimeout: time.Millisecond}, false},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// TestConsumerCommitsOnlyAfterHandlerSucceeds produces keyed records, fails the
// handler once for one record, stops the consumer part-way, and checks a new member
// of the same group gets everything not yet handled: nothing lost, keys in order.
func TestConsumerCommitsOnlyAfterHandlerSucceeds(t *testing.T) {
	cfg := testConfig(t)
	topic := uniqueTopic(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := EnsureTopics(ctx, cfg, []TopicSpec{{Name: topic, Partitions: 3}}); err != nil {
		t.Fatal(err)
	}
	p := NewProducer(cfg, topic)
	defer p.Close()
	const n = 30
	var recs []Record
	for i := 0; i < n; i++ {
		recs = append(recs, Record{Key: []byte(fmt.Sprintf("id-%d", i%5)), Value: []byte(fmt.Sprint(i))})
	}
	if err := p.Publish(ctx, recs...); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	seen := map[string]int{}
	lastPerKey := map[string]int{}
	failedOnce := false
	group := "g-" + topic
	handle := func(stop func(), stopAfter int) Handler {
		return func(ctx context.Context, m Message) error {
			mu.Lock()
			defer mu.Unlock()
			if string(m.Value) == "7" && !failedOnce {
				failedOnce = true
				return errors.New("transient failure")
			}
			var v int
			fmt.Sscan(string(m.Value), &v)
			if prev, ok := lastPerKey[string(m.Key)]; ok && v < prev {
				t.Errorf("key %s: record %d after %d", m.Key, v, prev)
			}
			lastPerKey[string(m.Key)] = v
			seen[string(m.Value)]++
			if len(seen) >= stopAfter {
				stop()
			}
			return nil
		}
	}
	run := func(stopAfter int) {
		cctx, ccancel := context.WithCancel(ctx)
		defer ccancel()
		c := NewConsumer(cfg, topic, group, StartEarliest, log.NewNopLogger())
		defer c.Close()
		if err := c.Run(cctx, handle(ccancel, stopAfter)); err != nil {
			t.Fatal(err)
		}
	}
	run(n / 2)
	run(n)
	if ctx.Err() != nil {
		t.Fatalf("timed out; saw %d of %d records", len(seen), n)
	}
	for i := 0; i < n; i++ {
		if seen[fmt.Sprint(i)] == 0 {
			t.Errorf("record %d never handled", i)
		}
	}
	if !failedOnce {
		t.Error("the failing record was never retried")
	}
}

func TestTraceContextTravelsInHeaders(t *testing.T) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	cfg := testConfig(t)
	topic := uniqueTopic(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := EnsureTopics(ctx, cfg, []TopicSpec{{Name: topic, Partitions: 1}}); err != nil {
		t.Fatal(err)
	}
	pctx, span := tp.Tracer("test").Start(ctx, "produce")
	want := span.SpanContext().TraceID()
	p := NewProducer(cfg, topic)
	defer p.Close()
	if err := p.Publish(pctx, Record{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	span.End()
	cctx, ccancel := context.WithCancel(ctx)
	c := NewConsumer(cfg, topic, "g-"+topic, StartEarliest, log.NewNopLogger())
	defer c.Close()
	var got trace.TraceID
	_ = c.Run(cctx, func(ctx context.Context, m Message) error {
		got = trace.SpanContextFromContext(otel.GetTextMapPropagator().Extract(context.Background(), headerCarrier{&m.Headers})).TraceID()
		ccancel()
		return nil
	})
	if got != want {
		t.Fatalf("consumer saw trace %s, want %s", got, want)
	}
}

// TestRunBatchHandsOverBatchesAndRetriesThem produces keyed records, fails one
// batch once, stops part-way and restarts: every record is handled, each key's
// records in order, batches hold more than one record, and a failed batch comes
// back whole.
func TestRunBatchHandsOverBatchesAndRetriesThem(t *testing.T) {
	cfg := testConfig(t)
	topic := uniqueTopic(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := EnsureTopics(ctx, cfg, []TopicSpec{{Name: topic, Partitions: 2}}); err != nil {
		t.Fatal(err)
	}
	p := NewProducer(cfg, topic)
	defer p.Close()
	const n = 300
	var recs []Record
	for i := 0; i < n; i++ {
		recs = append(recs, Record{Key: []byte(fmt.Sprintf("k%d", i%7)), Value: []byte(fmt.Sprint(i))})
	}
	if err := p.Publish(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	last := map[string]int{}
	seen := map[int]bool{}
	largest, failed := 0, false
	var failedBatch []int64
	run := func(stopAfter int) {
		cctx, ccancel := context.WithCancel(ctx)
		defer ccancel()
		c := NewConsumer(cfg, topic, "g-"+topic, StartEarliest, log.NewNopLogger())
		defer c.Close()
		c.RunBatch(cctx, func(_ context.Context, ms []Message) error {
			if len(ms) > 32 {
				t.Errorf("batch of %d records, want at most 32", len(ms))
			}
			largest = max(largest, len(ms))
			if !failed && len(seen) > 10 {
				failed = true
				for _, m := range ms {
					failedBatch = append(failedBatch, m.Offset)
				}
				return errors.New("transient failure")
			}
			if failedBatch != nil {
				if len(ms) != len(failedBatch) || ms[0].Offset != failedBatch[0] {
					t.Errorf("after a failure got a batch starting at offset %d (%d records), want the failed one again (%v)", ms[0].Offset, len(ms), failedBatch)
				}
				failedBatch = nil
			}
			for _, m := range ms {
				var v int
				fmt.Sscan(string(m.Value), &v)
				if prev, ok := last[string(m.Key)]; ok && v < prev {
					t.Errorf("key %s: %d after %d", m.Key, v, prev)
				}
				last[string(m.Key)] = v
				seen[v] = true
			}
			if len(seen) >= stopAfter {
				ccancel()
			}
			return nil
		}, BatchOptions{MaxRecords: 32, Linger: 5 * time.Millisecond})
	}
	run(n / 3)
	clear(last) // a restart may hand out again what was handled but not committed
	run(n)
	for i := 0; i < n; i++ {
		if !seen[i] {
			t.Fatalf("record %d never handled", i)
		}
	}
	if largest < 2 {
		t.Errorf("largest batch held %d record(s), want several", largest)
	}
	if !failed {
		t.Error("no batch was failed and retried")
	}
}

// TestLagReaderCountsUncommittedRecords: a group's lag is what was produced and
// not committed, and shrinks as the group commits.
func TestLagReaderCountsUncommittedRecords(t *testing.T) {
	cfg := testConfig(t)
	topic := uniqueTopic(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := EnsureTopics(ctx, cfg, []TopicSpec{{Name: topic, Partitions: 2}}); err != nil {
		t.Fatal(err)
	}
	p := NewProducer(cfg, topic)
	defer p.Close()
	var recs []Record
	for i := 0; i < 40; i++ {
		recs = append(recs, Record{Key: []byte(fmt.Sprint("k", i)), Value: []byte("v")})
	}
	if err := p.Publish(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	group := "g-" + topic
	lr := NewLagReader(cfg, topic, group)
	lag, _, err := lr.Lag(ctx)
	if err != nil || lag != 40 {
		t.Fatalf("lag before consuming = %d, %v; want 40", lag, err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	c := NewConsumer(cfg, topic, group, StartEarliest, log.NewNopLogger())
	n := 0
	go c.RunBatch(cctx, func(_ context.Context, ms []Message) error { n += len(ms); return nil }, BatchOptions{MaxRecords: 100})
	for lag != 0 && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		lag, _, err = lr.Lag(ctx)
	}
	ccancel()
	c.Close()
	if lag != 0 || err != nil {
		t.Fatalf("lag after consuming = %d, %v", lag, err)
	}
}

// TestTailerReadsEveryPartitionWithoutAGroup: a tailer started on a topic gets
// every record produced afterwards, from every partition, each partition's in
// order, and creates no consumer group in the broker.
func TestTailerReadsEveryPartitionWithoutAGroup(t *testing.T) {
	cfg := testConfig(t)
	topic := uniqueTopic(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := EnsureTopics(ctx, cfg, []TopicSpec{{Name: topic, Partitions: 3}}); err != nil {
		t.Fatal(err)
	}
	tl, err := NewTailer(cfg, topic, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	got := make(chan Message, 100)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tl.RunBatch(rctx, func(_ context.Context, ms []Message) error {
			for _, m := range ms {
				got <- m
			}
			return nil
		}, BatchOptions{MaxRecords: 16})
	}()
	p := NewProducer(cfg, topic)
	defer p.Close()
	// The tailer starts each partition at its end once it has looked that
	// partition up: produce markers to every partition until one has arrived
	// from each of the three, then the records that count.
	seen := map[int]bool{}
	for len(seen) < 3 {
		for i := 0; i < 12; i++ {
			if err := p.Publish(ctx, Record{Key: []byte(fmt.Sprintf("marker-%d", i)), Value: []byte("m")}); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.After(500 * time.Millisecond)
	drain:
		for {
			select {
			case m := <-got:
				seen[m.Partition] = true
			case <-deadline:
				break drain
			}
		}
	}
	for len(got) > 0 {
		<-got
	}
	const n = 60
	for i := 0; i < n; i++ {
		if err := p.Publish(ctx, Record{Key: []byte(fmt.Sprintf("k%d", i%7)), Value: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	last := map[string]int{}
	parts := map[int]bool{}
	for i := 0; i < n; i++ {
		select {
		case m := <-got:
			v, _ := strconv.Atoi(string(m.Value))
			if prev, ok := last[string(m.Key)]; ok && v <= prev {
				t.Fatalf("key %s: %d after %d", m.Key, v, prev)
			}
			last[string(m.Key)] = v
			parts[m.Partition] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d records arrived", i, n)
		}
	}
	if len(parts) < 2 {
		t.Fatalf("records came from partitions %v only", parts)
	}
	stop()
	<-done
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := kmsg.NewPtrListGroupsRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range resp.Groups {
		if strings.Contains(g.Group, topic) {
			t.Fatalf("the tailer left group %s", g.Group)
		}
	}
}
