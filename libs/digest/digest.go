// Package digest is the Merkle-style digest tree that consistency verification
// (seed 8.2) compares a regional hub's view of the committed state with
// statestore by. Both sides compute it with these functions.
//
// The tree has three levels under the root: id prefixes (an id up to and
// including its first ':', the owning agent's namespace), then Buckets buckets
// per prefix by a hash of the id, then the documents. A node's digest is the sum
// (mod 2^64) of its documents' leaf hashes and their count: it is updated in
// O(1) when one document changes, and two sides compare a whole prefix by one
// number, descending only into the parts that differ.
package digest

import (
	"encoding/binary"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// Buckets is the number of buckets under each prefix.
const Buckets = 64

// ValueHash is the hash of a stored document's value (its JSON bytes).
func ValueHash(value []byte) uint64 { return xxhash.Sum64(value) }

// Leaf is the hash of one document at one version with one value.
func Leaf(id string, version int64, valueHash uint64) uint64 {
	var d xxhash.Digest
	d.Reset()
	d.WriteString(id)
	var b [17]byte // 0, version, value hash: an id never holds a NUL
	binary.BigEndian.PutUint64(b[1:9], uint64(version))
	binary.BigEndian.PutUint64(b[9:], valueHash)
	d.Write(b[:])
	return d.Sum64()
}

// Prefix is the prefix node of id: up to and including its first ':', or ""
// for an id without one.
func Prefix(id string) string {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		return id[:i+1]
	}
	return ""
}

// Bucket is the bucket of id within its prefix.
func Bucket(id string) int32 { return int32(xxhash.Sum64String(id) % Buckets) }

// Sum is a node's digest.
type Sum struct {
	Sum   uint64
	Count int64
}

// Add counts a leaf in.
func (s *Sum) Add(leaf uint64) { s.Sum += leaf; s.Count++ }

// Remove counts a leaf out.
func (s *Sum) Remove(leaf uint64) { s.Sum -= leaf; s.Count-- }
