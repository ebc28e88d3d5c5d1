package groupsync_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/fedsync/fedsync/libs/groupsync"
)

const topic = "groupsync"

// startBroker starts kfake persisting in dir: with group commit when c is
// non-nil, otherwise with kfake's per-batch fsync (or none, for a read-back).
func startBroker(t testing.TB, dir string, c *groupsync.Committer, perBatch bool, more ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts := append([]kfake.Opt{kfake.NumBrokers(1), kfake.DataDir(dir), kfake.SeedTopics(4, topic)}, more...)
	if c != nil {
		opts = append(opts, kfake.ListenFn(c.ListenFn(nil)))
	}
	if perBatch {
		opts = append(opts, kfake.SyncWrites())
	}
	cl, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func newCommitter(t testing.TB, dir string) *groupsync.Committer {
	t.Helper()
	fs, err := groupsync.OpenFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	return groupsync.NewCommitter(fs.Sync, nil)
}

func newWriter(cl *kfake.Cluster) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(cl.ListenAddrs()...),
		Topic:        topic,
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 2 * time.Millisecond,
		BatchSize:    1000,
	}
}

func TestKfakeGroupCommit(t *testing.T) {
	dir := t.TempDir()
	c := newCommitter(t, dir)
	cl := startBroker(t, dir, c, false)

	// Many goroutines write synchronously, through one shared writer (as a
	// service does) and through writers of their own (separate connections).
	const goroutines, each = 32, 20
	shared := newWriter(cl)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := shared
			if g%2 == 1 {
				w = newWriter(cl)
				defer w.Close()
			}
			for i := 0; i < each; i++ {
				key := fmt.Sprintf("k-%d-%d", g, i)
				errs <- w.WriteMessages(ctx, kafka.Message{Key: []byte(key), Value: []byte("v-" + key)})
			}
		}()
	}
	wg.Wait()
	shared.Close()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("write not acknowledged: %v", err)
		}
	}
	s := c.Stats()
	t.Logf("%s (%d sync requests)", s, s.Requests)
	if s.Released == 0 || s.Syncs >= s.Released || s.Failures != 0 {
		t.Fatalf("stats %+v: want fewer syncs than released produce responses", s)
	}
	cl.Close()

	// Every acknowledged record is in the data directory: read it back from a
	// broker started over the same directory.
	cl = startBroker(t, dir, nil, false)
	defer cl.Close()
	got := map[string]bool{}
	for p := 0; p < 4; p++ {
		conn, err := kafka.DialLeader(ctx, "tcp", cl.ListenAddrs()[0], topic, p)
		if err != nil {
			t.Fatal(err)
		}
		last, err := conn.ReadLastOffset()
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: cl.ListenAddrs(), Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		for n := int64(0); n < last; n++ {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("partition %d offset %d: %v", p, n, err)
			}
			if string(m.Value) != "v-"+string(m.Key) {
				t.Fatalf("record %q has value %q", m.Key, m.Value)
			}
			got[string(m.Key)] = true
		}
		r.Close()
	}
	if len(got) != goroutines*each {
		t.Fatalf("read back %d distinct records, want %d", len(got), goroutines*each)
	}
}

// BenchmarkAcksAllProduce compares kfake's per-batch fsync with group commit:
// 64 goroutines each write one record at a time, synchronously with RequireAll,
// to an 8-partition topic through 1, 8 or 64 writers (connections); the
// writers batch like libs/kafkabus (2 ms linger).
//
//	go test ./libs/groupsync -run '^$' -bench AcksAllProduce -benchtime 4000x
func BenchmarkAcksAllProduce(b *testing.B) {
	for _, writers := range []int{1, 8, 64} {
		for _, mode := range []string{"per-batch", "group"} {
			b.Run(fmt.Sprintf("writers=%d/%s", writers, mode), func(b *testing.B) {
				benchProduce(b, writers, mode == "group")
			})
		}
	}
}

func benchProduce(b *testing.B, writers int, group bool) {
	dir := b.TempDir()
	var c *groupsync.Committer
	if group {
		c = newCommitter(b, dir)
	}
	cl := startBroker(b, dir, c, !group, kfake.SeedTopics(8, "bench"))
	defer cl.Close()
	ws := make([]*kafka.Writer, writers)
	ctx := context.Background()
	for i := range ws {
		ws[i] = newWriter(cl)
		ws[i].Topic = "bench"
		defer ws[i].Close()
		if err := ws[i].WriteMessages(ctx, kafka.Message{Value: []byte("warm-up")}); err != nil {
			b.Fatal(err)
		}
	}
	var before groupsync.Stats
	if c != nil {
		before = c.Stats()
	}
	value := make([]byte, 200)
	var next atomic.Int64
	b.SetParallelism(64 / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		id := next.Add(1)
		w := ws[int(id)%writers]
		for i := 0; pb.Next(); i++ {
			key := []byte(fmt.Sprintf("k%d-%d", id, i))
			if err := w.WriteMessages(ctx, kafka.Message{Key: key, Value: value}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	if c != nil {
		s := c.Stats()
		b.ReportMetric(float64(s.Released-before.Released)/float64(max(s.Syncs-before.Syncs, 1)), "responses/sync")
	}
}
