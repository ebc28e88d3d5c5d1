package raftgroup

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/mtls"
	"github.com/fedsync/fedsync/libs/telemetry"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// A service whose writes are commands of its state machine (authn) lets any
// replica take a write: Submit proposes it on the leader, here or over the
// RaftService of the leader's gRPC address (its ID). The state machine's
// result travels back as bytes, its errors as fedsync errors.

// forwarder keeps one connection per leader address.
type forwarder struct {
	creds credentials.TransportCredentials
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// EnableForwarding lets Submit send commands to a leader elsewhere, over
// connections made with creds (the service's client certificate).
func (n *Node) EnableForwarding(creds credentials.TransportCredentials) {
	n.fwd = &forwarder{creds: creds, conns: map[string]*grpc.ClientConn{}}
}

// PeerDialOptions are for connections from a replica to another of its
// group (calls sent on to the leader). gRPC's default reconnect backoff grows
// to two minutes, and while a connection waits to reconnect every call on it
// fails at once with the last dial error: a replica that found a peer not
// yet listening (all of them start together) would keep failing calls to it
// long after it serves. Here a connection retries within half a second.
func PeerDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
		MinConnectTimeout: time.Second,
	})}
}

func (f *forwarder) client(addr string) (fedsyncv1.RaftServiceClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cc, ok := f.conns[addr]
	if !ok {
		opts := append([]grpc.DialOption{grpc.WithTransportCredentials(f.creds)}, PeerDialOptions()...)
		var err error
		if cc, err = grpc.NewClient(addr, append(opts, telemetry.GRPCDialOptions()...)...); err != nil {
			return nil, err
		}
		f.conns[addr] = cc
	}
	return fedsyncv1.NewRaftServiceClient(cc), nil
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, cc := range f.conns {
		cc.Close()
	}
}

// Submit commits the encoded command raw through the group from any
// replica and returns the bytes the state machine returned for it (nil
// when it returned nothing). During an election it waits for the new leader
// (up to Wait), retrying only what certainly did not happen: a call refused
// before it was proposed, or one the old leader's address never took.
func (n *Node) Submit(ctx context.Context, raw []byte) ([]byte, error) {
	return DuringElection(ctx, n.Wait, NotTaken, func() ([]byte, error) { return n.submitOnce(ctx, raw) })
}

// DuringElection calls fn until it succeeds, fails with an error retryable
// does not accept, ctx ends, or wait has passed: a call refused for want of
// a leader, or sent to one that just died, waits for the next leader.
func DuringElection[T any](ctx context.Context, wait time.Duration, retryable func(error) bool, fn func() (T, error)) (T, error) {
	deadline := time.Now().Add(wait)
	for {
		out, err := fn()
		if err == nil || !retryable(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return out, err
		}
		select {
		case <-ctx.Done():
			return out, err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (n *Node) submitOnce(ctx context.Context, raw []byte) ([]byte, error) {
	if n.IsLeader() {
		return n.proposeBytes(ctx, raw)
	}
	leader := n.Leader(ctx)
	switch {
	case leader == "":
		return nil, n.NoLeader()
	case leader == n.ID:
		return n.proposeBytes(ctx, raw)
	case n.fwd == nil:
		return nil, n.NotLeader()
	}
	c, err := n.fwd.client(leader)
	if err != nil {
		return nil, err
	}
	resp, err := c.Propose(ctx, &fedsyncv1.ProposeRequest{Command: raw})
	if err != nil {
		return nil, err
	}
	// Read-your-writes: what the caller reads from this replica next
	// includes the change.
	n.awaitApplied(ctx, resp.GetIndex())
	return resp.GetResult(), nil
}

// awaitApplied waits until this replica's store holds the log up to index,
// for at most Wait. (Raft's own AppliedIndex counts entries handed to the
// state machine, not yet applied.)
func (n *Node) awaitApplied(ctx context.Context, index uint64) {
	deadline := time.Now().Add(n.Wait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if applied, err := n.fsm.AppliedIndex(); err == nil && applied >= index {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (n *Node) proposeBytes(ctx context.Context, raw []byte) ([]byte, error) {
	b, _, err := n.proposeIndexed(ctx, raw)
	return b, err
}

func (n *Node) proposeIndexed(ctx context.Context, raw []byte) ([]byte, uint64, error) {
	res, index, err := n.apply(ctx, raw)
	if err != nil {
		return nil, 0, err
	}
	b, _ := res.([]byte)
	return b, index, nil
}

// NotTaken reports whether err certainly left the call undone: a replica
// refused it as not the leader, or the transport could not reach the
// replica it was sent to (a leader that just died).
func NotTaken(err error) bool {
	if IsNotLeader(err) {
		return true
	}
	if apierr.IsAnswered(err) {
		return false
	}
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable
}

// Server is the RaftService of a replica: it proposes what a follower of the
// same service hands it, when it leads.
type Server struct {
	fedsyncv1.UnimplementedRaftServiceServer
	Node *Node
}

// Propose implements RaftService.
func (s Server) Propose(ctx context.Context, req *fedsyncv1.ProposeRequest) (*fedsyncv1.ProposeResponse, error) {
	if err := s.allowed(ctx); err != nil {
		return nil, err
	}
	// A follower forwards only to the leader it knows; a replica that is no
	// longer the leader refuses instead of forwarding again.
	out, index, err := s.Node.proposeIndexed(ctx, req.Command)
	if err != nil {
		return nil, err
	}
	return &fedsyncv1.ProposeResponse{Result: out, Index: index}, nil
}

// CatchUp makes this replica hold every change the group acknowledged before
// the call: the leader confirms it still leads (a heartbeat round); a
// follower asks the leader how far it has applied (ReadIndex) and waits, up
// to Wait, to have applied as far. A read is safe to repeat, so during an
// election CatchUp waits for the new leader, up to Wait, and only then
// reports the group unavailable.
func (n *Node) CatchUp(ctx context.Context) error {
	_, err := DuringElection(ctx, n.Wait, retryableRead, func() (struct{}, error) { return struct{}{}, n.catchUpOnce(ctx) })
	return err
}

// retryableRead: a refusal by a replica that no longer leads, no leader yet,
// or a transport failure; never a refusal of the caller (permission).
func retryableRead(err error) bool {
	if NotTaken(err) {
		return true
	}
	return apierr.As(err).Code == apierr.Unavailable
}

func (n *Node) catchUpOnce(ctx context.Context) error {
	if n.IsLeader() {
		return n.VerifyLeader() // the leader applies before it acknowledges
	}
	leader := n.Leader(ctx)
	switch {
	case leader == "":
		return n.NoLeader()
	case leader == n.ID || n.fwd == nil:
		return nil
	}
	c, err := n.fwd.client(leader)
	if err != nil {
		return err
	}
	resp, err := c.ReadIndex(ctx, &fedsyncv1.ReadIndexRequest{})
	if err != nil {
		return err
	}
	n.awaitApplied(ctx, resp.GetIndex())
	return nil
}

// ReadIndex implements RaftService.
func (s Server) ReadIndex(ctx context.Context, _ *fedsyncv1.ReadIndexRequest) (*fedsyncv1.ReadIndexResponse, error) {
	if err := s.allowed(ctx); err != nil {
		return nil, err
	}
	if !s.Node.IsLeader() {
		return nil, s.Node.NotLeader()
	}
	if err := s.Node.VerifyLeader(); err != nil {
		return nil, err
	}
	return &fedsyncv1.ReadIndexResponse{Index: s.Node.Raft.AppliedIndex()}, nil
}

// allowed admits only replicas of the same service. Without certificates
// (tests, a group of one on loopback) there is no caller to check.
func (s Server) allowed(ctx context.Context) error {
	if caller := mtls.CallerService(ctx); caller != "" && caller != s.Node.Group {
		return apierr.New(apierr.PermissionDenied, "Only %s replicas may call the %s group's RaftService, not %s.", s.Node.Group, s.Node.Group, caller)
	}
	return nil
}
