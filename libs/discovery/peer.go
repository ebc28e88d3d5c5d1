package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/go-kit/kit/circuitbreaker"
	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"github.com/sony/gobreaker"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/telemetry"
)

// PeerOptions tune calls to a peer service.
type PeerOptions struct {
	// Attempts is the most instances one call tries.
	Attempts int
	// Timeout bounds one call including its retries.
	Timeout time.Duration
	// AttemptTimeout bounds one attempt. An attempt waits for its instance's
	// connection to become ready (a restarting peer is waited for, not failed),
	// so only an instance unreachable for this long counts as a failure.
	AttemptTimeout time.Duration
	// BreakerFailures opens an instance's breaker after this many consecutive
	// infrastructure failures (seed 4.3: 5).
	BreakerFailures uint32
	// BreakerOpen is how long an open breaker rejects calls before a trial (seed: 60 s).
	BreakerOpen time.Duration
	DialOptions []grpc.DialOption
	// BreakerState, when set, is told each breaker's state when it changes
	// and when the breaker is made: 0 closed, 1 half-open, 2 open.
	BreakerState func(breaker string, state int)
	// Credentials secure the connections (mutual TLS); nil means plaintext.
	Credentials credentials.TransportCredentials
	// ConnectWait is how long an attempt waits for its instance's connection
	// when the peer has other instances. An instance whose connection is
	// down (or not up by then: a dead or restarting replica) is skipped: the
	// call moves on to another instance at once, and the skip does not count
	// against the instance's breaker (it was not called; counting it opened
	// every replica's breaker at once during repeated restarts). A peer with
	// one instance is waited for up to AttemptTimeout (a restart).
	ConnectWait time.Duration
}

// DefaultPeerOptions are the seed's circuit-breaker numbers with a 10 s call budget.
func DefaultPeerOptions() PeerOptions {
	return PeerOptions{Attempts: 3, Timeout: 10 * time.Second, AttemptTimeout: 3 * time.Second, ConnectWait: 300 * time.Millisecond, BreakerFailures: 5, BreakerOpen: 60 * time.Second}
}

// Peer calls one service through load balancing, retries and per-instance breakers.
type Peer struct {
	name      string
	instancer sd.Instancer
	endpoints *sd.DefaultEndpointer
	call      endpoint.Endpoint
	dialOpts  []grpc.DialOption
}

// Invocation is one call to make on whichever instance the balancer picks.
type Invocation func(ctx context.Context, cc grpc.ClientConnInterface) (any, error)

// answer carries a business outcome (an error the peer answered with) through the
// breaker and retry layers without counting as a failure.
type answer struct {
	resp any
	err  error
}

// NewPeer returns a caller of service.
func (d *Discovery) NewPeer(service string, opts PeerOptions) (*Peer, error) {
	inst, err := d.Instancer(service)
	if err != nil {
		return nil, err
	}
	logger := log.With(d.logger, "peer", service)
	creds := opts.Credentials
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	dialOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}),
	}, telemetry.GRPCDialOptions()...)
	dialOpts = append(dialOpts, opts.DialOptions...)
	var endpointer *sd.DefaultEndpointer // set below; the factory runs only once it is
	others := func() bool {
		eps, err := endpointer.Endpoints()
		return err == nil && len(eps) > 1
	}
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		cc, err := grpc.NewClient(instance, dialOpts...)
		if err != nil {
			return nil, nil, fmt.Errorf("dial %s at %s: %w", service, instance, err)
		}
		breaker := gobreaker.NewCircuitBreaker(gobreaker.Settings{
			Name:    service + "@" + instance,
			Timeout: opts.BreakerOpen,
			ReadyToTrip: func(c gobreaker.Counts) bool {
				return c.ConsecutiveFailures >= opts.BreakerFailures
			},
			// An instance that answered (even "unavailable": its own
			// dependency is away) is up; only what the transport reports
			// counts against it. The call is still retried elsewhere.
			IsSuccessful: func(err error) bool {
				var skipped *notConnected
				return err == nil || apierr.IsAnswered(err) || errors.As(err, &skipped)
			},
			OnStateChange: func(name string, from, to gobreaker.State) {
				logger.Log("msg", "circuit breaker changed state", "breaker", name, "from", from.String(), "to", to.String())
				if opts.BreakerState != nil {
					opts.BreakerState(name, breakerLevel(to))
				}
			},
		})
		if opts.BreakerState != nil {
			opts.BreakerState(breaker.Name(), 0) // every known instance shows, closed
		}
		ep := func(ctx context.Context, req any) (any, error) {
			if opts.AttemptTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, opts.AttemptTimeout)
				defer cancel()
			}
			if opts.ConnectWait > 0 && cc.GetState() != connectivity.Ready && others() && !connected(ctx, cc, opts.ConnectWait) {
				return nil, &notConnected{apierr.New(apierr.Unavailable, "Service %s at %s cannot be reached.", service, instance)}
			}
			resp, err := req.(Invocation)(ctx, cc)
			// Only availability failures count against the breaker and are
			// retried elsewhere; any other error (INTERNAL included: one
			// request failed, not the peer) is the peer's answer.
			if err != nil && !apierr.IsAvailability(err) {
				return answer{err: err}, nil
			}
			if err != nil {
				return nil, err
			}
			return answer{resp: resp}, nil
		}
		return circuitbreaker.Gobreaker(breaker)(ep), cc, nil
	}
	endpointer = sd.NewEndpointer(inst, factory, logger)
	balancer := lb.NewRoundRobin(endpointer)
	retry := lb.RetryWithCallback(opts.Timeout, balancer, func(n int, err error) (bool, error) {
		if n >= opts.Attempts {
			return false, nil
		}
		// Back off a little so a peer that is starting or failing over can answer.
		time.Sleep(time.Duration(n) * 50 * time.Millisecond)
		return true, nil
	})
	return &Peer{name: service, instancer: inst, endpoints: endpointer, call: retry, dialOpts: dialOpts}, nil
}

// Each runs inv once on every current instance of the peer, concurrently, on
// connections of its own (no balancing, retries or breakers: the caller wants
// each instance's own answer). It returns the instances and the error of each
// that failed.
func (p *Peer) Each(ctx context.Context, inv Invocation) ([]string, map[string]error) {
	ch := make(chan sd.Event, 1)
	p.instancer.Register(ch)
	var ev sd.Event
	select {
	case ev = <-ch:
	case <-ctx.Done():
		ev.Err = ctx.Err()
	}
	p.instancer.Deregister(ch)
	if ev.Err != nil {
		return nil, map[string]error{p.name: ev.Err}
	}
	var mu sync.Mutex
	failed := map[string]error{}
	var wg sync.WaitGroup
	for _, addr := range ev.Instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := func() error {
				cc, err := grpc.NewClient(addr, p.dialOpts...)
				if err != nil {
					return err
				}
				defer cc.Close()
				_, err = inv(ctx, cc)
				return err
			}()
			if err != nil {
				mu.Lock()
				failed[addr] = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ev.Instances, failed
}

// notConnected is an attempt skipped because its instance's connection was
// down: the instance was not called.
type notConnected struct{ err *apierr.Error }

func (e *notConnected) Error() string { return e.err.Error() }
func (e *notConnected) Unwrap() error { return e.err }

// connected waits up to d for cc's connection to be ready, connecting an idle
// one; a connection in transient failure (refused, backing off) is down now.
func connected(ctx context.Context, cc *grpc.ClientConn, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		st := cc.GetState()
		switch st {
		case connectivity.Ready:
			return true
		case connectivity.TransientFailure:
			return false
		case connectivity.Idle:
			cc.Connect()
		}
		if !cc.WaitForStateChange(ctx, st) {
			return false
		}
	}
}

// breakerLevel is a breaker state as a number: 0 closed, 1 half-open, 2 open.
func breakerLevel(s gobreaker.State) int {
	switch s {
	case gobreaker.StateHalfOpen:
		return 1
	case gobreaker.StateOpen:
		return 2
	}
	return 0
}

// Call runs inv on an instance of the peer. Errors the peer answered with come back
// as they are; failures to reach any instance come back as an unavailable error.
func (p *Peer) Call(ctx context.Context, inv Invocation) (any, error) {
	resp, err := p.call(ctx, inv)
	if err != nil {
		var re lb.RetryError
		if errors.As(err, &re) && re.Final != nil {
			err = re.Final
		}
		return nil, apierr.New(apierr.Unavailable, "Service %s is unavailable: %v", p.name, err).WithRetryAfter(time.Second)
	}
	a := resp.(answer)
	return a.resp, a.err
}

// Invoke calls a typed RPC on the peer.
func Invoke[T any](ctx context.Context, p *Peer, fn func(ctx context.Context, cc grpc.ClientConnInterface) (T, error)) (T, error) {
	var zero T
	resp, err := p.Call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface) (any, error) { return fn(ctx, cc) })
	if err != nil {
		return zero, err
	}
	return resp.(T), nil
}

// Instances returns the peer's current instance count; for health reporting.
func (p *Peer) Instances() int {
	eps, _ := p.endpoints.Endpoints()
	return len(eps)
}

// Close stops following the peer's instances and closes their connections.
func (p *Peer) Close() {
	p.endpoints.Close()
	p.instancer.Stop()
}
