package validation

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/fedsync/fedsync/libs/discovery"
	"github.com/fedsync/fedsync/libs/periodic"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// ControlStore keeps the federation's operating state (statestore).
type ControlStore interface {
	GetControl(ctx context.Context) (*fedsyncv1.ControlState, error)
	SetControl(ctx context.Context, st *fedsyncv1.ControlState) (*fedsyncv1.ControlState, error)
}

// control is this instance's view of the federation's pause state (seed 9.2). It
// is kept in statestore so every validation instance follows it, and polled.
type control struct {
	store  ControlStore
	paused atomic.Bool
	// gate is held (read) by each write from its pause check to its answer;
	// apply takes it (write) after a change, so it returns only when no
	// write admitted under the previous state is still in flight.
	gate sync.RWMutex
}

func (c *control) refresh(ctx context.Context) error {
	st, err := c.store.GetControl(ctx)
	if err != nil {
		return err
	}
	c.apply(st.GetPaused())
	return nil
}

// apply sets the pause state; while paused it returns only once every write
// that passed the check before has answered.
func (c *control) apply(paused bool) {
	c.paused.Store(paused)
	if paused {
		c.gate.Lock()
		//lint:ignore SA2001 a barrier, not a critical section: it returns once every earlier write has released its read lock
		c.gate.Unlock()
	}
}

// run follows the shared state every interval until ctx ends.
func (c *control) run(ctx context.Context, interval time.Duration) error {
	return periodic.Run(ctx, interval, func(ctx context.Context) {
		_ = c.refresh(ctx) // on failure the last known state stays in force
	})
}

// controlClient reaches statestore's control state through discovery.
type controlClient struct{ peer *discovery.Peer }

func (c controlClient) GetControl(ctx context.Context) (*fedsyncv1.ControlState, error) {
	resp, err := discovery.Invoke(ctx, c.peer, func(ctx context.Context, cc grpc.ClientConnInterface) (*fedsyncv1.GetControlResponse, error) {
		return fedsyncv1.NewStateStoreServiceClient(cc).GetControl(ctx, &fedsyncv1.GetControlRequest{})
	})
	return resp.GetState(), err
}

func (c controlClient) SetControl(ctx context.Context, st *fedsyncv1.ControlState) (*fedsyncv1.ControlState, error) {
	resp, err := discovery.Invoke(ctx, c.peer, func(ctx context.Context, cc grpc.ClientConnInterface) (*fedsyncv1.SetControlResponse, error) {
		return fedsyncv1.NewStateStoreServiceClient(cc).SetControl(ctx, &fedsyncv1.SetControlRequest{State: st})
	})
	return resp.GetState(), err
}

// memControl is an in-process ControlStore for a single instance and tests.
type memControl struct {
	st atomic.Pointer[fedsyncv1.ControlState]
}

func (m *memControl) GetControl(context.Context) (*fedsyncv1.ControlState, error) {
	if st := m.st.Load(); st != nil {
		return st, nil
	}
	return &fedsyncv1.ControlState{}, nil
}

func (m *memControl) SetControl(_ context.Context, st *fedsyncv1.ControlState) (*fedsyncv1.ControlState, error) {
	m.st.Store(st)
	return st, nil
}
