package groupsync

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// fakeConn plays the client side: Read returns the requests given to it, Write
// records what the client would receive.
type fakeConn struct {
	net.Conn // nil; methods not overridden are not used
	in       *bytes.Reader

	mu     sync.Mutex
	out    bytes.Buffer
	closed bool
}

func (f *fakeConn) Read(p []byte) (int, error) { return f.in.Read(p) }

func (f *fakeConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, net.ErrClosed
	}
	return f.out.Write(p)
}

func (f *fakeConn) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	return nil
}

func (f *fakeConn) received() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.out.Bytes()...)
}

func (f *fakeConn) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// readAll lets the broker side read every request, a few bytes at a time as
// kfake does (size, then body).
func readAll(t *testing.T, cn *conn) {
	t.Helper()
	buf := make([]byte, 5)
	for {
		if _, err := cn.Read(buf); err == io.EOF {
			return
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting until %s", what)
}

func TestConnHoldsProduceResponsesUntilSync(t *testing.T) {
	g := newGatedSync()
	c := NewCommitter(g.sync, t.Logf)
	reqs := bytes.Join([][]byte{
		produce(9, -1, nil, "c", 1),
		request(kmsg.NewPtrMetadataRequest(), 2),
		produce(9, 0, nil, "c", 3), // acks=0: never answered
		request(kmsg.NewPtrFetchRequest(), 4),
	}, nil)
	fc := &fakeConn{in: bytes.NewReader(reqs)}
	cn := newConn(fc, c)
	readAll(t, cn)

	meta, prod, fetch := response(2, 30), response(1, 40), response(4, 50)
	// A response that waits for nothing passes through at once, in the caller.
	if _, err := cn.Write(meta); err != nil {
		t.Fatal(err)
	}
	if got := fc.received(); !bytes.Equal(got, meta) {
		t.Fatalf("metadata response not passed through: %d bytes", len(got))
	}
	// The produce response waits for a sync; the fetch response queues behind it.
	for _, r := range [][]byte{prod, fetch} {
		if _, err := cn.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	waitStarted(t, g, 1)
	time.Sleep(10 * time.Millisecond)
	if got := fc.received(); !bytes.Equal(got, meta) {
		t.Fatalf("wrote %d bytes before the sync completed", len(got)-len(meta))
	}
	g.release <- nil
	want := bytes.Join([][]byte{meta, prod, fetch}, nil)
	eventually(t, "held responses are written in order", func() bool { return bytes.Equal(fc.received(), want) })
	// With the queue drained, responses pass through directly again.
	later := response(99, 5)
	cn.Write(later)
	if got := fc.received(); !bytes.Equal(got, append(want, later...)) {
		t.Fatal("response after the drained queue not passed through")
	}
	if s := c.Stats(); s.Released != 1 || s.Syncs != 1 {
		t.Fatalf("stats %+v, want 1 response released by 1 sync", s)
	}
}

func TestConnFailsClosedOnSyncError(t *testing.T) {
	g := newGatedSync()
	c := NewCommitter(g.sync, func(string, ...any) {})
	fc := &fakeConn{in: bytes.NewReader(produce(3, -1, nil, "c", 7))}
	cn := newConn(fc, c)
	readAll(t, cn)
	if _, err := cn.Write(response(7, 20)); err != nil {
		t.Fatal(err)
	}
	waitStarted(t, g, 1)
	g.release <- errors.New("EIO")
	eventually(t, "the connection is closed", fc.isClosed)
	if got := fc.received(); len(got) != 0 {
		t.Fatalf("acknowledged %d bytes after a failed sync", len(got))
	}
	eventually(t, "writes fail", func() bool {
		_, err := cn.Write(response(8, 1))
		return err != nil
	})
	if s := c.Stats(); s.Released != 0 || s.Failures != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestConnSplitAndCoalescedWrites(t *testing.T) {
	var reqs, resps [][]byte
	produces := 0
	for corr := int32(1); corr <= 60; corr++ {
		switch corr % 4 {
		case 0:
			reqs = append(reqs, request(kmsg.NewPtrMetadataRequest(), corr))
		case 1:
			reqs = append(reqs, produce(9, 0, nil, "c", corr))
			continue // no response
		default:
			reqs = append(reqs, produce(7, -1, nil, "c", corr))
			produces++
		}
		resps = append(resps, response(corr, int(corr)*7%61))
	}
	fc := &fakeConn{in: bytes.NewReader(bytes.Join(reqs, nil))}
	c := NewCommitter(func() error { time.Sleep(100 * time.Microsecond); return nil }, t.Logf)
	cn := newConn(fc, c)
	readAll(t, cn)
	want := bytes.Join(resps, nil)
	rng := rand.New(rand.NewPCG(5, 6))
	for _, p := range chunks(want, 23, rng) {
		if _, err := cn.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "every response is written", func() bool { return len(fc.received()) == len(want) })
	if !bytes.Equal(fc.received(), want) {
		t.Fatal("responses reordered or corrupted")
	}
	if s := c.Stats(); s.Released != uint64(produces) || s.Syncs == 0 {
		t.Fatalf("stats %+v, want %d produce responses released", s, produces)
	}
}
