package healthmonitor

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"google.golang.org/grpc"

	"github.com/fedsync/fedsync/libs/discovery"
	"github.com/fedsync/fedsync/libs/kafkabus"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Issue kinds of the health API.
const (
	IssueConsumerStuck = "consumer_stuck"
	IssueOutboxStuck   = "outbox_stuck"
	IssueDeadLetters   = "dead_letters"
)

// PipelineProbe reads the positions the pipeline watch compares. Each is a
// count that only grows while the stage works.
type PipelineProbe interface {
	// MergeLag is the records of fedsync.deltas merge has not finished, and
	// the position it has committed (summed over partitions).
	MergeLag(ctx context.Context) (lag, committed int64, err error)
	// CommitHead is the last seq of statestore's commit log.
	CommitHead(ctx context.Context) (uint64, error)
	// Published is how many records fedsync.committed holds (its end
	// offsets, summed over partitions).
	Published(ctx context.Context) (int64, error)
	// DeadLettered is how many records fedsync.deltas.dlq holds.
	DeadLettered(ctx context.Context) (int64, error)
}

// pipeline watches the data path for stalls that instance probes cannot see:
// every process answers its health check, yet nothing moves.
//
//   - merge: deltas wait (lag > 0) but merge's committed position has not moved
//     for Stall;
//   - the outbox: statestore's log grew but fedsync.committed did not, for
//     Stall;
//   - dead letters: records reached fedsync.deltas.dlq within DLQWindow.
//
// Each makes the health API degraded and names the reason.
type pipeline struct {
	probe     PipelineProbe
	stall     time.Duration
	dlqWindow time.Duration
	logger    log.Logger
	now       func() time.Time

	// positions last seen moving, and when
	committed, published int64
	head                 uint64
	mergeMoved, outMoved time.Time
	dlq                  []dlqMark // dead-letter counts within the window
	started              bool

	mu     sync.Mutex
	issues []*fedsyncv1.HealthIssue
}

type dlqMark struct {
	at time.Time
	n  int64
}

func newPipeline(p PipelineProbe, stall, dlqWindow time.Duration, logger log.Logger) *pipeline {
	return &pipeline{probe: p, stall: stall, dlqWindow: dlqWindow, logger: logger, now: time.Now}
}

// check reads the positions once and updates the issues.
func (p *pipeline) check(ctx context.Context) {
	now := p.now()
	var issues []*fedsyncv1.HealthIssue
	lag, committed, errM := p.probe.MergeLag(ctx)
	head, errH := p.probe.CommitHead(ctx)
	published, errP := p.probe.Published(ctx)
	dead, errD := p.probe.DeadLettered(ctx)
	if !p.started {
		p.committed, p.head, p.published, p.mergeMoved, p.outMoved, p.started = committed, head, published, now, now, true
	}
	if errM == nil {
		if committed != p.committed || lag == 0 {
			p.committed, p.mergeMoved = committed, now
		}
		if lag > 0 && now.Sub(p.mergeMoved) >= p.stall {
			issues = append(issues, &fedsyncv1.HealthIssue{Kind: IssueConsumerStuck,
				Message: fmt.Sprintf("merge has not finished a delta of fedsync.deltas for %s while %d wait", now.Sub(p.mergeMoved).Round(time.Second), lag)})
		}
	}
	if errH == nil && errP == nil {
		// Moving when both moved, or neither (nothing to publish).
		if published != p.published || head == p.head {
			p.published, p.head, p.outMoved = published, head, now
		}
		if head != p.head && now.Sub(p.outMoved) >= p.stall {
			issues = append(issues, &fedsyncv1.HealthIssue{Kind: IssueOutboxStuck,
				Message: fmt.Sprintf("statestore committed %d changes that have not reached fedsync.committed for %s", head-p.head, now.Sub(p.outMoved).Round(time.Second))})
		}
	}
	if errD == nil {
		p.dlq = append(p.dlq, dlqMark{at: now, n: dead})
		for len(p.dlq) > 1 && now.Sub(p.dlq[0].at) > p.dlqWindow {
			p.dlq = p.dlq[1:]
		}
		if grew := dead - p.dlq[0].n; grew > 0 {
			issues = append(issues, &fedsyncv1.HealthIssue{Kind: IssueDeadLetters,
				Message: fmt.Sprintf("%d deltas went to fedsync.deltas.dlq in the last %s (%d in all); see merge's log and fedsync_merge_dead_letters_total", grew, p.dlqWindow, dead)})
		}
	}
	for _, err := range []error{errM, errH, errP, errD} {
		if err != nil && ctx.Err() == nil {
			level.Debug(p.logger).Log("msg", "pipeline position unreadable", "err", err)
		}
	}
	p.mu.Lock()
	p.issues = issues
	p.mu.Unlock()
}

// current returns the issues found by the last check.
func (p *pipeline) current() []*fedsyncv1.HealthIssue {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.issues
}

// kafkaProbe reads the pipeline's positions from Kafka and statestore.
type kafkaProbe struct {
	merge, committed, dlq *kafkabus.LagReader
	store                 *discovery.Peer
	head                  uint64
}

func (k *kafkaProbe) MergeLag(ctx context.Context) (int64, int64, error) { return k.merge.Lag(ctx) }

func (k *kafkaProbe) Published(ctx context.Context) (int64, error) { return k.committed.End(ctx) }

func (k *kafkaProbe) DeadLettered(ctx context.Context) (int64, error) { return k.dlq.End(ctx) }

func (k *kafkaProbe) CommitHead(ctx context.Context) (uint64, error) {
	// Reading after the last head seen returns at most one entry and the head.
	resp, err := discovery.Invoke(ctx, k.store, func(ctx context.Context, cc grpc.ClientConnInterface) (*fedsyncv1.ReadLogResponse, error) {
		return fedsyncv1.NewStateStoreServiceClient(cc).ReadLog(ctx, &fedsyncv1.ReadLogRequest{AfterSeq: k.head, Limit: 1})
	})
	if err != nil {
		return 0, err
	}
	k.head = resp.GetHeadSeq()
	return k.head, nil
}
