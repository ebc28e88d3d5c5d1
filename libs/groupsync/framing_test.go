package groupsync

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// produce builds a whole produce request frame.
func produce(version int16, acks int16, txn *string, clientID string, corr int32) []byte {
	r := kmsg.NewPtrProduceRequest()
	r.Version, r.Acks, r.TransactionID, r.TimeoutMillis = version, acks, txn, 5000
	t := kmsg.NewProduceRequestTopic()
	t.Topic = "fedsync.deltas"
	p := kmsg.NewProduceRequestTopicPartition()
	p.Records = bytes.Repeat([]byte{7}, 300)
	t.Partitions = append(t.Partitions, p)
	r.Topics = append(r.Topics, t)
	return kmsg.NewRequestFormatter(kmsg.FormatterClientID(clientID)).AppendRequest(nil, r, corr)
}

func request(r kmsg.Request, corr int32) []byte {
	return kmsg.NewRequestFormatter(kmsg.FormatterClientID("c")).AppendRequest(nil, r, corr)
}

// produceWithHeaderTags builds a flexible produce request whose header carries
// tagged fields (the formatter never writes any).
func produceWithHeaderTags(acks int16, corr int32) []byte {
	r := kmsg.NewPtrProduceRequest()
	r.Version, r.Acks = 9, acks
	var b []byte
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint16(b, 9)
	b = binary.BigEndian.AppendUint32(b, uint32(corr))
	b = binary.BigEndian.AppendUint16(b, 2)
	b = append(b, "id"...)
	b = append(b, 2)                   // two tags
	b = append(b, 0, 3, 'a', 'b', 'c') // tag 0, 3 bytes
	b = append(b, 5, 1, 9)             // tag 5, 1 byte
	b = r.AppendTo(b)                  // body
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// requestStream is a mix of requests and the correlation ids that must wait.
func requestStream() ([]byte, []int32) {
	txn := "txn-1"
	long := strings.Repeat("x", 5000)
	frames := [][]byte{
		request(kmsg.NewPtrApiVersionsRequest(), 1),
		request(kmsg.NewPtrMetadataRequest(), 2),
		produce(0, -1, nil, "c", 3),
		produce(2, 0, nil, "c", 4),
		produce(3, 1, &txn, "c", 5),
		produce(7, 0, &txn, "c", 6),
		produce(9, -1, &txn, "c", 7),
		produce(9, 0, nil, "c", 8),
		request(kmsg.NewPtrFetchRequest(), 9),
		produce(11, -1, nil, long, 10),
		produceWithHeaderTags(-1, 11),
		produceWithHeaderTags(0, 12),
		produce(13, -1, &txn, "", 13),
		request(kmsg.NewPtrOffsetCommitRequest(), 14),
		produce(10, 0, nil, long, 15),
	}
	return bytes.Join(frames, nil), []int32{3, 7, 10, 11, 13} // 5 is acks=1: answered without a sync
}

// chunks cuts b into pieces of random sizes (1 to max bytes).
func chunks(b []byte, max int, rng *rand.Rand) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n := min(len(b), 1+rng.IntN(max))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

func TestRequestScannerChunking(t *testing.T) {
	stream, want := requestStream()
	rng := rand.New(rand.NewPCG(1, 2))
	cuts := map[string][][]byte{"whole": {stream}}
	for _, max := range []int{1, 2, 3, 7, 64, 4096} {
		cuts[fmt.Sprintf("max%d", max)] = chunks(stream, max, rng)
	}
	// Frames coalesced with a split just inside a size field and a header.
	cuts["boundaries"] = [][]byte{stream[:2], stream[2:13], stream[13:]}
	for name, parts := range cuts {
		var s requestScanner
		var got []int32
		for _, p := range parts {
			s.scan(p, func(corr int32) { got = append(got, corr) })
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: produce requests to sync %v, want %v", name, got, want)
		}
	}
}

func TestRequestScannerTruncatedProduceSyncs(t *testing.T) {
	// A produce frame that ends before its acks: its answer, if any, waits.
	frame := []byte{0, 0, 0, 10, 0, 0, 0, 3, 0, 0, 0, 42, 0, 5}
	var s requestScanner
	var got []int32
	s.scan(frame, func(corr int32) { got = append(got, corr) })
	next := request(kmsg.NewPtrMetadataRequest(), 43)
	s.scan(next, func(corr int32) { got = append(got, corr) })
	if !slices.Equal(got, []int32{42}) {
		t.Fatalf("got %v, want [42]", got)
	}
}

func TestClassify(t *testing.T) {
	txn := "t"
	for _, tc := range []struct {
		name  string
		frame []byte
		want  verdict
	}{
		{"metadata", request(kmsg.NewPtrMetadataRequest(), 1), notProduce},
		{"v0 acks=all", produce(0, -1, nil, "c", 1), mustSync},
		{"v3 acks=0 txn", produce(3, 0, &txn, "c", 1), noResponse},
		{"v9 acks=1", produce(9, 1, nil, "c", 1), leaderAck},
		{"v9 null client id", produce(9, 0, nil, "", 1), noResponse},
	} {
		corr, known, v := classify(tc.frame[4:])
		if v != tc.want || (v != notProduce && (!known || corr != 1)) {
			t.Errorf("%s: verdict %d corr %d known %v, want verdict %d corr 1", tc.name, v, corr, known, tc.want)
		}
		for n := 0; n < 12 && n < len(tc.frame)-4; n++ {
			if _, _, v := classify(tc.frame[4 : 4+n]); v != needMore && v != tc.want {
				t.Errorf("%s: %d-byte prefix gave verdict %d", tc.name, n, v)
			}
		}
	}
}

// response builds a response frame.
func response(corr int32, bodyLen int) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(4+bodyLen))
	b = binary.BigEndian.AppendUint32(b, uint32(corr))
	for i := 0; i < bodyLen; i++ {
		b = append(b, byte(corr)+byte(i))
	}
	return b
}

func TestResponseSplitChunking(t *testing.T) {
	var frames [][]byte
	var starts []int // offset of each response in the stream
	held := map[int32]bool{}
	off := 0
	for corr := int32(1); corr <= 40; corr++ {
		f := response(corr, int(corr*corr)%97)
		frames = append(frames, f)
		starts = append(starts, off)
		off += len(f)
		if corr%3 == 0 {
			held[corr] = true
		}
	}
	stream := bytes.Join(frames, nil)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, max := range []int{1, 3, 8, 9, 50, 1 << 20} {
		var s responseScanner
		var seen []int32
		check := func(corr int32) bool { seen = append(seen, corr); return held[corr] }
		var out []byte
		var holdAt []int
		for _, p := range chunks(stream, max, rng) {
			for _, pc := range s.split(p, check, nil) {
				if pc.hold {
					holdAt = append(holdAt, len(out))
				}
				out = append(out, pc.b...)
			}
		}
		if !bytes.Equal(out, stream) {
			t.Fatalf("max %d: pieces do not rebuild the stream", max)
		}
		if len(seen) != len(frames) {
			t.Fatalf("max %d: saw %d responses, want %d", max, len(seen), len(frames))
		}
		var wantAt []int
		for i, f := range frames {
			if held[int32(binary.BigEndian.Uint32(f[4:]))] {
				wantAt = append(wantAt, starts[i])
			}
		}
		if !slices.Equal(holdAt, wantAt) {
			t.Fatalf("max %d: holds at %v, want %v", max, holdAt, wantAt)
		}
	}
}

func TestResponseSplitPassThroughIsZeroCopy(t *testing.T) {
	stream := append(response(1, 10), response(2, 20)...)
	var s responseScanner
	pieces := s.split(stream, func(int32) bool { return false }, nil)
	if len(pieces) != 1 || &pieces[0].b[0] != &stream[0] || len(pieces[0].b) != len(stream) {
		t.Fatalf("non-produce responses should pass as one piece of the caller's buffer, got %d pieces", len(pieces))
	}
}
