package statestore

import (
	"context"

	"github.com/fedsync/fedsync/libs/raftgroup"
)

// The statestore's replicas form a Raft group (libs/raftgroup): every change
// is a command of the state machine in fsm.go, proposed by the leader.

// node is this replica's member of the statestore group.
type node struct{ *raftgroup.Node }

// propose puts c through the group: in the log of a majority, then applied
// here. Only the leader proposes; a call that reaches a follower is sent on
// to the leader before it gets here (leader.go).
func (n node) propose(ctx context.Context, c *command) (any, error) {
	raw, err := c.encode()
	if err != nil {
		return nil, err
	}
	return n.Propose(ctx, raw)
}
