package statestore

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/fedsync/fedsync/libs/atrest"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// BenchmarkApplyBatch commits batches of deltas into a real bbolt file (fsync
// per transaction): small patches on 64 documents, and 64 KiB values (the
// large preset's shape), in the clear and sealed at rest (AES-256-GCM). ns/op
// is per batch; the ms/delta metric is per item.
func BenchmarkApplyBatch(b *testing.B) {
	for _, c := range []struct {
		name   string
		items  int
		value  int
		sealed bool
	}{{"small-x100", 100, 20, false}, {"small-x100-sealed", 100, 20, true}, {"64KiB-x8", 8, 64 << 10, false},
		{"64KiB-x8-sealed", 8, 64 << 10, true}, {"64KiB-x32", 32, 64 << 10, false}} {
		b.Run(c.name, func(b *testing.B) {
			s, st := newTestService(b, b.TempDir())
			if c.sealed {
				raw, _ := json.Marshal(atrest.NewKeyFile("k1"))
				v, err := atrest.NewVault(atrest.StaticSource(raw))
				if err != nil {
					b.Fatal(err)
				}
				atrest.Register(st.db, v)
				b.Cleanup(func() { atrest.Forget(st.db) })
			}
			big := strings.Repeat("x", c.value)
			ctx := context.Background()
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				req := &fedsyncv1.ApplyBatchRequest{}
				for i := 0; i < c.items; i++ {
					req.Items = append(req.Items, &fedsyncv1.ApplyRequest{Id: fmt.Sprintf("doc-%d", i%64), DataType: "note", Writer: "ai-001",
						MessageId:   fmt.Sprintf("m-%d-%d", n, i),
						PatchFields: map[string][]byte{fmt.Sprintf("f%d", i%4): []byte(`"` + big + `"`)}})
				}
				resp, err := s.ApplyBatch(ctx, req)
				if err != nil || resp.Results[0].ErrorCode != "" {
					b.Fatal(err, resp.Results[0])
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N*c.items), "ms/delta")
		})
	}
}

// BenchmarkDiskPerDelta commits 50,000 deltas (the 10-minute soak's count:
// 53 agents' small patches on 530 documents, in batches of 100), marking
// each batch published, and reports the store file's bytes per delta at the
// end: with the log bounded only by its default count (1,000,000 changes,
// so unbounded over this run) and with a 4 MiB size bound. The applied
// message ids (the dedup window, 7 days) are kept in both.
func BenchmarkDiskPerDelta(b *testing.B) {
	for _, c := range []struct {
		name string
		r    LogRetention
	}{{"count-1M", LogRetention{Count: 1_000_000}}, {"bytes-4MiB", LogRetention{Count: 1_000_000, Bytes: 4 << 20}}} {
		b.Run(c.name, func(b *testing.B) {
			for n := 0; n < b.N; n++ {
				dir := b.TempDir()
				s, st := newTestService(b, dir)
				ctx := context.Background()
				const total, batch = 50000, 100
				for k := 0; k < total/batch; k++ {
					req := &fedsyncv1.ApplyBatchRequest{}
					for i := 0; i < batch; i++ {
						m := k*batch + i
						req.Items = append(req.Items, &fedsyncv1.ApplyRequest{Id: fmt.Sprintf("ai-%03d:doc-%d", m%53, m%10), DataType: "note", Writer: fmt.Sprintf("ai-%03d", m%53),
							MessageId: fmt.Sprintf("m-%d", m), PatchFields: map[string][]byte{fmt.Sprintf("f%d", m%8): []byte(fmt.Sprintf(`{"n":%d,"note":"a small change"}`, m))}})
					}
					if _, err := s.ApplyBatch(ctx, req); err != nil {
						b.Fatal(err)
					}
					head, _ := st.head()
					if _, err := s.repl.propose(ctx, &command{kind: cmdPublished, now: st.now().UnixNano(), seq: head, retention: c.r.Count, retentionBytes: c.r.Bytes}); err != nil {
						b.Fatal(err)
					}
				}
				info, err := os.Stat(filepath.Join(dir, "statestore.db"))
				if err != nil {
					b.Fatal(err)
				}
				st.db.View(func(tx *bolt.Tx) error {
					for _, name := range [][]byte{bucketLog, bucketApplied, bucketOutcomes, bucketDocs} {
						bs := tx.Bucket(name).Stats()
						b.ReportMetric(float64(bs.LeafInuse+bs.BranchInuse)/(1<<20), string(name)+"-MiB")
					}
					b.ReportMetric(float64(tx.DB().Stats().FreePageN*tx.DB().Info().PageSize)/(1<<20), "free-MiB")
					return nil
				})
				b.ReportMetric(float64(info.Size())/total, "file-bytes/delta")
				b.ReportMetric(float64(info.Size())/(1<<20), "file-MiB")
			}
		})
	}
}
