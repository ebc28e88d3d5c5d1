package healthmonitor

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/fedsync/fedsync/libs/svcrun"
	"github.com/fedsync/fedsync/libs/telemetry"
)

// instance is what the prober knows of one service instance.
type instance struct {
	service  string
	addr     string
	region   string
	failures int
	up       bool
	probed   bool
}

// prober follows each watched service's instances (through discovery) and probes
// them with grpc.health.v1; an instance is down after `threshold` consecutive
// failed probes, up again after one good one.
type prober struct {
	creds     credentials.TransportCredentials
	interval  time.Duration
	threshold int
	logger    log.Logger
	alert     func(name string, labels ...string)

	// regions, when set, is told after every round how many instances of
	// each region answer and how many there are (the regional_hub_down
	// alert's input).
	regions func(up, total map[string]int)

	mu        sync.Mutex
	instances map[string]map[string]*instance // service -> addr -> state
	conns     map[string]*grpc.ClientConn
}

func newProber(interval time.Duration, threshold int, logger log.Logger, alert func(string, ...string)) *prober {
	return &prober{interval: interval, threshold: threshold, logger: logger, alert: alert,
		instances: map[string]map[string]*instance{}, conns: map[string]*grpc.ClientConn{}}
}

// follow keeps the instance set of service in step with its instancer.
func (p *prober) follow(ctx context.Context, service string, inst sd.Instancer) {
	ch := make(chan sd.Event, 4)
	inst.Register(ch)
	defer inst.Deregister(ch)
	p.mu.Lock()
	if p.instances[service] == nil {
		p.instances[service] = map[string]*instance{}
	}
	p.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-ch:
			if ev.Err != nil {
				continue
			}
			p.mu.Lock()
			cur := p.instances[service]
			next := map[string]*instance{}
			for _, addr := range ev.Instances {
				if s, ok := cur[addr]; ok {
					next[addr] = s
				} else {
					next[addr] = &instance{service: service, addr: addr}
				}
			}
			p.instances[service] = next
			p.mu.Unlock()
		}
	}
}

func (p *prober) run(ctx context.Context) error {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	p.probeAll(ctx)
	for {
		select {
		case <-ctx.Done():
			p.mu.Lock()
			for _, cc := range p.conns {
				cc.Close()
			}
			p.mu.Unlock()
			return nil
		case <-t.C:
			p.probeAll(ctx)
		}
	}
}

func (p *prober) probeAll(ctx context.Context) {
	p.mu.Lock()
	var all []*instance
	for _, m := range p.instances {
		for _, s := range m {
			all = append(all, s)
		}
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			region, err := p.probe(ctx, s.addr)
			p.record(s, region, err)
		}()
	}
	wg.Wait()
	if p.regions != nil {
		up, total := map[string]int{}, map[string]int{}
		for _, in := range p.snapshot() {
			if in.region == "" || !in.probed {
				continue
			}
			total[in.region]++
			if in.up {
				up[in.region]++
			}
		}
		p.regions(up, total)
	}
}

func (p *prober) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cc, ok := p.conns[addr]; ok {
		return cc, nil
	}
	creds := p.creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, telemetry.GRPCDialOptions()...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = cc
	return cc, nil
}

// probe lists an instance's health and returns its region.
func (p *prober) probe(ctx context.Context, addr string) (string, error) {
	cc, err := p.conn(addr)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, min(2*time.Second, p.interval))
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).List(ctx, &healthpb.HealthListRequest{})
	if err != nil {
		return "", err
	}
	region := ""
	for name, st := range resp.GetStatuses() {
		if r, ok := strings.CutPrefix(name, svcrun.RegionHealthPrefix); ok {
			region = r
		}
		if name == "" && st.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return region, errNotServing
		}
	}
	return region, nil
}

type probeError string

func (e probeError) Error() string { return string(e) }

const errNotServing = probeError("instance reports NOT_SERVING")

func (p *prober) record(s *instance, region string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s.probed = true
	if region != "" {
		s.region = region
	}
	if err == nil {
		if !s.up && s.failures >= p.threshold {
			level.Info(p.logger).Log("msg", "instance recovered", "service", s.service, "addr", s.addr)
		}
		s.up, s.failures = true, 0
		return
	}
	s.failures++
	if s.failures == p.threshold {
		s.up = false
		level.Error(p.logger).Log("msg", "alert: instance down", "alert", "instance_down", "service", s.service, "addr", s.addr, "region", s.region, "err", err)
		p.alert("instance_down", s.service, s.region)
	}
}

// snapshot copies the instance states.
func (p *prober) snapshot() []instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []instance
	for _, m := range p.instances {
		for _, s := range m {
			out = append(out, *s)
		}
	}
	return out
}
