package validation

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/fedsync/fedsync/libs/apierr"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// LagSource reads how many admitted deltas merge has not finished, and merge's
// finished position (growing by the deltas it finishes).
type LagSource interface {
	Lag(ctx context.Context) (lag, committed int64, err error)
}

// admission is back-pressure: when more work is admitted than merge finishes,
// new eventual and causal deltas are refused with 503 and Retry-After instead
// of queueing up as seconds of propagation latency. The bound is the work
// merge finishes in Window at its recent rate, at least Floor deltas and at
// most Max. Strong writes skip Kafka and keep their own time bound.
type admission struct {
	src    LagSource
	window time.Duration
	floor  int64
	max    int64
	logger log.Logger
	// gauge, when set, shows each lag reading (message_queue_depth).
	gauge interface{ Set(float64) }

	lag   atomic.Int64 // last read lag plus what this instance admitted since
	limit atomic.Int64
	rate  atomic.Int64 // deltas/s merge finished recently (EWMA)

	mu       sync.Mutex
	lastDone int64
	lastAt   time.Time
}

func newAdmission(src LagSource, window time.Duration, floor, max int64, logger log.Logger) *admission {
	a := &admission{src: src, window: window, floor: floor, max: max, logger: logger}
	a.limit.Store(max)
	return a
}

// check refuses a delta while the backlog is over the bound.
func (a *admission) check() error {
	if a == nil {
		return nil
	}
	lag, limit := a.lag.Load(), a.limit.Load()
	if lag <= limit {
		return nil
	}
	retry := time.Second
	if r := a.rate.Load(); r > 0 {
		retry = time.Duration(math.Ceil(float64(lag-limit)/float64(r))) * time.Second
	}
	retry = min(max(retry, time.Second), 30*time.Second)
	return apierr.New(apierr.Unavailable, "fedsync is behind: %d admitted deltas wait to be merged, more than the %d it merges in %s; nothing was accepted. Retry with the same message_id after Retry-After.", lag, limit, a.window).
		WithRetryAfter(retry).WithDetail("lag", lag).WithDetail("limit", limit).WithDetail("commit_rate", a.rate.Load())
}

// admitted counts a delta this instance put into the log since the last read.
func (a *admission) admitted() {
	if a != nil {
		a.lag.Add(1)
	}
}

// poll reads the lag once and updates the bound.
func (a *admission) poll(ctx context.Context) {
	lag, done, err := a.src.Lag(ctx)
	if err != nil {
		// Kafka unreachable: producing fails on its own; do not refuse on a
		// stale reading.
		level.Debug(a.logger).Log("msg", "read merge lag", "err", err)
		a.lag.Store(0)
		return
	}
	now := time.Now()
	a.mu.Lock()
	if !a.lastAt.IsZero() && done >= a.lastDone {
		if dt := now.Sub(a.lastAt).Seconds(); dt > 0 {
			inst := float64(done-a.lastDone) / dt
			old := float64(a.rate.Load())
			// Only a backlog shows what merge can do: with nothing waiting, its
			// rate is the offered rate, which says nothing of its capacity.
			switch {
			case old == 0:
				a.rate.Store(int64(inst))
			case lag > 0 || inst > old:
				a.rate.Store(int64(0.7*old + 0.3*inst))
			}
		}
	}
	a.lastDone, a.lastAt = done, now
	a.mu.Unlock()
	limit := int64(float64(a.rate.Load()) * a.window.Seconds())
	a.limit.Store(min(max(limit, a.floor), a.max))
	a.lag.Store(lag)
	if a.gauge != nil {
		a.gauge.Set(float64(lag))
	}
}

// run polls every interval until ctx ends.
func (a *admission) run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		a.poll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// inflight lets concurrent requests carrying the same message id share one
// produce: the first goes to Kafka, the others wait for its answer.
type inflight struct {
	mu    sync.Mutex
	calls map[string]*flight
}

type flight struct {
	done chan struct{}
	resp *fedsyncv1.PushStateResponse
	err  error
}

// do runs fn unless a call with key is running, in which case it waits for
// that call's result.
func (f *inflight) do(ctx context.Context, key string, fn func() (*fedsyncv1.PushStateResponse, error)) (*fedsyncv1.PushStateResponse, error) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]*flight{}
	}
	if c, ok := f.calls[key]; ok {
		f.mu.Unlock()
		select {
		case <-c.done:
			return c.resp, c.err
		case <-ctx.Done():
			return nil, apierr.New(apierr.Unavailable, "The same delta is still being admitted; retry with the same message_id.").WithRetryAfter(time.Second)
		}
	}
	c := &flight{done: make(chan struct{})}
	f.calls[key] = c
	f.mu.Unlock()
	c.resp, c.err = fn()
	f.mu.Lock()
	delete(f.calls, key)
	f.mu.Unlock()
	close(c.done)
	return c.resp, c.err
}
