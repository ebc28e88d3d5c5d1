package broadcaster

import (
	"context"
	"sort"
	"testing"

	"github.com/fedsync/fedsync/libs/digest"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// GetDigests serves the digest tree of the log's latest documents the way
// statestore does (services/statestore/digests.go; its own tests check it on
// bbolt), so the hub's side can be tested against it.
func (l *memLog) GetDigests(_ context.Context, req *fedsyncv1.GetDigestsRequest) (*fedsyncv1.GetDigestsResponse, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	latest := map[string]*fedsyncv1.State{}
	changed := map[string]bool{}
	for _, c := range l.changes {
		latest[c.GetState().GetId()] = c.GetState()
		if c.GetSeq() > req.GetAfterSeq() {
			changed[c.GetState().GetId()] = true
		}
	}
	resp := &fedsyncv1.GetDigestsResponse{HeadSeq: uint64(len(l.changes))}
	for id := range changed {
		resp.Changed = append(resp.Changed, id)
	}
	sums := map[nodeKey]*digest.Sum{}
	var ids []string
	for id := range latest {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if changed[id] {
			continue
		}
		st := latest[id]
		h := digest.ValueHash(st.GetValue())
		leaf := digest.Leaf(id, st.GetVersion(), h)
		p, b := digest.Prefix(id), digest.Bucket(id)
		var k nodeKey
		switch {
		case len(req.GetNodes()) == 0:
			k = nodeKey{p, -1}
		default:
			asked := false
			for _, n := range req.GetNodes() {
				if n.GetPrefix() != p {
					continue
				}
				if n.GetBucket() == b {
					resp.Leaves = append(resp.Leaves, &fedsyncv1.Leaf{Id: id, Version: st.GetVersion(), ValueHash: h})
				}
				asked = asked || n.GetBucket() < 0
			}
			if !asked {
				continue
			}
			k = nodeKey{p, b}
		}
		if sums[k] == nil {
			sums[k] = &digest.Sum{}
		}
		sums[k].Add(leaf)
	}
	for k, s := range sums {
		resp.Digests = append(resp.Digests, &fedsyncv1.Digest{Node: &fedsyncv1.DigestNode{Prefix: k.prefix, Bucket: k.bucket}, Sum: s.Sum, Count: s.Count})
	}
	return resp, nil
}

func verify(t *testing.T, svc *service, lg *memLog) CheckResult {
	t.Helper()
	res, err := svc.Verify(context.Background(), lg)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestVerificationLoadsThenFindsAndRepairsDivergence: the first check fills
// the view with what was committed before the hub started; later checks agree
// while the hub follows the log, and find exactly the documents a damaged
// view got wrong (a wrong version, a missing document, one statestore does
// not hold), repair them, and agree again.
func TestVerificationLoadsThenFindsAndRepairsDivergence(t *testing.T) {
	ctx := context.Background()
	lg := &memLog{}
	for i := range 300 {
		lg.add([]string{"ai-001:", "ai-002:", "ai-003:", "plain-"}[i%4]+string(rune('a'+i%26))+string(rune('a'+i/26)), 1)
	}
	svc := NewService(lg, limits(64))
	if err := svc.Sync(ctx); err != nil { // start at the head: history is not replayed
		t.Fatal(err)
	}
	if res := verify(t, svc, lg); res.Result != "loaded" || res.Documents != 300 {
		t.Fatalf("first check: %s with %d documents; want loaded with 300", res.Result, res.Documents)
	}
	// The hub follows the log: consistent.
	for _, id := range []string{"ai-001:aa", "ai-002:new", "ai-001:aa"} {
		c := lg.add(id, lg.latestVersion(id)+1)
		if err := svc.Publish(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	res := verify(t, svc, lg)
	if res.Result != "consistent" || res.Documents != 301 || res.Calls != 1 {
		t.Fatalf("after live changes: %+v; want consistent, 301 documents, one call (the prefixes agree)", res)
	}

	// Damage the view three ways.
	svc.Corrupt("ai-002:ba", 7)      // a version statestore never had
	svc.Corrupt("ai-003:ca", 0)      // lost
	svc.Corrupt("ai-003:phantom", 1) // never committed
	res = verify(t, svc, lg)
	if res.Result != "divergent" || len(res.Divergent) != 3 {
		t.Fatalf("damaged view: %+v; want 3 divergent documents", res)
	}
	got := map[string]Divergence{}
	for _, d := range res.Divergent {
		got[d.ID] = d
	}
	if d := got["ai-002:ba"]; d.Hub.GetVersion() != 7 || d.Store.GetVersion() != 1 {
		t.Errorf("ai-002:ba: %+v", d)
	}
	if d := got["ai-003:ca"]; d.Hub != nil || d.Store.GetVersion() != 1 {
		t.Errorf("ai-003:ca: %+v", d)
	}
	if d := got["ai-003:phantom"]; d.Hub.GetVersion() != 1 || d.Store != nil {
		t.Errorf("ai-003:phantom: %+v", d)
	}
	// Only the prefixes and buckets that differ were read.
	if res.Calls != 3 {
		t.Errorf("%d GetDigests calls; want 3 (prefixes, their buckets, their documents)", res.Calls)
	}
	if res = verify(t, svc, lg); res.Result != "consistent" {
		t.Fatalf("after the repair: %+v", res)
	}
}

// TestVerificationIgnoresChangesTheHubHasNotSeenYet: statestore ahead of the
// hub (changes committed, not yet delivered) is not divergence.
func TestVerificationIgnoresChangesTheHubHasNotSeenYet(t *testing.T) {
	ctx := context.Background()
	lg := &memLog{}
	lg.add("ai-001:a", 1)
	svc := NewService(lg, limits(64))
	if err := svc.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	verify(t, svc, lg)
	lg.add("ai-001:a", 2) // committed, on its way to the hub
	lg.add("ai-001:b", 1)
	if res := verify(t, svc, lg); res.Result != "consistent" {
		t.Fatalf("statestore ahead of the hub: %+v", res)
	}
}

func TestVerificationNeedsAView(t *testing.T) {
	svc := NewService(&memLog{}, Options{NoView: true})
	svc.Sync(context.Background())
	if _, err := svc.Verify(context.Background(), &memLog{}); err == nil {
		t.Fatal("verified a hub that keeps no view")
	}
}

func (l *memLog) latestVersion(id string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var v int64
	for _, c := range l.changes {
		if c.GetState().GetId() == id {
			v = c.GetState().GetVersion()
		}
	}
	return v
}
