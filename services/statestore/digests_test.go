package statestore

import (
	"context"
	"fmt"
	"testing"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/digest"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// TestDigestTreeOfTheDocuments: the three levels of GetDigests agree with the
// documents Get returns, leave out what changed after the asked position, and
// the published change carries the hash of the value.
func TestDigestTreeOfTheDocuments(t *testing.T) {
	s, _ := newTestService(t, t.TempDir())
	ctx := context.Background()
	var ids []string
	for i := range 40 {
		id := fmt.Sprintf("ai-%03d:doc-%d", i%3, i)
		if i%10 == 9 {
			id = fmt.Sprintf("plain-%d", i) // no prefix
		}
		ids = append(ids, id)
		apply(t, s, &fedsyncv1.ApplyRequest{Id: id, DataType: "note", Patch: []byte(fmt.Sprintf(`{"n":%d}`, i)), MessageId: fmt.Sprintf("m%d", i), Writer: "ai-001"})
	}
	want := map[string]digest.Sum{}
	leaves := map[string]*fedsyncv1.Leaf{}
	for _, id := range ids {
		got, err := s.Get(ctx, &fedsyncv1.GetRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		h := digest.ValueHash(got.GetState().GetValue())
		leaves[id] = &fedsyncv1.Leaf{Id: id, Version: got.GetState().GetVersion(), ValueHash: h}
		sum := want[digest.Prefix(id)]
		sum.Add(digest.Leaf(id, got.GetState().GetVersion(), h))
		want[digest.Prefix(id)] = sum
	}
	root, err := s.GetDigests(ctx, &fedsyncv1.GetDigestsRequest{AfterSeq: 40})
	if err != nil {
		t.Fatal(err)
	}
	if root.GetHeadSeq() != 40 || len(root.GetChanged()) != 0 || len(root.GetDigests()) != len(want) {
		t.Fatalf("root: head %d, changed %v, %d digests; want 40, none, %d", root.GetHeadSeq(), root.GetChanged(), len(root.GetDigests()), len(want))
	}
	for _, d := range root.GetDigests() {
		if w := want[d.GetNode().GetPrefix()]; d.GetNode().GetBucket() != -1 || w.Sum != d.GetSum() || w.Count != d.GetCount() {
			t.Errorf("prefix %q: %+v; want %+v", d.GetNode().GetPrefix(), d, w)
		}
	}

	// Buckets, then the leaves of one bucket, of prefix ai-001: and of "".
	for _, prefix := range []string{"ai-001:", ""} {
		bs, err := s.GetDigests(ctx, &fedsyncv1.GetDigestsRequest{AfterSeq: 40, Nodes: []*fedsyncv1.DigestNode{{Prefix: prefix, Bucket: -1}}})
		if err != nil {
			t.Fatal(err)
		}
		var total digest.Sum
		for _, d := range bs.GetDigests() {
			total.Sum += d.GetSum()
			total.Count += d.GetCount()
			ls, err := s.GetDigests(ctx, &fedsyncv1.GetDigestsRequest{AfterSeq: 40, Nodes: []*fedsyncv1.DigestNode{d.GetNode()}})
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(ls.GetLeaves())) != d.GetCount() {
				t.Fatalf("bucket %v: %d leaves, digest counts %d", d.GetNode(), len(ls.GetLeaves()), d.GetCount())
			}
			for _, l := range ls.GetLeaves() {
				if w := leaves[l.GetId()]; w == nil || w.GetVersion() != l.GetVersion() || w.GetValueHash() != l.GetValueHash() || digest.Bucket(l.GetId()) != d.GetNode().GetBucket() {
					t.Errorf("leaf %+v; want %+v in bucket %d", l, w, d.GetNode().GetBucket())
				}
			}
		}
		if w := want[prefix]; total != w {
			t.Errorf("buckets of %q add up to %+v; the prefix is %+v", prefix, total, w)
		}
	}

	// Changed after position 40: left out, and listed.
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "ai-001:doc-1", DataType: "note", Patch: []byte(`{"n":"changed"}`), MessageId: "later", Writer: "ai-001"})
	later, err := s.GetDigests(ctx, &fedsyncv1.GetDigestsRequest{AfterSeq: 40})
	if err != nil {
		t.Fatal(err)
	}
	w := want["ai-001:"]
	w.Remove(digest.Leaf("ai-001:doc-1", leaves["ai-001:doc-1"].GetVersion(), leaves["ai-001:doc-1"].GetValueHash()))
	for _, d := range later.GetDigests() {
		if d.GetNode().GetPrefix() == "ai-001:" && (d.GetSum() != w.Sum || d.GetCount() != w.Count) {
			t.Errorf("ai-001: after a later change: %+v; want %+v without ai-001:doc-1", d, w)
		}
	}
	if later.GetHeadSeq() != 41 || len(later.GetChanged()) != 1 || later.GetChanged()[0] != "ai-001:doc-1" {
		t.Errorf("head %d changed %v; want 41 [ai-001:doc-1]", later.GetHeadSeq(), later.GetChanged())
	}
	// The change on the log carries its value's hash.
	lg, err := s.ReadLog(ctx, &fedsyncv1.ReadLogRequest{AfterSeq: 40, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if c := lg.GetChanges()[0]; c.GetValueHash() != digest.ValueHash(c.GetState().GetValue()) || c.GetValueHash() == 0 {
		t.Errorf("change value_hash %x; value hashes to %x", c.GetValueHash(), digest.ValueHash(c.GetState().GetValue()))
	}
}

func TestDigestsRefuseBadRequests(t *testing.T) {
	s, _ := newTestService(t, t.TempDir())
	ctx := context.Background()
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "ai-001:a", DataType: "note", Patch: []byte(`{}`), MessageId: "m", Writer: "ai-001"})
	for name, req := range map[string]*fedsyncv1.GetDigestsRequest{
		"ahead of the log": {AfterSeq: 5},
		"bucket 64":        {AfterSeq: 1, Nodes: []*fedsyncv1.DigestNode{{Prefix: "ai-001:", Bucket: 64}}},
		"bucket -2":        {AfterSeq: 1, Nodes: []*fedsyncv1.DigestNode{{Prefix: "ai-001:", Bucket: -2}}},
		"too many nodes":   {AfterSeq: 1, Nodes: make([]*fedsyncv1.DigestNode, maxDigestNodes+1)},
	} {
		if _, err := s.GetDigests(ctx, req); apierr.As(err).Code != apierr.InvalidArgument {
			t.Errorf("%s: %v; want invalid_argument", name, err)
		}
	}
}

// BenchmarkDigestsRoot is the statestore side of one verification that finds
// nothing: the prefix digests of 100,000 documents in 53 prefixes, against a
// Get of one document in the same store.
func BenchmarkDigestsRoot(b *testing.B) {
	s, st := newTestService(b, b.TempDir())
	ctx := context.Background()
	const n = 100_000
	for i := 0; i < n; i += 1000 {
		req := &fedsyncv1.ApplyBatchRequest{}
		for j := i; j < i+1000; j++ {
			req.Items = append(req.Items, &fedsyncv1.ApplyRequest{Id: fmt.Sprintf("ai-%03d:doc-%d", j%53, j), DataType: "note",
				Patch: []byte(fmt.Sprintf(`{"n":%d,"text":"some words of a note of an agent"}`, j)), MessageId: fmt.Sprintf("m%d", j), Writer: "ai-001"})
		}
		if _, err := s.ApplyBatch(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	head, _ := st.head()
	b.Run("digests", func(b *testing.B) {
		for range b.N {
			if _, err := s.GetDigests(ctx, &fedsyncv1.GetDigestsRequest{AfterSeq: head}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("get", func(b *testing.B) {
		for range b.N {
			if _, err := s.Get(ctx, &fedsyncv1.GetRequest{Id: "ai-001:doc-1"}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
