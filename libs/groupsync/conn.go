package groupsync

import (
	"errors"
	"net"
	"sync"
)

// maxQueued bounds the response bytes a connection keeps while a produce
// response at their head waits for a sync; the broker's writes block beyond it.
const maxQueued = 64 << 20

var errClosed = errors.New("groupsync: connection closed")

// Listen wraps a broker's listener: responses to produce requests that expect an
// answer are written only after a sync of c that started once they were ready.
// The wrapper must see the plain Kafka protocol, so it cannot sit under TLS
// (kfake.TLS wraps the listener that kfake.ListenFn returns).
func Listen(inner net.Listener, c *Committer) net.Listener {
	return &listener{Listener: inner, c: c}
}

// ListenFn returns a listen function for kfake.ListenFn that wraps what listen
// (net.Listen when nil) returns with Listen.
func (c *Committer) ListenFn(listen func(network, address string) (net.Listener, error)) func(network, address string) (net.Listener, error) {
	if listen == nil {
		listen = net.Listen
	}
	return func(network, address string) (net.Listener, error) {
		l, err := listen(network, address)
		if err != nil {
			return nil, err
		}
		return Listen(l, c), nil
	}
}

type listener struct {
	net.Listener
	c *Committer
}

func (l *listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newConn(nc, l.c), nil
}

// chunk is queued output: response bytes, or a ticket that must be done before
// the bytes after it are written.
type chunk struct {
	b      []byte
	ticket *Ticket
}

// conn is one broker connection. The broker reads it from one goroutine and
// writes it from one goroutine; a flusher goroutine runs while responses are
// queued behind a held produce response.
type conn struct {
	net.Conn
	c      *Committer
	closed chan struct{}
	once   sync.Once

	reqs requestScanner // used only by the reading goroutine

	pendMu  sync.Mutex
	pending map[int32]struct{} // produce requests whose responses must wait

	mu       sync.Mutex
	cond     *sync.Cond // signalled when the queue shrinks or the connection fails
	resps    responseScanner
	pieces   []piece
	queue    []chunk
	queued   int  // bytes in queue
	flushing bool // the flusher owns writes to Conn
	err      error
}

func newConn(nc net.Conn, c *Committer) *conn {
	cn := &conn{Conn: nc, c: c, closed: make(chan struct{}), pending: map[int32]struct{}{}}
	cn.cond = sync.NewCond(&cn.mu)
	return cn
}

// Read notes produce requests before the broker can see (and answer) them.
func (cn *conn) Read(p []byte) (int, error) {
	n, err := cn.Conn.Read(p)
	if n > 0 {
		cn.reqs.scan(p[:n], cn.expect)
	}
	return n, err
}

func (cn *conn) expect(corr int32) {
	cn.pendMu.Lock()
	cn.pending[corr] = struct{}{}
	cn.pendMu.Unlock()
}

func (cn *conn) held(corr int32) bool {
	cn.pendMu.Lock()
	defer cn.pendMu.Unlock()
	if _, ok := cn.pending[corr]; ok {
		delete(cn.pending, corr)
		return true
	}
	return false
}

// Write passes responses straight through until a produce response that must
// wait begins; from there on, bytes are queued in order for the flusher, which
// writes them once the sync requested for that response has completed.
func (cn *conn) Write(p []byte) (int, error) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	for cn.err == nil && cn.queued > maxQueued {
		cn.cond.Wait()
	}
	if cn.err != nil {
		return 0, cn.err
	}
	cn.pieces = cn.resps.split(p, cn.held, cn.pieces[:0])
	var direct net.Buffers
	for _, pc := range cn.pieces {
		if pc.hold {
			cn.queue = append(cn.queue, chunk{ticket: cn.c.Request()})
		}
		if len(cn.queue) > 0 || cn.flushing {
			cn.queue = append(cn.queue, chunk{b: append([]byte(nil), pc.b...)})
			cn.queued += len(pc.b)
		} else {
			direct = append(direct, pc.b)
		}
	}
	if len(direct) > 0 {
		// Nothing is queued, so nothing else writes to Conn now.
		if _, err := direct.WriteTo(cn.Conn); err != nil {
			cn.err = err
			cn.cond.Broadcast()
			return 0, err
		}
	}
	if len(cn.queue) > 0 && !cn.flushing {
		cn.flushing = true
		go cn.flush()
	}
	return len(p), nil
}

// flush writes the queue in order, waiting at each ticket for its sync.
func (cn *conn) flush() {
	var backing [][]byte // reused across writes: WriteTo consumes the Buffers it is given
	for {
		cn.mu.Lock()
		if cn.err != nil || len(cn.queue) == 0 {
			cn.flushing = false
			cn.cond.Broadcast()
			cn.mu.Unlock()
			return
		}
		if t := cn.queue[0].ticket; t != nil {
			cn.mu.Unlock()
			select {
			case <-t.Done():
			case <-cn.closed:
				cn.fail(errClosed)
				continue
			}
			if err := t.Err(); err != nil {
				// The data may not be on disk: never acknowledge it. Closing makes
				// the client retry on a new connection.
				cn.fail(err)
				cn.Close()
				continue
			}
			cn.mu.Lock()
			if cn.err == nil { // only this goroutine removes chunks, or fails
				cn.c.released.Add(1)
				cn.queue[0] = chunk{}
				cn.queue = cn.queue[1:]
			}
			cn.mu.Unlock()
			continue
		}
		bufs := net.Buffers(backing[:0])
		k, n := 0, 0
		for ; k < len(cn.queue) && cn.queue[k].ticket == nil; k++ {
			bufs = append(bufs, cn.queue[k].b)
			n += len(cn.queue[k].b)
			cn.queue[k] = chunk{}
		}
		cn.queue = cn.queue[k:]
		cn.queued -= n
		cn.cond.Broadcast()
		cn.mu.Unlock()
		backing = bufs
		_, err := bufs.WriteTo(cn.Conn)
		clear(backing) // keep no written responses alive
		if err != nil {
			cn.fail(err)
			cn.Close()
		}
	}
}

func (cn *conn) fail(err error) {
	cn.mu.Lock()
	if cn.err == nil {
		cn.err = err
	}
	cn.queue, cn.queued = nil, 0
	cn.cond.Broadcast()
	cn.mu.Unlock()
}

// Close closes the connection; queued responses are dropped.
func (cn *conn) Close() error {
	err := cn.Conn.Close()
	cn.once.Do(func() { close(cn.closed) })
	return err
}
