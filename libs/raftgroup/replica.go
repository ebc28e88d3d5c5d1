package raftgroup

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/fedsync/fedsync/libs/atrest"
	"github.com/fedsync/fedsync/libs/svcrun"
)

// Replica is one replica of a service whose state is a Raft group over a
// bbolt store sealed at rest: what authn and the statestore run.
type Replica struct {
	*Node
	// Vault seals the store's values, the Raft log and the snapshots.
	Vault *atrest.Vault
}

// StartReplica opens the at-rest keys, seals the values of the store's
// sealed buckets and the Raft log and snapshots with them, and starts the
// member over f in rt's data dir. On rt it runs: the stop of a replica that
// cannot apply a committed change (the others go on, a restart replays it),
// and the keeper that re-seals everything when the active key changes.
func StartReplica(rt *svcrun.Runtime, cfg Config, keys atrest.Config, group string, f *BoltFSM, sealed [][]byte) (*Replica, error) {
	vault, err := keys.Open()
	if err != nil {
		return nil, err
	}
	atrest.Register(f.DB, vault)
	rt.OnClose(func() { atrest.Forget(f.DB) })
	fatal := make(chan error, 1)
	f.Fatal = func(err error) {
		select {
		case fatal <- fmt.Errorf("apply a committed change: %w", err):
		default:
		}
	}
	rt.Go("raft apply", func(ctx context.Context) error {
		select {
		case err := <-fatal:
			return err
		case <-ctx.Done():
			return nil
		}
	})
	cfg.Vault = vault
	n, err := Start(cfg, group, rt.Cfg.DataDir, f, rt.Identity, rt.Logger)
	if err != nil {
		return nil, err
	}
	rt.OnClose(n.Close)
	n.RegisterMetrics(rt.Metrics.Registry)
	r := &Replica{Node: n, Vault: vault}
	rt.Go("at-rest keys", func(ctx context.Context) error {
		return atrest.Keep(ctx, vault, keys.Reload, func() (map[string]int, error) { return r.Reseal(f.DB, sealed) }, rt.Metrics.Registry, rt.Logger)
	})
	return r, nil
}

// Reseal re-seals the sealed buckets of the store db, the Raft log and the
// snapshots with the active key and returns how many items each key seals
// after the pass.
func (r *Replica) Reseal(db *bolt.DB, sealed [][]byte) (map[string]int, error) {
	refs, err := r.Vault.Reseal(db, sealed)
	if err != nil {
		return refs, err
	}
	raft, err := r.Node.Reseal()
	for k, n := range raft {
		refs[k] += n
	}
	return refs, err
}
