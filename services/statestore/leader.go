package statestore

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/raftgroup"
	"github.com/fedsync/fedsync/libs/telemetry"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Callers reach any replica (discovery balances over all of them). The
// leader serves every call; a follower sends the call on to the leader it
// knows, except a read that asked for a stale answer, which it serves from
// its own copy.

const (
	// mdForwarded marks a call one replica sent on to another, so that a call
	// reaching a replica that is no longer the leader is refused, not sent
	// round again.
	mdForwarded = "fedsync-forwarded"
	// mdConsistency "stale" asks for a serializable read from whichever
	// replica the call reaches (docs/api.md).
	mdConsistency = "fedsync-consistency"
)

type staleKey struct{}

// WithStaleRead returns a context whose reads may be served by any replica,
// possibly behind the leader.
func WithStaleRead(ctx context.Context) context.Context {
	return context.WithValue(ctx, staleKey{}, true)
}

func staleAllowed(ctx context.Context) bool {
	if v, _ := ctx.Value(staleKey{}).(bool); v {
		return true
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(mdConsistency)
	return len(vals) > 0 && vals[0] == "stale"
}

// leaderRouting is the Service middleware that serves each call on the
// leader.
type leaderRouting struct {
	Service
	node  node
	creds credentials.TransportCredentials

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// LeaderRoutingMiddleware serves calls that need the leader on it.
func LeaderRoutingMiddleware(n node, creds credentials.TransportCredentials) Middleware {
	return func(next Service) Service {
		return &leaderRouting{Service: next, node: n, creds: creds, conns: map[string]*grpc.ClientConn{}}
	}
}

func (m *leaderRouting) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, cc := range m.conns {
		cc.Close()
	}
}

func (m *leaderRouting) client(addr string) (fedsyncv1.StateStoreServiceClient, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cc, ok := m.conns[addr]
	if !ok {
		opts := append(append([]grpc.DialOption{grpc.WithTransportCredentials(m.creds),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxGRPCMessage), grpc.MaxCallSendMsgSize(maxGRPCMessage))},
			raftgroup.PeerDialOptions()...), telemetry.GRPCDialOptions()...)
		var err error
		if cc, err = grpc.NewClient(addr, opts...); err != nil {
			return nil, err
		}
		m.conns[addr] = cc
	}
	return fedsyncv1.NewStateStoreServiceClient(cc), nil
}

// route serves req here when this replica leads (or, for a read that may be
// stale, always), else on the leader. During an election it waits for the
// new leader (up to -raft.leader-wait) rather than refuse at once, retrying
// only what certainly did not happen: a call refused before it was proposed,
// or one the old leader's address never took.
func route[Req, Resp any](ctx context.Context, m *leaderRouting, req Req, read bool,
	local func(context.Context, Req) (Resp, error),
	remote func(fedsyncv1.StateStoreServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error),
) (Resp, error) {
	return raftgroup.DuringElection(ctx, m.node.Wait, raftgroup.NotTaken, func() (Resp, error) { return routeOnce(ctx, m, req, read, local, remote) })
}

func routeOnce[Req, Resp any](ctx context.Context, m *leaderRouting, req Req, read bool,
	local func(context.Context, Req) (Resp, error),
	remote func(fedsyncv1.StateStoreServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error),
) (Resp, error) {
	var zero Resp
	if m.node.IsLeader() || (read && staleAllowed(ctx)) {
		return local(ctx, req)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if len(md.Get(mdForwarded)) > 0 {
		return zero, m.node.NotLeader()
	}
	leader := m.node.Leader(ctx)
	switch leader {
	case "":
		return zero, m.node.NoLeader()
	case m.node.ID:
		return local(ctx, req)
	}
	c, err := m.client(leader)
	if err != nil {
		return zero, err
	}
	out := metadata.Pairs(mdForwarded, m.node.ID)
	if read && staleAllowed(ctx) {
		out.Set(mdConsistency, "stale")
	}
	return remote(c, metadata.NewOutgoingContext(ctx, out), req)
}

// verified returns resp once this replica has confirmed it still leads (a
// round of heartbeats to a majority), so that a read it served is
// linearizable: no newer leader can have committed anything it does not hold.
func verified[Resp any](ctx context.Context, m *leaderRouting, resp Resp, err error) (Resp, error) {
	if err != nil || staleAllowed(ctx) || !m.node.IsLeader() {
		return resp, err
	}
	if verr := m.node.VerifyLeader(); verr != nil {
		var zero Resp
		return zero, verr
	}
	return resp, nil
}

func (m *leaderRouting) Apply(ctx context.Context, req *fedsyncv1.ApplyRequest) (*fedsyncv1.ApplyResponse, error) {
	return route(ctx, m, req, false, m.Service.Apply, fedsyncv1.StateStoreServiceClient.Apply)
}

func (m *leaderRouting) ApplyBatch(ctx context.Context, req *fedsyncv1.ApplyBatchRequest) (*fedsyncv1.ApplyBatchResponse, error) {
	return route(ctx, m, req, false, m.Service.ApplyBatch, fedsyncv1.StateStoreServiceClient.ApplyBatch)
}

func (m *leaderRouting) RecordOutcome(ctx context.Context, req *fedsyncv1.RecordOutcomeRequest) (*fedsyncv1.RecordOutcomeResponse, error) {
	return route(ctx, m, req, false, m.Service.RecordOutcome, fedsyncv1.StateStoreServiceClient.RecordOutcome)
}

func (m *leaderRouting) SetControl(ctx context.Context, req *fedsyncv1.SetControlRequest) (*fedsyncv1.SetControlResponse, error) {
	return route(ctx, m, req, false, m.Service.SetControl, fedsyncv1.StateStoreServiceClient.SetControl)
}

func (m *leaderRouting) Get(ctx context.Context, req *fedsyncv1.GetRequest) (*fedsyncv1.GetResponse, error) {
	return route(ctx, m, req, true, linearizable(m, m.Service.Get), fedsyncv1.StateStoreServiceClient.Get)
}

func (m *leaderRouting) Query(ctx context.Context, req *fedsyncv1.QueryRequest) (*fedsyncv1.QueryResponse, error) {
	return route(ctx, m, req, true, linearizable(m, m.Service.Query), fedsyncv1.StateStoreServiceClient.Query)
}

func (m *leaderRouting) GetMany(ctx context.Context, req *fedsyncv1.GetManyRequest) (*fedsyncv1.GetManyResponse, error) {
	return route(ctx, m, req, true, linearizable(m, m.Service.GetMany), fedsyncv1.StateStoreServiceClient.GetMany)
}

// linearizable wraps a read served by the leader: first the leader has
// applied everything committed before its term began (a new leader may
// hold entries its predecessor acknowledged and it has not applied yet: a
// Raft barrier once per term), then the read, then a round of heartbeats
// confirms it still led.
func linearizable[Req, Resp any](m *leaderRouting, read func(context.Context, Req) (Resp, error)) func(context.Context, Req) (Resp, error) {
	return func(ctx context.Context, req Req) (Resp, error) {
		var zero Resp
		if !staleAllowed(ctx) && m.node.IsLeader() {
			if err := m.node.CaughtUp(ctx); err != nil {
				return zero, apierr.New(apierr.Unavailable, "Replica %s could not apply its log before a linearizable read: %v. Retry.", m.node.ID, err).WithRetryAfter(200 * time.Millisecond)
			}
		}
		resp, err := read(ctx, req)
		return verified(ctx, m, resp, err)
	}
}

func (m *leaderRouting) ReadLog(ctx context.Context, req *fedsyncv1.ReadLogRequest) (*fedsyncv1.ReadLogResponse, error) {
	return route(ctx, m, req, true, m.Service.ReadLog, fedsyncv1.StateStoreServiceClient.ReadLog)
}

func (m *leaderRouting) GetFrontier(ctx context.Context, req *fedsyncv1.GetFrontierRequest) (*fedsyncv1.GetFrontierResponse, error) {
	return route(ctx, m, req, true, m.Service.GetFrontier, fedsyncv1.StateStoreServiceClient.GetFrontier)
}

func (m *leaderRouting) GetDigests(ctx context.Context, req *fedsyncv1.GetDigestsRequest) (*fedsyncv1.GetDigestsResponse, error) {
	return route(ctx, m, req, true, m.Service.GetDigests, fedsyncv1.StateStoreServiceClient.GetDigests)
}

func (m *leaderRouting) GetOutcome(ctx context.Context, req *fedsyncv1.GetOutcomeRequest) (*fedsyncv1.GetOutcomeResponse, error) {
	return route(ctx, m, req, true, m.Service.GetOutcome, fedsyncv1.StateStoreServiceClient.GetOutcome)
}

func (m *leaderRouting) ListConflicts(ctx context.Context, req *fedsyncv1.ListConflictsRequest) (*fedsyncv1.ListConflictsResponse, error) {
	return route(ctx, m, req, true, m.Service.ListConflicts, fedsyncv1.StateStoreServiceClient.ListConflicts)
}

func (m *leaderRouting) GetConflict(ctx context.Context, req *fedsyncv1.GetConflictRequest) (*fedsyncv1.GetConflictResponse, error) {
	return route(ctx, m, req, true, m.Service.GetConflict, fedsyncv1.StateStoreServiceClient.GetConflict)
}

func (m *leaderRouting) GetControl(ctx context.Context, req *fedsyncv1.GetControlRequest) (*fedsyncv1.GetControlResponse, error) {
	return route(ctx, m, req, true, m.Service.GetControl, fedsyncv1.StateStoreServiceClient.GetControl)
}

// Backups are the leader's: it exports its state, lists and verifies what
// its backup store holds, and restores (Raft's user restore runs only on the
// leader).

func (m *leaderRouting) CreateBackup(ctx context.Context, req *fedsyncv1.CreateBackupRequest) (*fedsyncv1.CreateBackupResponse, error) {
	return route(ctx, m, req, false, m.Service.CreateBackup, fedsyncv1.StateStoreServiceClient.CreateBackup)
}

func (m *leaderRouting) ListBackups(ctx context.Context, req *fedsyncv1.ListBackupsRequest) (*fedsyncv1.ListBackupsResponse, error) {
	return route(ctx, m, req, false, m.Service.ListBackups, fedsyncv1.StateStoreServiceClient.ListBackups)
}

func (m *leaderRouting) VerifyBackup(ctx context.Context, req *fedsyncv1.VerifyBackupRequest) (*fedsyncv1.VerifyBackupResponse, error) {
	return route(ctx, m, req, false, m.Service.VerifyBackup, fedsyncv1.StateStoreServiceClient.VerifyBackup)
}

func (m *leaderRouting) RestoreBackup(ctx context.Context, req *fedsyncv1.RestoreBackupRequest) (*fedsyncv1.RestoreBackupResponse, error) {
	return route(ctx, m, req, false, m.Service.RestoreBackup, fedsyncv1.StateStoreServiceClient.RestoreBackup)
}
