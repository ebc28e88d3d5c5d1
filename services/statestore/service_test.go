package statestore

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/kafkatest"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

func newTestService(t testing.TB, dir string) (*service, *store) {
	t.Helper()
	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.close() })
	return newService(st, 1000), st
}

func apply(t *testing.T, s Service, req *fedsyncv1.ApplyRequest) *fedsyncv1.ApplyResponse {
	t.Helper()
	resp, err := s.Apply(context.Background(), req)
	if err != nil {
		t.Fatalf("apply %s: %v", req.GetMessageId(), err)
	}
	return resp
}

func TestApplyVersionsPatchesAndIdempotence(t *testing.T) {
	s, _ := newTestService(t, t.TempDir())
	ctx := context.Background()
	r1 := apply(t, s, &fedsyncv1.ApplyRequest{Id: "ai-001:x", DataType: "note", Patch: []byte(`{"a":1,"b":2}`), MessageId: "m1", Writer: "ai-001"})
	r2 := apply(t, s, &fedsyncv1.ApplyRequest{Id: "ai-001:x", DataType: "note", Patch: []byte(`{"a":null,"c":3}`), MessageId: "m2", Writer: "ai-002"})
	if r1.Version != 1 || r2.Version != 2 {
		t.Fatalf("versions %d, %d; want 1, 2", r1.Version, r2.Version)
	}
	dup := apply(t, s, &fedsyncv1.ApplyRequest{Id: "ai-001:x", DataType: "note", Patch: []byte(`{"z":1}`), MessageId: "m1", Writer: "ai-001"})
	if !dup.Duplicate || dup.Version != 1 {
		t.Fatalf("re-applied message m1: %+v", dup)
	}
	got, err := s.Get(ctx, &fedsyncv1.GetRequest{Id: "ai-001:x"})
	if err != nil {
		t.Fatal(err)
	}
	if v := string(got.State.Value); v != `{"b":2,"c":3}` {
		t.Fatalf("value %s", v)
	}
	if got.State.Version != 2 || got.State.UpdatedBy != "ai-002" {
		t.Fatalf("state %+v", got.State)
	}
	if f := got.State.Fields["a"]; f == nil || !f.Deleted || f.Version != 2 {
		t.Fatalf("provenance of deleted field a: %+v", f)
	}
}

func TestApplyErrors(t *testing.T) {
	s, _ := newTestService(t, t.TempDir())
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "doc", DataType: "note", Patch: []byte(`{"a":1}`)})
	tests := []struct {
		name string
		req  *fedsyncv1.ApplyRequest
		want apierr.Code
	}{
		{"stale expected version", &fedsyncv1.ApplyRequest{Id: "doc", DataType: "note", Patch: []byte(`{}`), HasExpectedVersion: true, ExpectedVersion: 0}, apierr.VersionConflict},
		{"other data type", &fedsyncv1.ApplyRequest{Id: "doc", DataType: "task", Patch: []byte(`{}`)}, apierr.InvalidArgument},
		{"bad id", &fedsyncv1.ApplyRequest{Id: "-x", DataType: "note", Patch: []byte(`{}`)}, apierr.InvalidArgument},
		{"patch not an object", &fedsyncv1.ApplyRequest{Id: "doc", DataType: "note", Patch: []byte(`[]`)}, apierr.InvalidArgument},
		{"no data type", &fedsyncv1.ApplyRequest{Id: "doc", Patch: []byte(`{}`)}, apierr.InvalidArgument},
	}
	for _, tt := range tests {
		_, err := s.Apply(context.Background(), tt.req)
		if got := apierr.As(err).Code; got != tt.want {
			t.Errorf("%s: got %v, want %s", tt.name, err, tt.want)
		}
	}
	_, err := s.Apply(context.Background(), &fedsyncv1.ApplyRequest{Id: "doc", DataType: "note", Patch: []byte(`{}`), HasExpectedVersion: true, ExpectedVersion: 5})
	if v, _ := apierr.As(err).Details["current_version"].(int64); v != 1 {
		t.Errorf("conflict details: %+v", apierr.As(err).Details)
	}
	if _, err := s.Get(context.Background(), &fedsyncv1.GetRequest{Id: "nope"}); apierr.As(err).Code != apierr.NotFound {
		t.Errorf("get missing: %v", err)
	}
}

func TestQueryPagesByPrefixAndType(t *testing.T) {
	s, _ := newTestService(t, t.TempDir())
	for i := 0; i < 7; i++ {
		dt := "note"
		if i%2 == 1 {
			dt = "task"
		}
		apply(t, s, &fedsyncv1.ApplyRequest{Id: fmt.Sprintf("ai-001:%d", i), DataType: dt, Patch: []byte(`{}`)})
	}
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "ai-002:0", DataType: "note", Patch: []byte(`{}`)})
	var ids []string
	token := ""
	for page := 0; ; page++ {
		resp, err := s.Query(context.Background(), &fedsyncv1.QueryRequest{IdPrefix: "ai-001:", DataType: "note", Limit: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range resp.Items {
			ids = append(ids, it.Id)
		}
		if token = resp.NextPageToken; token == "" {
			break
		}
		if page > 5 {
			t.Fatal("paging does not end")
		}
	}
	if fmt.Sprint(ids) != "[ai-001:0 ai-001:2 ai-001:4 ai-001:6]" {
		t.Fatalf("got %v", ids)
	}
	if _, err := s.Query(context.Background(), &fedsyncv1.QueryRequest{Limit: 5000}); apierr.As(err).Code != apierr.InvalidArgument {
		t.Fatalf("limit over max: %v", err)
	}
	if _, err := s.Query(context.Background(), &fedsyncv1.QueryRequest{PageToken: "!!"}); apierr.As(err).Code != apierr.InvalidArgument {
		t.Fatalf("bad page token: %v", err)
	}
}

func TestReadLogAndExpiredCursor(t *testing.T) {
	s, _ := newTestService(t, t.TempDir())
	for i := 0; i < 10; i++ {
		apply(t, s, &fedsyncv1.ApplyRequest{Id: "d", DataType: "note", Patch: []byte(fmt.Sprintf(`{"i":%d}`, i))})
	}
	resp, err := s.ReadLog(context.Background(), &fedsyncv1.ReadLogRequest{AfterSeq: 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Changes) != 3 || resp.Changes[0].Seq != 8 || resp.HeadSeq != 10 || resp.Changes[2].State.Version != 10 {
		t.Fatalf("got %d changes, head %d", len(resp.Changes), resp.HeadSeq)
	}
	if _, err := s.repl.propose(context.Background(), &command{kind: cmdPublished, seq: 10, retention: 4}); err != nil { // keep only seq 7..10
		t.Fatal(err)
	}
	if _, err := s.ReadLog(context.Background(), &fedsyncv1.ReadLogRequest{AfterSeq: 6}); err != nil {
		t.Fatalf("cursor 6 is still retained: %v", err)
	}
	if _, err := s.ReadLog(context.Background(), &fedsyncv1.ReadLogRequest{AfterSeq: 2}); apierr.As(err).Code != apierr.CursorExpired {
		t.Fatalf("want cursor_expired, got %v", err)
	}
	if resp, err := s.ReadLog(context.Background(), &fedsyncv1.ReadLogRequest{AfterSeq: 10}); err != nil || len(resp.Changes) != 0 {
		t.Fatalf("cursor at head: %v %v", resp, err)
	}
}

// TestOutboxSurvivesRestart commits changes, publishes some, "crashes" (closes the
// store without publishing the rest), reopens, and checks every change reaches
// Kafka in commit order.
func TestOutboxSurvivesRestart(t *testing.T) {
	cfg := &kafkabus.Config{Brokers: kafkatest.Brokers(t), Partitions: 1, Replication: 1, BatchTimeout: 2 * time.Millisecond}
	topic := fmt.Sprintf("test.committed.%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := kafkabus.EnsureTopics(ctx, cfg, []kafkabus.TopicSpec{{Name: topic, Partitions: 1}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	producer := kafkabus.NewProducer(cfg, topic)
	defer producer.Close()
	newPub := func(s *service) *publisher {
		return &publisher{store: s.store, repl: s.repl, producer: producer, retention: LogRetention{Count: 1000}, logger: log.NewNopLogger(), pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})}
	}

	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := newService(st, 100)
	for i := 0; i < 5; i++ {
		apply(t, s, &fedsyncv1.ApplyRequest{Id: fmt.Sprintf("d%d", i%2), DataType: "note", Patch: []byte(`{"x":1}`)})
	}
	if _, err := newPub(s).publishOnce(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 5; i < 9; i++ { // committed, not yet published when the process dies
		apply(t, s, &fedsyncv1.ApplyRequest{Id: fmt.Sprintf("d%d", i%2), DataType: "note", Patch: []byte(`{"x":1}`)})
	}
	st.close()

	st, err = openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	if n, err := newPub(newService(st, 100)).publishOnce(ctx); err != nil || n != 4 {
		t.Fatalf("after restart published %d, %v; want the 4 unpublished", n, err)
	}
	c := kafkabus.NewConsumer(cfg, topic, "g-"+topic, kafkabus.StartEarliest, log.NewNopLogger())
	defer c.Close()
	var seqs []uint64
	cctx, ccancel := context.WithCancel(ctx)
	c.Run(cctx, func(_ context.Context, m kafkabus.Message) error {
		env := &fedsyncv1.SyncMessage{}
		if err := proto.Unmarshal(m.Value, env); err != nil {
			t.Fatal(err)
		}
		ch, _ := decodeChange(env)
		seqs = append(seqs, ch.Seq)
		if len(seqs) == 9 {
			ccancel()
		}
		return nil
	})
	if fmt.Sprint(seqs) != "[1 2 3 4 5 6 7 8 9]" {
		t.Fatalf("published seqs %v", seqs)
	}
}

func TestGRPCTransportMapsErrors(t *testing.T) {
	s, _ := newTestService(t, t.TempDir())
	eps := MakeEndpoints(s, func(string) endpoint.Middleware { return func(e endpoint.Endpoint) endpoint.Endpoint { return e } })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	fedsyncv1.RegisterStateStoreServiceServer(gs, NewGRPCServer(eps))
	go gs.Serve(lis)
	defer gs.Stop()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := fedsyncv1.NewStateStoreServiceClient(cc)
	ctx := context.Background()
	if _, err := client.Get(ctx, &fedsyncv1.GetRequest{Id: "missing"}); status.Code(err) != codes.NotFound {
		t.Fatalf("get missing: %v", err)
	}
	if _, err := client.Apply(ctx, &fedsyncv1.ApplyRequest{Id: "a", DataType: "note", Patch: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	_, err = client.Apply(ctx, &fedsyncv1.ApplyRequest{Id: "a", DataType: "note", Patch: []byte(`{}`), HasExpectedVersion: true})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("conflict: %v", err)
	}
	if e := apierr.As(err); e.Code != apierr.VersionConflict || e.Details["current_version"] != float64(1) {
		t.Fatalf("conflict lost its code or details: %+v", e)
	}
}

func TestSweepForgetsOldMessageIDsOnly(t *testing.T) {
	s, st := newTestService(t, t.TempDir())
	now := time.Unix(1_000_000, 0)
	st.now = func() time.Time { return now }
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "d", DataType: "note", Patch: []byte(`{"a":1}`), MessageId: "old"})
	now = now.Add(8 * 24 * time.Hour)
	apply(t, s, &fedsyncv1.ApplyRequest{Id: "d", DataType: "note", Patch: []byte(`{"a":2}`), MessageId: "new"})
	n, err := s.sweep(context.Background(), 7*24*time.Hour)
	if err != nil || n != 2 { // the old applied id and the old outcome
		t.Fatalf("swept %d, %v", n, err)
	}
	if r := apply(t, s, &fedsyncv1.ApplyRequest{Id: "d", DataType: "note", Patch: []byte(`{"a":2}`), MessageId: "new"}); !r.Duplicate {
		t.Fatal("a recent message id was forgotten")
	}
	if _, err := s.GetOutcome(context.Background(), &fedsyncv1.GetOutcomeRequest{MessageId: "old"}); apierr.As(err).Code != apierr.NotFound {
		t.Fatalf("old outcome still there: %v", err)
	}
}

// TestLogRetentionByAgeAndSize: the log is trimmed, once published, of the
// changes committed before the age bound, and of its oldest changes while
// it holds more bytes than the size bound; never of a change not yet
// published; an older cursor is told to read a snapshot.
func TestLogRetentionByAgeAndSize(t *testing.T) {
	s, st := newTestService(t, t.TempDir())
	clock := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	st.now = func() time.Time { return clock }
	for i := 0; i < 10; i++ {
		clock = clock.Add(time.Hour) // change i at hour i+1
		apply(t, s, &fedsyncv1.ApplyRequest{Id: "d", DataType: "note", Patch: []byte(fmt.Sprintf(`{"i":%d,"pad":"%0100d"}`, i, 0))})
	}
	clock = clock.Add(30 * time.Minute)
	// Published up to 8; keep 4 hours: changes 1-6 (hours 1-6) are older.
	if _, err := s.repl.propose(context.Background(), &command{kind: cmdPublished, now: clock.UnixNano(), seq: 8, retention: 1000, retentionAge: int64(4 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadLog(context.Background(), &fedsyncv1.ReadLogRequest{AfterSeq: 6}); err != nil {
		t.Fatalf("cursor 6 after trimming by age: %v", err)
	}
	if _, err := s.ReadLog(context.Background(), &fedsyncv1.ReadLogRequest{AfterSeq: 5}); apierr.As(err).Code != apierr.CursorExpired {
		t.Fatalf("cursor 5 (change 6 is 4.5 h old): %v, want cursor_expired", err)
	}
	var size uint64
	st.db.View(func(tx *bolt.Tx) error { size = logBytesTx(tx); return nil })
	if size == 0 {
		t.Fatal("the log's size is not counted")
	}
	perEntry := size / 4 // entries 7-10 are left
	// Keep about one entry's bytes: the published 7 and 8 go; 9 and 10 are
	// not published yet and stay whatever the bound.
	if _, err := s.repl.propose(context.Background(), &command{kind: cmdPublished, now: clock.UnixNano(), seq: 8, retention: 1000, retentionBytes: perEntry}); err != nil {
		t.Fatal(err)
	}
	resp, err := s.ReadLog(context.Background(), &fedsyncv1.ReadLogRequest{AfterSeq: 8})
	if err != nil || len(resp.Changes) != 2 {
		t.Fatalf("the unpublished changes 9 and 10: %v %v", resp, err)
	}
	if _, err := s.ReadLog(context.Background(), &fedsyncv1.ReadLogRequest{AfterSeq: 7}); apierr.As(err).Code != apierr.CursorExpired {
		t.Fatalf("cursor 7 after trimming by size: %v, want cursor_expired", err)
	}
	st.db.View(func(tx *bolt.Tx) error { size = logBytesTx(tx); return nil })
	if size != 2*perEntry && (size < perEntry || size > 3*perEntry) {
		t.Fatalf("the log counts %d bytes for 2 entries of about %d", size, perEntry)
	}
}
