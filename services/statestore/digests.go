package statestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/atrest"
	"github.com/fedsync/fedsync/libs/digest"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// maxDigestChanged bounds the documents changed after the asked position that
// one GetDigests reads from the log; a hub further behind asks again later.
const maxDigestChanged = 20000

// maxDigestNodes bounds the nodes of one GetDigests.
const maxDigestNodes = 1024

// GetDigests returns the children of the asked nodes of the digest tree of the
// current documents, leaving out those changed after req.after_seq (listed),
// all from one read transaction.
func (s *service) GetDigests(_ context.Context, req *fedsyncv1.GetDigestsRequest) (*fedsyncv1.GetDigestsResponse, error) {
	if n := len(req.GetNodes()); n > maxDigestNodes {
		return nil, apierr.New(apierr.InvalidArgument, "Field nodes has %d nodes; the limit is %d.", n, maxDigestNodes)
	}
	for _, n := range req.GetNodes() {
		if n.GetBucket() < -1 || n.GetBucket() >= digest.Buckets {
			return nil, apierr.New(apierr.InvalidArgument, "Field nodes: bucket %d is not -1 (the prefix) or a bucket 0-%d.", n.GetBucket(), digest.Buckets-1)
		}
	}
	return s.store.digests(req.GetAfterSeq(), req.GetNodes())
}

func (s *store) digests(after uint64, nodes []*fedsyncv1.DigestNode) (*fedsyncv1.GetDigestsResponse, error) {
	out := &fedsyncv1.GetDigestsResponse{}
	err := s.db.View(func(tx *bolt.Tx) error {
		changed, head, err := changedAfter(tx, after)
		if err != nil {
			return err
		}
		out.HeadSeq = head
		for id := range changed {
			out.Changed = append(out.Changed, id)
		}
		sort.Strings(out.Changed)
		docs := tx.Bucket(bucketDocs)
		if len(nodes) == 0 {
			sums := map[string]*digest.Sum{}
			err := eachLeaf(docs, nil, changed, func(id string, leaf *fedsyncv1.Leaf) {
				p := digest.Prefix(id)
				if sums[p] == nil {
					sums[p] = &digest.Sum{}
				}
				sums[p].Add(digest.Leaf(id, leaf.Version, leaf.ValueHash))
			})
			for p, sum := range sums {
				out.Digests = append(out.Digests, &fedsyncv1.Digest{Node: &fedsyncv1.DigestNode{Prefix: p, Bucket: -1}, Sum: sum.Sum, Count: sum.Count})
			}
			sortDigests(out.Digests)
			return err
		}
		for _, n := range nodes {
			prefix := n.GetPrefix()
			var sums [digest.Buckets]digest.Sum
			err := eachLeaf(docs, []byte(prefix), changed, func(id string, leaf *fedsyncv1.Leaf) {
				if digest.Prefix(id) != prefix {
					return // a longer prefix's document, or "" scanning everything
				}
				b := digest.Bucket(id)
				switch {
				case n.GetBucket() < 0:
					sums[b].Add(digest.Leaf(id, leaf.Version, leaf.ValueHash))
				case b == n.GetBucket():
					out.Leaves = append(out.Leaves, leaf)
				}
			})
			if err != nil {
				return err
			}
			if n.GetBucket() < 0 {
				for b, sum := range sums {
					if sum.Count > 0 {
						out.Digests = append(out.Digests, &fedsyncv1.Digest{Node: &fedsyncv1.DigestNode{Prefix: prefix, Bucket: int32(b)}, Sum: sum.Sum, Count: sum.Count})
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// changedAfter returns the ids of the log entries after `after`, and the head.
func changedAfter(tx *bolt.Tx, after uint64) (map[string]bool, uint64, error) {
	logb := tx.Bucket(bucketLog)
	head := logb.Sequence()
	if after > head {
		return nil, head, apierr.New(apierr.InvalidArgument, "Field after_seq %d is ahead of the log's head %d: this statestore's log restarted; ask again from its head.", after, head).
			WithDetail("head_seq", head)
	}
	c := logb.Cursor()
	if first, _ := c.First(); after < head && (first == nil || binary.BigEndian.Uint64(first) > after+1) {
		return nil, head, apierr.New(apierr.CursorExpired, "Position %d is older than the retained log; ask from a newer one.", after)
	}
	changed := map[string]bool{}
	for k, v := c.Seek(u64(after + 1)); k != nil; k, v = c.Next() {
		if len(changed) >= maxDigestChanged {
			return nil, head, apierr.New(apierr.Unavailable, "More than %d documents changed after position %d; ask from a newer one.", maxDigestChanged, after)
		}
		v, err := atrest.OpenValue(tx, bucketLog, k, v)
		if err != nil {
			return nil, head, err
		}
		msg := &fedsyncv1.SyncMessage{}
		if err := proto.Unmarshal(v, msg); err != nil {
			return nil, head, fmt.Errorf("decode log entry %d: %w", binary.BigEndian.Uint64(k), err)
		}
		id := msg.GetMetadata()[metaStateID]
		if id == "" { // an entry written before the metadata named the document
			ch := &fedsyncv1.Change{}
			if err := proto.Unmarshal(msg.GetPayload(), ch); err != nil {
				return nil, head, fmt.Errorf("decode log entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			id = ch.GetState().GetId()
		}
		changed[id] = true
	}
	return changed, head, nil
}

// eachLeaf calls fn with the leaf of every document whose id starts with
// prefix (all with nil), in id order, except the changed ones.
func eachLeaf(docs *bolt.Bucket, prefix []byte, changed map[string]bool, fn func(id string, leaf *fedsyncv1.Leaf)) error {
	c := docs.Cursor()
	k, v := c.First()
	if len(prefix) > 0 {
		k, v = c.Seek(prefix)
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		id := string(k)
		if changed[id] {
			continue
		}
		v, err := atrest.OpenValue(docs.Tx(), bucketDocs, k, v)
		if err != nil {
			return err
		}
		version, value, err := versionAndValue(v)
		if err != nil {
			return fmt.Errorf("decode state %s: %w", id, err)
		}
		fn(id, &fedsyncv1.Leaf{Id: id, Version: version, ValueHash: digest.ValueHash(value)})
	}
	return nil
}

// versionAndValue reads State.version and State.value from an encoded State
// without decoding the rest (its field metadata and vector clock are most of
// the cost of a whole decode, and a verification reads every document).
func versionAndValue(b []byte) (int64, []byte, error) {
	const valueField, versionField = 3, 4 // fedsync.v1.State
	var version int64
	var value []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, nil, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == valueField && typ == protowire.BytesType:
			value, n = protowire.ConsumeBytes(b)
		case num == versionField && typ == protowire.VarintType:
			var u uint64
			u, n = protowire.ConsumeVarint(b)
			version = int64(u)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return 0, nil, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return version, value, nil
}

func sortDigests(ds []*fedsyncv1.Digest) {
	sort.Slice(ds, func(i, j int) bool {
		a, b := ds[i].GetNode(), ds[j].GetNode()
		if a.GetPrefix() != b.GetPrefix() {
			return a.GetPrefix() < b.GetPrefix()
		}
		return a.GetBucket() < b.GetBucket()
	})
}
