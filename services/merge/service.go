// Package merge is fedsync's central coordinator merge (seed 3.2 step 5): it
// consumes admitted deltas from Kafka, merges each into its document under the
// delta's consistency mode, and commits the result through statestore by
// compare-and-set. Strong-consistency deltas arrive over gRPC and are answered only
// after commit.
package merge

import (
	"context"
	"errors"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/statedoc"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Service is the merge business logic.
type Service interface {
	// Merge applies an eventual or causal delta; it is idempotent per message id.
	Merge(ctx context.Context, d *fedsyncv1.Delta) (*MergeResult, error)
	// CommitStrong applies a strong delta by compare-and-set on its expected version.
	CommitStrong(ctx context.Context, req *fedsyncv1.CommitStrongRequest) (*fedsyncv1.CommitStrongResponse, error)
}

// MergeResult says what a merge did.
type MergeResult struct {
	// Version is the committed version, or the current one when nothing changed.
	Version int64
	// Outcome is "committed", "superseded" (every field lost to a later write) or
	// "duplicate" (the message id was applied before).
	Outcome string
}

// StateStore is what merge needs of statestore.
type StateStore interface {
	Get(ctx context.Context, id string) (*fedsyncv1.State, error)
	Apply(ctx context.Context, req *fedsyncv1.ApplyRequest) (*fedsyncv1.ApplyResponse, error)
}

type service struct {
	store      StateStore
	maxRetries int
}

// NewService returns the merge logic committing to store.
func NewService(store StateStore, maxRetries int) Service {
	return &service{store: store, maxRetries: maxRetries}
}

var errTooManyRetries = errors.New("compare-and-set kept conflicting")

func (s *service) Merge(ctx context.Context, d *fedsyncv1.Delta) (*MergeResult, error) {
	patch, err := validateDelta(d)
	if err != nil {
		return nil, err
	}
	for attempt := 0; attempt < s.maxRetries; attempt++ {
		cur, err := s.current(ctx, d.GetId())
		if err != nil {
			return nil, err
		}
		req := planEventual(cur, d, patch)
		if req == nil {
			return &MergeResult{Version: cur.GetVersion(), Outcome: "superseded"}, nil
		}
		resp, err := s.store.Apply(ctx, req)
		if apierr.As(err).Code == apierr.VersionConflict && err != nil {
			continue // another commit won the race: merge again on top of it
		}
		if err != nil {
			return nil, err
		}
		if resp.GetDuplicate() {
			return &MergeResult{Version: resp.GetVersion(), Outcome: "duplicate"}, nil
		}
		return &MergeResult{Version: resp.GetVersion(), Outcome: "committed"}, nil
	}
	return nil, apierr.New(apierr.Unavailable, "Merging %s: %v %d times.", d.GetId(), errTooManyRetries, s.maxRetries)
}

func (s *service) CommitStrong(ctx context.Context, req *fedsyncv1.CommitStrongRequest) (*fedsyncv1.CommitStrongResponse, error) {
	d := req.GetDelta()
	patch, err := validateDelta(d)
	if err != nil {
		return nil, err
	}
	if !d.GetHasExpectedVersion() {
		return nil, apierr.New(apierr.InvalidArgument, "Field expected_version is required with consistency strong.")
	}
	cur, err := s.current(ctx, d.GetId())
	if err != nil {
		return nil, err
	}
	if cur.GetVersion() != d.GetExpectedVersion() {
		return nil, apierr.New(apierr.VersionConflict, "State %s is at version %d, not %d.", d.GetId(), cur.GetVersion(), d.GetExpectedVersion()).
			WithDetail("current_version", cur.GetVersion())
	}
	resp, err := s.store.Apply(ctx, planStrong(cur, d, patch))
	if err != nil {
		return nil, err
	}
	return &fedsyncv1.CommitStrongResponse{Version: resp.GetVersion()}, nil
}

// current returns the stored document, or nil when it does not exist yet.
func (s *service) current(ctx context.Context, id string) (*fedsyncv1.State, error) {
	cur, err := s.store.Get(ctx, id)
	if apierr.As(err).Code == apierr.NotFound && err != nil {
		return nil, nil
	}
	return cur, err
}

func validateDelta(d *fedsyncv1.Delta) (statedoc.Object, error) {
	if d == nil {
		return nil, apierr.New(apierr.InvalidArgument, "Field delta is required.")
	}
	if !statedoc.ValidID(d.GetId()) {
		return nil, apierr.New(apierr.InvalidArgument, "Field id %s.", statedoc.IDRule)
	}
	patch, err := statedoc.DecodeObject(d.GetPatch())
	if err != nil {
		return nil, apierr.New(apierr.InvalidArgument, "Field patch %v.", err)
	}
	return patch, nil
}
