package groupsync

import "encoding/binary"

// Kafka frames every request and response with a big-endian int32 size.
// Requests then carry int16 api_key, int16 api_version, int32 correlation_id,
// a nullable client id (int16 length) and, in flexible versions, tagged
// fields; responses carry int32 correlation_id first. Connections deliver the
// bytes in arbitrary chunks, so both scanners keep their place across calls.

const (
	apiKeyProduce = 0
	// maxPrefix bounds how much of a request is buffered to find a produce
	// request's acks; client and transactional ids are at most 32767 bytes.
	maxPrefix = 1 << 17
)

// verdict is what the start of a request says about it.
type verdict int

const (
	needMore   verdict = iota // the prefix ends before the answer
	notProduce                // not a produce request: its response passes through
	noResponse                // a produce request with acks=0: the broker does not answer
	leaderAck                 // a produce request with acks=1: answered once the leader has it, without a sync
	mustSync                  // a produce request (acks=all) whose response waits for a sync
)

// classify reads the start of a request body (after the size). corrKnown
// reports whether corr was read, even when the verdict is needMore.
func classify(b []byte) (corr int32, corrKnown bool, v verdict) {
	if len(b) < 2 {
		return 0, false, needMore
	}
	if int16(binary.BigEndian.Uint16(b)) != apiKeyProduce {
		return 0, false, notProduce
	}
	if len(b) < 8 {
		return 0, false, needMore
	}
	version := int16(binary.BigEndian.Uint16(b[2:]))
	corr = int32(binary.BigEndian.Uint32(b[4:]))
	r := reader{b: b[8:]}
	r.skipString() // client id, never compact
	if version >= 9 {
		r.skipTags()
	}
	if version >= 3 { // transactional id
		if version >= 9 {
			r.skipCompactString()
		} else {
			r.skipString()
		}
	}
	acks := r.int16()
	switch {
	case r.short:
		return corr, true, needMore
	case r.bad:
		return corr, true, mustSync // cannot tell: answer durably
	case acks == 0:
		return corr, true, noResponse
	case acks == 1:
		return corr, true, leaderAck
	}
	return corr, true, mustSync
}

// reader walks a byte slice, noting a short read or malformed data.
type reader struct {
	b          []byte
	short, bad bool
}

func (r *reader) skip(n int) {
	switch {
	case r.short || r.bad:
	case n < 0:
		r.bad = true
	case n > len(r.b):
		r.short = true
	default:
		r.b = r.b[n:]
	}
}

func (r *reader) int16() int16 {
	if r.short || r.bad {
		return 0
	}
	if len(r.b) < 2 {
		r.short = true
		return 0
	}
	v := int16(binary.BigEndian.Uint16(r.b))
	r.b = r.b[2:]
	return v
}

func (r *reader) uvarint() uint64 {
	if r.short || r.bad {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	switch {
	case n == 0:
		r.short = true
	case n < 0:
		r.bad = true
	default:
		r.b = r.b[n:]
	}
	return v
}

// skipString skips a nullable string with an int16 length (-1 is null).
func (r *reader) skipString() {
	if n := r.int16(); n > 0 {
		r.skip(int(n))
	} else if n < -1 {
		r.bad = true
	}
}

// skipCompactString skips a nullable string with a uvarint length+1 (0 is null).
func (r *reader) skipCompactString() {
	n := r.uvarint()
	if n > maxPrefix {
		r.bad = true
	} else if n > 0 {
		r.skip(int(n - 1))
	}
}

// skipTags skips a tagged-fields section: a count, then tag, size, data.
func (r *reader) skipTags() {
	n := r.uvarint()
	for i := uint64(0); i < n && !r.short && !r.bad; i++ {
		r.uvarint()
		size := r.uvarint()
		if size > maxPrefix {
			r.bad = true
			return
		}
		r.skip(int(size))
	}
}

// requestScanner follows the client-to-broker stream of one connection and
// reports the correlation id of every produce request that will be answered.
type requestScanner struct {
	size    [4]byte
	sizeN   int    // bytes of size read so far
	inBody  bool   // reading a frame's body
	left    int    // body bytes not yet seen
	prefix  []byte // the body's start, while undecided
	decided bool
}

// scan consumes the next bytes of the stream; produce is called once for each
// produce request whose response must wait for a sync, as soon as its start has
// been seen (always before the request is complete).
func (s *requestScanner) scan(p []byte, produce func(corr int32)) {
	for len(p) > 0 {
		if !s.inBody {
			n := copy(s.size[s.sizeN:], p)
			s.sizeN += n
			p = p[n:]
			if s.sizeN < 4 {
				return
			}
			s.sizeN = 0
			size := int32(binary.BigEndian.Uint32(s.size[:]))
			if size <= 0 {
				continue // the broker drops the connection
			}
			s.inBody, s.left, s.prefix, s.decided = true, int(size), s.prefix[:0], false
			continue
		}
		n := min(len(p), s.left)
		chunk := p[:n]
		p = p[n:]
		s.left -= n
		if !s.decided {
			var (
				corr  int32
				known bool
				v     verdict
			)
			if len(s.prefix) == 0 {
				corr, known, v = classify(chunk)
			} else {
				s.prefix = append(s.prefix, chunk[:min(len(chunk), maxPrefix-len(s.prefix))]...)
				corr, known, v = classify(s.prefix)
			}
			if v == needMore && len(s.prefix) == 0 {
				s.prefix = append(s.prefix, chunk[:min(len(chunk), maxPrefix)]...)
			}
			if v == needMore && (s.left == 0 || len(s.prefix) >= maxPrefix) && known {
				v = mustSync // the request ended or grew too long before its acks
			}
			switch v {
			case mustSync:
				produce(corr)
				s.decided = true
			case notProduce, noResponse, leaderAck:
				s.decided = true
			}
		}
		if s.left == 0 {
			s.inBody = false
		}
	}
}

// piece is a run of response bytes; hold marks a produce response's start,
// which must not be written before a sync completes.
type piece struct {
	b    []byte
	hold bool
}

// responseScanner follows the broker-to-client stream of one connection and
// cuts it where held produce responses begin.
type responseScanner struct {
	hdr  [8]byte // size and correlation id of the current response
	hdrN int
	left int // bytes of the current response after its header
}

// split appends to out the pieces of p in order. A header split across calls is
// kept until it is complete and then emitted as its own piece (a copy); bytes
// of an incomplete header at the end of p are kept, not emitted. held reports,
// and forgets, whether corr is a produce request waiting for a sync.
func (s *responseScanner) split(p []byte, held func(corr int32) bool, out []piece) []piece {
	start, hold := 0, false // the current run p[start:i] and whether it starts a held response
	flush := func(i int) {
		if i > start {
			out = append(out, piece{b: p[start:i], hold: hold})
		}
		start, hold = i, false
	}
	i := 0
	for i < len(p) {
		if s.left > 0 {
			n := min(len(p)-i, s.left)
			i += n
			s.left -= n
			continue
		}
		if s.hdrN == 0 && len(p)-i >= 8 {
			if held(s.begin(p[i : i+8])) {
				flush(i)
				hold = true
			}
			i += 8
			continue
		}
		flush(i)
		n := copy(s.hdr[s.hdrN:], p[i:])
		s.hdrN += n
		i += n
		start = i
		if s.hdrN < 8 {
			return out
		}
		s.hdrN = 0
		hdr := append([]byte(nil), s.hdr[:]...)
		out = append(out, piece{b: hdr, hold: held(s.begin(hdr))})
	}
	flush(i)
	return out
}

// begin starts a response from its 8-byte header and returns its correlation id.
func (s *responseScanner) begin(hdr []byte) int32 {
	size := int32(binary.BigEndian.Uint32(hdr))
	s.left = max(int(size)-4, 0)
	return int32(binary.BigEndian.Uint32(hdr[4:]))
}
