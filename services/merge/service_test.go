package merge

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"testing"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/statedoc"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// memStore is an in-memory StateStore with statestore's compare-and-set and
// message-id rules, for testing merge without a network.
type memStore struct {
	mu      sync.Mutex
	docs    map[string]*fedsyncv1.State
	applied map[string]int64
	commits int
}

func newMemStore() *memStore {
	return &memStore{docs: map[string]*fedsyncv1.State{}, applied: map[string]int64{}}
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

func cloneState(st *fedsyncv1.State) *fedsyncv1.State {
	c := &fedsyncv1.State{Id: st.Id, DataType: st.DataType, Value: st.Value, Version: st.Version, Fields: map[string]*fedsyncv1.FieldMeta{}}
	for k, v := range st.Fields {
		c.Fields[k] = &fedsyncv1.FieldMeta{Hlc: v.Hlc, Writer: v.Writer, Version: v.Version, Deleted: v.Deleted}
	}
	return c
}

func (m *memStore) Apply(_ context.Context, req *fedsyncv1.ApplyRequest) (*fedsyncv1.ApplyResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.applied[req.Id+"/"+req.MessageId]; ok && req.MessageId != "" {
		return &fedsyncv1.ApplyResponse{Version: v, Duplicate: true}, nil
	}
	cur := m.docs[req.Id]
	if cur == nil {
		cur = &fedsyncv1.State{Id: req.Id, DataType: req.DataType, Value: []byte("{}"), Fields: map[string]*fedsyncv1.FieldMeta{}}
	}
	if req.HasExpectedVersion && req.ExpectedVersion != cur.Version {
		return nil, apierr.New(apierr.VersionConflict, "at %d", cur.Version).WithDetail("current_version", cur.Version)
	}
	next := cloneState(cur)
	next.Version++
	val, _ := statedoc.DecodeObject(next.Value)
	patch, _ := statedoc.DecodeObject(req.Patch)
	val.Apply(patch)
	next.Value = val.Encode()
	for k, f := range req.Fields {
		next.Fields[k] = &fedsyncv1.FieldMeta{Hlc: f.Hlc, Writer: f.Writer, Version: next.Version}
	}
	m.docs[req.Id] = next
	m.applied[req.Id+"/"+req.MessageId] = next.Version
	m.commits++
	return &fedsyncv1.ApplyResponse{Version: next.Version}, nil
}

func delta(id, writer string, hlc int64, patch string) *fedsyncv1.Delta {
	return &fedsyncv1.Delta{Id: id, DataType: "note", Patch: []byte(patch), Writer: writer, Hlc: hlc, MessageId: fmt.Sprintf("%s-%d", writer, hlc)}
}

func TestWins(t *testing.T) {
	cur := &fedsyncv1.FieldMeta{Hlc: 10, Writer: "ai-005"}
	tests := []struct {
		hlc    int64
		writer string
		want   bool
	}{
		{11, "ai-001", true},
		{9, "ai-009", false},
		{10, "ai-006", true},  // tie: higher writer id wins
		{10, "ai-004", false}, // tie: lower writer id loses
		{10, "ai-005", false}, // the same write again changes nothing
	}
	for _, tt := range tests {
		if got := wins(tt.hlc, tt.writer, cur); got != tt.want {
			t.Errorf("wins(%d, %s) = %v, want %v", tt.hlc, tt.writer, got, tt.want)
		}
	}
	if !wins(1, "a", nil) {
		t.Error("a write to a new field must win")
	}
}

func TestMergeLastWriteWinsPerField(t *testing.T) {
	st := newMemStore()
	svc := NewService(st, 10)
	ctx := context.Background()
	for _, d := range []*fedsyncv1.Delta{
		delta("doc", "ai-001", 20, `{"a":"new","b":"first"}`),
		delta("doc", "ai-002", 10, `{"a":"old","c":"only"}`), // a loses, c wins
		delta("doc", "ai-003", 30, `{"b":null}`),
	} {
		if _, err := svc.Merge(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := st.Get(ctx, "doc")
	if string(got.Value) != `{"a":"new","c":"only"}` || got.Version != 3 {
		t.Fatalf("value %s version %d", got.Value, got.Version)
	}
	res, err := svc.Merge(ctx, delta("doc", "ai-004", 5, `{"a":"stale"}`))
	if err != nil || res.Outcome != "superseded" || st.commits != 3 {
		t.Fatalf("stale delta: %+v %v, commits %d", res, err, st.commits)
	}
}

// TestMergeConvergesInAnyOrderWithDuplicates applies the same deltas in random
// orders, each some twice, to independent stores: all end in the same value.
func TestMergeConvergesInAnyOrderWithDuplicates(t *testing.T) {
	var deltas []*fedsyncv1.Delta
	for i := 0; i < 40; i++ {
		deltas = append(deltas, delta("doc", fmt.Sprintf("ai-%03d", i%7), int64(i%13), fmt.Sprintf(`{"f%d":%d,"g":%d}`, i%5, i, i)))
	}
	var want string
	for round := 0; round < 5; round++ {
		rng := rand.New(rand.NewSource(int64(round)))
		seq := append([]*fedsyncv1.Delta{}, deltas...)
		seq = append(seq, deltas[rng.Intn(len(deltas))], deltas[rng.Intn(len(deltas))])
		rng.Shuffle(len(seq), func(i, j int) { seq[i], seq[j] = seq[j], seq[i] })
		st := newMemStore()
		svc := NewService(st, 10)
		for _, d := range seq {
			if _, err := svc.Merge(context.Background(), d); err != nil {
				t.Fatal(err)
			}
		}
		got, _ := st.Get(context.Background(), "doc")
		if round == 0 {
			want = string(got.Value)
		} else if string(got.Value) != want {
			t.Fatalf("order %d converged to %s, order 0 to %s", round, got.Value, want)
		}
	}
}

func TestMergeRetriesCompareAndSetUnderConcurrency(t *testing.T) {
	st := newMemStore()
	svc := NewService(st, 100)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := svc.Merge(context.Background(), delta("doc", fmt.Sprintf("ai-%03d", i), int64(i+1), fmt.Sprintf(`{"f%d":1}`, i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, _ := st.Get(context.Background(), "doc")
	v, _ := statedoc.DecodeObject(got.Value)
	if len(v) != 20 || got.Version != 20 {
		t.Fatalf("lost concurrent fields: %d fields, version %d", len(v), got.Version)
	}
}

func TestCommitStrong(t *testing.T) {
	st := newMemStore()
	svc := NewService(st, 10)
	ctx := context.Background()
	d := delta("acct", "ai-001", 1, `{"balance":10}`)
	d.HasExpectedVersion = true
	resp, err := svc.CommitStrong(ctx, &fedsyncv1.CommitStrongRequest{Delta: d})
	if err != nil || resp.Version != 1 {
		t.Fatalf("create: %v %v", resp, err)
	}
	d2 := delta("acct", "ai-002", 2, `{"balance":20}`)
	d2.HasExpectedVersion = true // still based on version 0: stale
	_, err = svc.CommitStrong(ctx, &fedsyncv1.CommitStrongRequest{Delta: d2})
	if e := apierr.As(err); e.Code != apierr.VersionConflict || e.Details["current_version"] != int64(1) {
		t.Fatalf("stale strong write: %v %+v", err, e.Details)
	}
	d3 := delta("acct", "ai-003", 1, `{"balance":30}`)
	d3.HasExpectedVersion, d3.ExpectedVersion = true, 1
	if resp, err := svc.CommitStrong(ctx, &fedsyncv1.CommitStrongRequest{Delta: d3}); err != nil || resp.Version != 2 {
		t.Fatalf("based on current version: %v %v", resp, err)
	}
	// A strong write is stamped after the fields it overwrote, so an eventual write
	// admitted earlier does not undo it.
	if _, err := svc.Merge(ctx, delta("acct", "ai-009", 1, `{"balance":0}`)); err != nil {
		t.Fatal(err)
	}
	got, _ := st.Get(ctx, "acct")
	if string(got.Value) != `{"balance":30}` {
		t.Fatalf("value %s", got.Value)
	}
	if _, err := svc.CommitStrong(ctx, &fedsyncv1.CommitStrongRequest{Delta: delta("acct", "x", 1, `{}`)}); apierr.As(err).Code != apierr.InvalidArgument {
		t.Fatalf("strong without expected_version: %v", err)
	}
}

func TestConcurrentStrongWritersExactlyOneWins(t *testing.T) {
	st := newMemStore()
	svc := NewService(st, 10)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := delta("lock", fmt.Sprintf("ai-%03d", i), int64(i+1), `{"owner":1}`)
			d.HasExpectedVersion = true
			if _, err := svc.CommitStrong(context.Background(), &fedsyncv1.CommitStrongRequest{Delta: d}); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if apierr.As(err).Code != apierr.VersionConflict {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d strong writers with expected_version 0 won, want exactly 1", wins)
	}
}
