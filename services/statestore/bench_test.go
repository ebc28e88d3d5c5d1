package statestore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

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
