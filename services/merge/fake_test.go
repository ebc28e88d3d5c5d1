package merge

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"testing"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/log"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/datatypes"
	"github.com/fedsync/fedsync/libs/statedoc"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// memStore is an in-memory StateStore with statestore's rules (compare-and-set,
// message-id idempotence, causal frontier, conflicts, outcomes), for testing
// merge without a network. The real statestore is tested in its own package and
// end to end.
type memStore struct {
	mu        sync.Mutex
	docs      map[string]*fedsyncv1.State
	applied   map[string]int64
	frontier  map[string]int64
	conflicts map[string]*fedsyncv1.Conflict
	outcomes  map[string]*fedsyncv1.Outcome
	commits   []string // "id@version", in commit order
	onCommit  func(d *fedsyncv1.ApplyRequest)
	// failBatch, when set, may fail an ApplyBatch call before it applies.
	failBatch func(req *fedsyncv1.ApplyBatchRequest) error
	batches   int
}

func newMemStore() *memStore {
	return &memStore{docs: map[string]*fedsyncv1.State{}, applied: map[string]int64{}, frontier: map[string]int64{},
		conflicts: map[string]*fedsyncv1.Conflict{}, outcomes: map[string]*fedsyncv1.Outcome{}}
}

func cloneState(st *fedsyncv1.State) *fedsyncv1.State {
	c := &fedsyncv1.State{Id: st.Id, DataType: st.DataType, Value: st.Value, Version: st.Version, Fields: map[string]*fedsyncv1.FieldMeta{}}
	for k, v := range st.Fields {
		c.Fields[k] = &fedsyncv1.FieldMeta{Hlc: v.Hlc, Writer: v.Writer, Version: v.Version, Deleted: v.Deleted, Resolution: v.Resolution}
	}
	return c
}

func (m *memStore) Get(_ context.Context, id string) (*fedsyncv1.State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.docs[id]
	if !ok {
		return nil, apierr.New(apierr.NotFound, "no %s", id)
	}
	return cloneState(st), nil
}

func (m *memStore) Apply(_ context.Context, req *fedsyncv1.ApplyRequest) (*fedsyncv1.ApplyResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.applied[req.Id+"/"+req.MessageId]; ok && req.MessageId != "" {
		return &fedsyncv1.ApplyResponse{Version: v, Duplicate: true}, nil
	}
	if req.CausalAgent != "" && m.frontier[req.CausalAgent] != req.CausalCounter-1 {
		return nil, apierr.New(apierr.VersionConflict, "frontier").WithDetail("frontier", m.frontier[req.CausalAgent])
	}
	cur := m.docs[req.Id]
	if cur == nil {
		cur = &fedsyncv1.State{Id: req.Id, DataType: req.DataType, Value: []byte("{}"), Fields: map[string]*fedsyncv1.FieldMeta{}}
	}
	if req.HasExpectedVersion && req.ExpectedVersion != cur.Version {
		return nil, apierr.New(apierr.VersionConflict, "at %d", cur.Version).WithDetail("current_version", cur.Version)
	}
	if req.ResolvesConflictId != "" {
		c := m.conflicts[req.ResolvesConflictId]
		if c == nil || c.Status != "pending" {
			return nil, apierr.New(apierr.VersionConflict, "not pending")
		}
		c.Status, c.ResolvedBy = "resolved", req.Writer
	}
	next := cloneState(cur)
	next.Version++
	val, _ := statedoc.DecodeObject(next.Value)
	patch := statedoc.FromFields(req.PatchFields)
	if len(req.Patch) > 0 {
		patch, _ = statedoc.DecodeObject(req.Patch)
	}
	val.Apply(patch)
	next.Value = val.Encode()
	for k, f := range req.Fields {
		next.Fields[k] = &fedsyncv1.FieldMeta{Hlc: f.Hlc, Writer: f.Writer, Version: next.Version, Resolution: f.Resolution, Deleted: statedoc.IsNull(patch[k])}
	}
	m.docs[req.Id] = next
	m.applied[req.Id+"/"+req.MessageId] = next.Version
	if req.CausalAgent != "" {
		m.frontier[req.CausalAgent] = req.CausalCounter
	}
	for _, c := range req.Conflicts {
		if _, ok := m.conflicts[c.Id]; !ok {
			m.conflicts[c.Id] = c
		}
	}
	m.outcomes[req.MessageId] = &fedsyncv1.Outcome{MessageId: req.MessageId, StateId: req.Id, Status: Committed, Version: next.Version}
	m.commits = append(m.commits, fmt.Sprintf("%s@%d", req.Id, next.Version))
	if m.onCommit != nil {
		m.onCommit(req)
	}
	return &fedsyncv1.ApplyResponse{Version: next.Version}, nil
}

func (m *memStore) GetFrontier(context.Context) (map[string]int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int64{}
	for k, v := range m.frontier {
		out[k] = v
	}
	return out, nil
}

func (m *memStore) RecordOutcome(_ context.Context, req *fedsyncv1.RecordOutcomeRequest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if req.CausalAgent != "" && m.frontier[req.CausalAgent] < req.CausalCounter {
		m.frontier[req.CausalAgent] = req.CausalCounter
	}
	for _, c := range req.Conflicts {
		if _, ok := m.conflicts[c.Id]; !ok {
			m.conflicts[c.Id] = c
		}
	}
	if _, ok := m.outcomes[req.Outcome.MessageId]; !ok {
		m.outcomes[req.Outcome.MessageId] = req.Outcome
	}
	return nil
}

func (m *memStore) GetOutcome(_ context.Context, messageID string) (*fedsyncv1.Outcome, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.outcomes[messageID]
	if !ok {
		return nil, apierr.New(apierr.NotFound, "no outcome for %s", messageID)
	}
	return o, nil
}

func (m *memStore) GetConflict(_ context.Context, id string) (*fedsyncv1.Conflict, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.conflicts[id]
	if !ok {
		return nil, apierr.New(apierr.NotFound, "no conflict %s", id)
	}
	return c, nil
}

func (m *memStore) ListConflicts(_ context.Context, req *fedsyncv1.ListConflictsRequest) (*fedsyncv1.ListConflictsResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	resp := &fedsyncv1.ListConflictsResponse{}
	for _, c := range m.conflicts {
		if req.Status == "" || c.Status == req.Status {
			resp.Conflicts = append(resp.Conflicts, c)
		}
	}
	sort.Slice(resp.Conflicts, func(i, j int) bool { return resp.Conflicts[i].Id < resp.Conflicts[j].Id })
	return resp, nil
}

// testRegistry is the shipped registry plus a type that exercises every resolver.
func testRegistry(t interface{ Fatal(...any) }) *datatypes.Watcher {
	r, err := datatypes.Parse([]byte(`
data_types:
  note: {modes: [eventual, causal, strong]}
  kg:
    modes: [eventual, causal]
    fields: {tags: union, log: append_unique, best: max, low: min, count: sum}
  task:
    consistency: strong
    modes: [strong, eventual]
    fields: {attempts: sum}
`), NewResolvers().Known)
	if err != nil {
		t.Fatal(err)
	}
	return datatypes.Static(r)
}

func newTestService(t testing.TB, st *memStore) *service {
	svc, closeFn := newServiceIn(t, t.TempDir(), st)
	t.Cleanup(closeFn)
	return svc
}

// newServiceIn returns a service whose causal buffer lives in a new directory
// under parent; for property tests, whose *rapid.T has no TempDir.
func newServiceIn(t interface{ Fatal(...any) }, parent string, st *memStore) (*service, func()) {
	dir, err := os.MkdirTemp(parent, "merge")
	if err != nil {
		t.Fatal(err)
	}
	q, err := openCausalQueue(dir, 10000, 60e9, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	return NewService(st, testRegistry(t), NewResolvers(), q, 100), func() { q.close(); os.RemoveAll(dir) }
}

type endpointMiddleware = endpoint.Middleware

func passthrough(e endpoint.Endpoint) endpoint.Endpoint { return e }

func (m *memStore) GetMany(ctx context.Context, ids []string) ([]*fedsyncv1.State, error) {
	var out []*fedsyncv1.State
	for _, id := range ids {
		if st, err := m.Get(ctx, id); err == nil {
			out = append(out, st)
		}
	}
	return out, nil
}

// ApplyBatch follows statestore's batch rules: outcomes first, then items in
// order; a failed item skips the later items of its id.
func (m *memStore) ApplyBatch(ctx context.Context, req *fedsyncv1.ApplyBatchRequest) (*fedsyncv1.ApplyBatchResponse, error) {
	m.mu.Lock()
	fail := m.failBatch
	m.batches++
	m.mu.Unlock()
	if fail != nil {
		if err := fail(req); err != nil {
			return nil, err
		}
	}
	for _, o := range req.Outcomes {
		if err := m.RecordOutcome(ctx, o); err != nil {
			return nil, err
		}
	}
	resp := &fedsyncv1.ApplyBatchResponse{}
	failed := map[string]bool{}
	for _, it := range req.Items {
		if failed[it.Id] {
			resp.Results = append(resp.Results, &fedsyncv1.ApplyResult{ErrorCode: "aborted"})
			continue
		}
		r, err := m.Apply(ctx, it)
		if err != nil {
			failed[it.Id] = true
			e := apierr.As(err)
			res := &fedsyncv1.ApplyResult{ErrorCode: string(e.Code), ErrorMessage: e.Message}
			if v, ok := e.Details["current_version"].(int64); ok {
				res.CurrentVersion = v
			}
			resp.Results = append(resp.Results, res)
			continue
		}
		resp.Results = append(resp.Results, &fedsyncv1.ApplyResult{Version: r.Version, Duplicate: r.Duplicate, Seq: r.Seq})
	}
	return resp, nil
}
