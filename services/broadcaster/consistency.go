package broadcaster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedsync/fedsync/libs/access"
	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/digest"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Consistency verification (seed 8.2): every so often the hub compares its
// view of the committed state (view.go) with statestore's documents through
// the digest tree, top down: one digest per id prefix, then 64 buckets in
// each prefix that differs, then the documents of each bucket that differs.
// A large prefix that agrees costs one number. Both sides leave out the
// documents changed after the hub's log position, so live traffic is never
// mistaken for divergence. A document that differs is repaired from
// statestore (anti-entropy), counted, and reported; healthmonitor turns the
// count into the consistency_divergence alert.

// DigestSource is statestore's digest tree.
type DigestSource interface {
	GetDigests(ctx context.Context, req *fedsyncv1.GetDigestsRequest) (*fedsyncv1.GetDigestsResponse, error)
}

// Divergence is one document on which the hub's view and statestore differ.
// A nil side does not hold the document.
type Divergence struct {
	ID    string          `json:"id"`
	Hub   *fedsyncv1.Leaf `json:"hub,omitempty"`
	Store *fedsyncv1.Leaf `json:"statestore,omitempty"`
}

// CheckResult is what one verification found.
type CheckResult struct {
	// Result is "consistent", "divergent" (documents differed and were
	// repaired) or "loaded" (the first check after start-up, which fills the
	// view with the documents committed before the hub started).
	Result    string       `json:"result"`
	Divergent []Divergence `json:"divergent,omitempty"`
	// Documents is the size of the view after the check.
	Documents int64 `json:"documents"`
	// Head is the log position the check compared at.
	Head uint64 `json:"head"`
	// Calls counts the GetDigests calls made.
	Calls int `json:"calls"`
}

// maxNodesPerCall bounds the nodes of one GetDigests call (statestore allows
// 1,024; fewer keeps each answer small).
const maxNodesPerCall = 64

// errMoved is a round's hub running ahead of statestore's answer.
var errMoved = errors.New("the hub moved past statestore's answer")

// Verify compares the view with statestore once and repairs what differs.
func (s *service) Verify(ctx context.Context, src DigestSource) (CheckResult, error) {
	res := CheckResult{}
	s.pubMu.Lock()
	synced := s.synced
	s.pubMu.Unlock()
	switch {
	case s.view == nil:
		return res, errors.New("this hub keeps no view (Options.NoView)")
	case !synced:
		return res, errors.New("the hub has not read statestore's head yet")
	}
	// Level 1: a digest per prefix.
	var prefixes []*fedsyncv1.DigestNode
	err := s.round(ctx, src, nil, &res, func(hub map[nodeKey]digest.Sum, _ map[string]*fedsyncv1.Leaf, st *fedsyncv1.GetDigestsResponse) {
		prefixes = differing(hub, st.GetDigests())
	})
	if err != nil || len(prefixes) == 0 {
		return s.finish(res, err)
	}
	// Level 2: the buckets of the prefixes that differ.
	var buckets []*fedsyncv1.DigestNode
	for chunk := range chunks(prefixes) {
		err := s.round(ctx, src, chunk, &res, func(hub map[nodeKey]digest.Sum, _ map[string]*fedsyncv1.Leaf, st *fedsyncv1.GetDigestsResponse) {
			buckets = append(buckets, differing(hub, st.GetDigests())...)
		})
		if err != nil {
			return s.finish(res, err)
		}
	}
	// Level 3: the documents of the buckets that differ, repaired from
	// statestore under the same hold of the fan-out lock that compared them.
	for chunk := range chunks(buckets) {
		err := s.round(ctx, src, chunk, &res, func(hub map[nodeKey]digest.Sum, leaves map[string]*fedsyncv1.Leaf, st *fedsyncv1.GetDigestsResponse) {
			res.Divergent = append(res.Divergent, s.repairLocked(leaves, st)...)
		})
		if err != nil {
			return s.finish(res, err)
		}
	}
	return s.finish(res, nil)
}

// round asks statestore for the children of nodes as of the hub's head and
// hands both sides' answers to fn under the fan-out lock. When the hub moved
// past statestore's answer meanwhile (its head is beyond the answer's), it
// asks again.
func (s *service) round(ctx context.Context, src DigestSource, nodes []*fedsyncv1.DigestNode, res *CheckResult,
	fn func(map[nodeKey]digest.Sum, map[string]*fedsyncv1.Leaf, *fedsyncv1.GetDigestsResponse)) error {
	for attempt := 0; ; attempt++ {
		after := s.Head()
		st, err := src.GetDigests(ctx, &fedsyncv1.GetDigestsRequest{AfterSeq: after, Nodes: nodes})
		res.Calls++
		if err != nil {
			return fmt.Errorf("statestore digests after %d: %w", after, err)
		}
		changed := make(map[string]bool, len(st.GetChanged()))
		for _, id := range st.GetChanged() {
			changed[id] = true
		}
		s.pubMu.Lock()
		if head := s.Head(); head > st.GetHeadSeq() || head < after {
			s.pubMu.Unlock()
			if attempt >= 4 {
				return errMoved
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		res.Head = after
		hub, leaves := s.view.children(nodes, changed)
		fn(hub, leaves, st)
		s.pubMu.Unlock()
		return nil
	}
}

// differing returns the nodes whose digests differ between the two sides:
// prefixes (bucket -1) at level 1, buckets at level 2.
func differing(hub map[nodeKey]digest.Sum, store []*fedsyncv1.Digest) []*fedsyncv1.DigestNode {
	var out []*fedsyncv1.DigestNode
	for _, d := range store {
		k := nodeKey{d.GetNode().GetPrefix(), d.GetNode().GetBucket()}
		if h, ok := hub[k]; !ok || h.Sum != d.GetSum() || h.Count != d.GetCount() {
			out = append(out, &fedsyncv1.DigestNode{Prefix: k.prefix, Bucket: k.bucket})
		}
		delete(hub, k)
	}
	for k := range hub { // held by the hub only
		out = append(out, &fedsyncv1.DigestNode{Prefix: k.prefix, Bucket: k.bucket})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Prefix != out[j].Prefix {
			return out[i].Prefix < out[j].Prefix
		}
		return out[i].Bucket < out[j].Bucket
	})
	return out
}

// repairLocked compares the leaves of the same buckets on both sides and
// makes the view hold statestore's (under pubMu). It returns what differed.
func (s *service) repairLocked(hub map[string]*fedsyncv1.Leaf, st *fedsyncv1.GetDigestsResponse) []Divergence {
	var out []Divergence
	head := s.Head()
	for _, l := range st.GetLeaves() {
		h, ok := hub[l.GetId()]
		delete(hub, l.GetId())
		if ok && h.GetVersion() == l.GetVersion() && h.GetValueHash() == l.GetValueHash() {
			continue
		}
		d := Divergence{ID: l.GetId(), Store: l}
		if ok {
			d.Hub = h
		}
		out = append(out, d)
		s.view.set(l.GetId(), viewDoc{version: l.GetVersion(), hash: l.GetValueHash(), seq: head})
		s.docs.drop(l.GetId())
	}
	for id, h := range hub { // the hub holds a document statestore does not
		out = append(out, Divergence{ID: id, Hub: h})
		s.view.remove(id)
		s.docs.drop(id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// finish classifies the check once it ended.
func (s *service) finish(res CheckResult, err error) (CheckResult, error) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	res.Documents = s.view.docs
	if err != nil {
		return res, err
	}
	switch {
	case !s.view.loaded:
		// The view starts empty: the first check fills it from statestore.
		res.Result = "loaded"
		s.view.loaded = true
	case len(res.Divergent) > 0:
		res.Result = "divergent"
	default:
		res.Result = "consistent"
	}
	return res, nil
}

// chunks splits nodes into calls of at most maxNodesPerCall.
func chunks(nodes []*fedsyncv1.DigestNode) func(func([]*fedsyncv1.DigestNode) bool) {
	return func(yield func([]*fedsyncv1.DigestNode) bool) {
		for len(nodes) > 0 {
			n := min(len(nodes), maxNodesPerCall)
			if !yield(nodes[:n]) {
				return
			}
			nodes = nodes[n:]
		}
	}
}

// ConsistencyMetrics are the verification's series on /metrics.
type ConsistencyMetrics struct {
	Checks    *prometheus.CounterVec
	Divergent prometheus.Gauge
	Repaired  prometheus.Counter
	Documents prometheus.Gauge
	LastCheck prometheus.Gauge
	Duration  prometheus.Gauge
}

// NewConsistencyMetrics registers the series of region's hub with reg.
func NewConsistencyMetrics(reg prometheus.Registerer, region string) *ConsistencyMetrics {
	l := prometheus.Labels{"region": region}
	m := &ConsistencyMetrics{
		Checks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedsync_consistency_checks_total", ConstLabels: l,
			Help: "Consistency verifications of this hub's view against statestore, by result (consistent, divergent, loaded, error)."}, []string{"result"}),
		Divergent: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedsync_consistency_divergent_documents", ConstLabels: l,
			Help: "Documents on which the last completed verification found this hub's view and statestore differ (each was repaired)."}),
		Repaired: prometheus.NewCounter(prometheus.CounterOpts{Name: "fedsync_consistency_repaired_documents_total", ConstLabels: l,
			Help: "Documents of this hub's view repaired from statestore by anti-entropy after a verification found them divergent."}),
		Documents: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedsync_consistency_view_documents", ConstLabels: l,
			Help: "Documents in this hub's view of the committed state."}),
		LastCheck: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedsync_consistency_last_check_timestamp_seconds", ConstLabels: l,
			Help: "Unix time of the last completed verification."}),
		Duration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedsync_consistency_last_check_duration_seconds", ConstLabels: l,
			Help: "How long the last completed verification took."}),
	}
	for _, r := range []string{"consistent", "divergent", "loaded", "error"} {
		m.Checks.WithLabelValues(r)
	}
	reg.MustRegister(m.Checks, m.Divergent, m.Repaired, m.Documents, m.LastCheck, m.Duration)
	return m
}

// Record sets the series from one check.
func (m *ConsistencyMetrics) Record(res CheckResult, err error, took time.Duration) {
	if err != nil {
		m.Checks.WithLabelValues("error").Inc()
		return
	}
	m.Checks.WithLabelValues(res.Result).Inc()
	m.Documents.Set(float64(res.Documents))
	m.LastCheck.Set(float64(time.Now().UnixNano()) / 1e9)
	m.Duration.Set(took.Seconds())
	if res.Result == "loaded" {
		return
	}
	m.Divergent.Set(float64(len(res.Divergent)))
	m.Repaired.Add(float64(len(res.Divergent)))
}

// CorruptRequest is the fault-injection endpoint's body: make the view hold
// version (0: not hold the document) with a value hash that matches nothing.
type CorruptRequest struct {
	ID      string `json:"id"`
	Version int64  `json:"version"`
}

// Corrupt damages the view on purpose, for tests of verification and repair
// (served only with -consistency.fault-injection).
func (s *service) Corrupt(id string, version int64) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	switch {
	case s.view == nil:
		return
	case version <= 0:
		s.view.remove(id)
	default:
		s.view.set(id, viewDoc{version: version, hash: 0xbad, seq: s.Head()})
	}
}

// NewFaultInjectionHandler serves POST /debug/consistency/corrupt with a
// CorruptRequest, for federation admins (L4) only.
func NewFaultInjectionHandler(s *service) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := authtoken.FromContext(r.Context())
		if err := access.RequireLevel(c, "L4", "Damaging a hub's view (fault injection)"); err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		var req CorruptRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.ID == "" {
			apierr.WriteHTTP(w, apierr.New(apierr.InvalidArgument, "The body must be {\"id\": ..., \"version\": ...}."))
			return
		}
		s.Corrupt(req.ID, req.Version)
		w.WriteHeader(http.StatusNoContent)
	})
}
