package kafkabus

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// BenchmarkCompression compresses and decompresses produce batches of 1, 10
// and 100 deltas shaped like fedbench's (one envelope per delta, a note patch
// of a few fields) with every codec kafka-go offers, reporting the compressed
// size as a share of the raw size and the CPU per delta: the figures behind
// DefaultCompression.
func BenchmarkCompression(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) { benchCompression(b, n) })
	}
}

func benchCompression(b *testing.B, batch int) {
	var raw bytes.Buffer
	for i := 0; i < batch; i++ {
		d := &fedsyncv1.Delta{Id: fmt.Sprintf("ai-%03d:doc-%d", i%53+1, i%4), DataType: "note",
			Patch:  []byte(fmt.Sprintf(`{"w%03d":{"seq":%d,"at":%d,"pad":"payload-%06d"}}`, i%53, i, 1764000000000000000+int64(i)*1000, i)),
			Writer: fmt.Sprintf("ai-%03d", i%53+1), Hlc: 1764000000000000000 + int64(i)*1000, MessageId: fmt.Sprintf("01KB%022d", i),
			Consistency: fedsyncv1.Consistency_CONSISTENCY_EVENTUAL, Region: "na", Priority: 5}
		payload, _ := proto.Marshal(d)
		env, _ := proto.Marshal(&fedsyncv1.SyncMessage{MessageId: d.MessageId, SenderId: d.Writer, Timestamp: d.Hlc,
			Type: fedsyncv1.MessageType_STATE_UPDATE, Payload: payload, Priority: 5, Metadata: map[string]string{"region": "na", "data_type": "note"}})
		raw.Write(env)
	}
	for _, name := range []string{"gzip", "snappy", "lz4", "zstd"} {
		codec := kafkaGoCodecs[name].Codec()
		b.Run(name, func(b *testing.B) {
			var out bytes.Buffer
			b.SetBytes(int64(raw.Len()))
			for i := 0; i < b.N; i++ {
				out.Reset()
				w := codec.NewWriter(&out)
				w.Write(raw.Bytes())
				w.Close()
				r := codec.NewReader(bytes.NewReader(out.Bytes()))
				var back bytes.Buffer
				back.ReadFrom(r)
				r.Close()
			}
			b.ReportMetric(float64(out.Len())/float64(raw.Len()), "size/raw")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/delta")
		})
	}
}

// kafkaGoCodecs are the codecs the benchmark measures (kafka-go's wrappers of
// the same klauspost and pierrec libraries franz-go uses).
var kafkaGoCodecs = map[string]kafka.Compression{"gzip": kafka.Gzip, "snappy": kafka.Snappy, "lz4": kafka.Lz4, "zstd": kafka.Zstd}
