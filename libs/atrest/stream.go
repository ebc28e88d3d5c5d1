package atrest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A sealed stream (a Raft snapshot, a backup) is a header (StreamMagic, the
// key id's length and the key id) and chunks of StreamChunk plaintext
// bytes, the last one shorter (possibly empty). Each chunk is
// [nonce][ciphertext][tag], sealed with AES-256-GCM and bound to the
// stream's purpose, its position and whether it is the last: a truncated,
// reordered or re-purposed stream does not open.
const StreamChunk = 64 << 10

// StreamMagic starts a sealed stream.
var StreamMagic = []byte("FSS1")

// ChunkOverhead is what sealing adds to a chunk: the GCM nonce and tag.
const ChunkOverhead = 12 + 16

func chunkAAD(purpose string, i uint64, last bool) []byte {
	b := binary.BigEndian.AppendUint64([]byte(purpose), i)
	if last {
		return append(b, 1)
	}
	return append(b, 0)
}

// StreamHeader is the header of a stream sealed with key id.
func StreamHeader(keyID string) []byte {
	h := append(append([]byte(nil), StreamMagic...), byte(len(keyID)))
	return append(h, keyID...)
}

// SealWriter seals what is written to it onto w, for purpose, with the
// ring's active key. Close seals the last chunk; it does not close w.
type SealWriter struct {
	w       io.Writer
	ring    *Keyring
	purpose string
	buf     []byte
	n       uint64
	started bool
}

// NewSealWriter seals onto w with ring's active key. Without a keyring
// (encryption at rest off) it writes the stream in the clear.
func NewSealWriter(w io.Writer, ring *Keyring, purpose string) io.WriteCloser {
	if ring == nil {
		return nopCloser{w}
	}
	return &SealWriter{w: w, ring: ring, purpose: purpose}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func (s *SealWriter) start() error {
	if s.started {
		return nil
	}
	s.started = true
	_, err := s.w.Write(StreamHeader(s.ring.Active()))
	return err
}

func (s *SealWriter) Write(p []byte) (int, error) {
	if err := s.start(); err != nil {
		return 0, err
	}
	written := 0
	for len(p) > 0 {
		take := min(StreamChunk-len(s.buf), len(p))
		s.buf = append(s.buf, p[:take]...)
		p, written = p[take:], written+take
		if len(s.buf) == StreamChunk {
			if err := s.flush(false); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (s *SealWriter) flush(last bool) error {
	sealed := s.ring.Seal(s.buf, chunkAAD(s.purpose, s.n, last))
	// The chunk without the value header: the key is in the stream's.
	_, body, _ := split(sealed)
	s.n++
	s.buf = s.buf[:0]
	_, err := s.w.Write(body)
	return err
}

// Close seals the last chunk.
func (s *SealWriter) Close() error {
	if err := s.start(); err != nil {
		return err
	}
	return s.flush(true)
}

// ErrNotSealedStream: the stream does not start with StreamMagic.
var ErrNotSealedStream = errors.New("not a sealed stream")

// ReadStreamHeader reads a sealed stream's header from r and returns the id
// of its key; ErrNotSealedStream when r does not start with one (what was
// read is lost: reopen r to read it in the clear).
func ReadStreamHeader(r io.Reader) (string, error) {
	head := make([]byte, len(StreamMagic)+1)
	if _, err := io.ReadFull(r, head); err != nil || string(head[:len(StreamMagic)]) != string(StreamMagic) {
		return "", ErrNotSealedStream
	}
	id := make([]byte, head[len(StreamMagic)])
	if _, err := io.ReadFull(r, id); err != nil {
		return "", fmt.Errorf("sealed stream header: %w", err)
	}
	return string(id), nil
}

// OpenReader opens the chunks of a stream sealed with key keyID for purpose
// (r is past the header), chunk by chunk: a full-size chunk is never the
// last one, a shorter one always is, and nothing may follow it.
type OpenReader struct {
	r       io.Reader
	ring    *Keyring
	purpose string
	prefix  []byte // the value header the chunks were sealed under
	n       uint64
	buf     []byte
	done    bool
	chunk   []byte
}

// NewOpenReader opens the chunks that follow a stream header naming keyID.
func NewOpenReader(r io.Reader, ring *Keyring, keyID, purpose string) (*OpenReader, error) {
	if ring == nil {
		return nil, fmt.Errorf("the stream is sealed with at-rest key %q, and no keyring is configured", keyID)
	}
	prefix := append(append([]byte(nil), magic...), byte(len(keyID)))
	return &OpenReader{r: r, ring: ring, purpose: purpose, prefix: append(prefix, keyID...), chunk: make([]byte, StreamChunk+ChunkOverhead)}, nil
}

func (o *OpenReader) Read(p []byte) (int, error) {
	for len(o.buf) == 0 {
		if o.done {
			return 0, io.EOF
		}
		got, err := io.ReadFull(o.r, o.chunk)
		last := got < len(o.chunk)
		if last && err != io.ErrUnexpectedEOF && err != io.EOF {
			return 0, err
		}
		if got < ChunkOverhead {
			return 0, fmt.Errorf("sealed stream truncated at chunk %d", o.n)
		}
		plain, err := o.ring.Open(append(append([]byte(nil), o.prefix...), o.chunk[:got]...), chunkAAD(o.purpose, o.n, last))
		if err != nil {
			if errors.Is(err, ErrNoKey) {
				return 0, err
			}
			return 0, fmt.Errorf("sealed stream chunk %d does not open (truncated, altered or another stream): %w", o.n, err)
		}
		o.n++
		o.buf, o.done = plain, last
	}
	n := copy(p, o.buf)
	o.buf = o.buf[n:]
	return n, nil
}

// OpenStream reads a stream written by a SealWriter for purpose: opened
// chunk by chunk when it is sealed (keyID names its key), as it is when it
// was written in the clear (keyID "").
func OpenStream(r io.Reader, ring *Keyring, purpose string) (plain io.Reader, keyID string, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if head, _ := br.Peek(len(StreamMagic)); !bytes.Equal(head, StreamMagic) {
		return br, "", nil
	}
	if keyID, err = ReadStreamHeader(br); err != nil {
		return nil, "", err
	}
	o, err := NewOpenReader(br, ring, keyID, purpose)
	if err != nil {
		return nil, keyID, err
	}
	return o, keyID, nil
}
