// Package healthmonitor watches the federation (seed 4.1, 5): it probes every
// instance of every service through grpc.health.v1, tracks agents' heartbeats
// from Kafka, raises alerts when an instance or agent goes silent, and serves the
// contract's health API.
package healthmonitor

import (
	"context"
	"sort"

	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Service is the healthmonitor's business logic.
type Service interface {
	GetHealth(ctx context.Context, req *fedsyncv1.GetHealthRequest) (*fedsyncv1.GetHealthResponse, error)
}

// Statuses of the health API.
const (
	Healthy   = "healthy"
	Degraded  = "degraded"
	Unhealthy = "unhealthy"
)

type service struct {
	prober   *prober
	agents   *agents
	watched  []string
	pipeline *pipeline
}

func newService(p *prober, a *agents, watched []string) *service {
	return &service{prober: p, agents: a, watched: watched}
}

func statusOf(up, total int) string {
	switch {
	case total == 0 || up == 0:
		return Unhealthy
	case up < total:
		return Degraded
	}
	return Healthy
}

func (s *service) GetHealth(context.Context, *fedsyncv1.GetHealthRequest) (*fedsyncv1.GetHealthResponse, error) {
	resp := &fedsyncv1.GetHealthResponse{Services: map[string]*fedsyncv1.ServiceHealth{}, Regions: map[string]*fedsyncv1.ServiceHealth{}}
	counts := map[string][2]int{}
	regions := map[string][2]int{}
	for _, name := range s.watched {
		counts[name] = [2]int{}
	}
	for _, in := range s.prober.snapshot() {
		c, watched := counts[in.service]
		if !watched {
			continue
		}
		c[1]++
		if in.up {
			c[0]++
		}
		counts[in.service] = c
		if in.region != "" {
			r := regions[in.region]
			r[1]++
			if in.up {
				r[0]++
			}
			regions[in.region] = r
		}
	}
	overall := Healthy
	names := make([]string, 0, len(counts))
	for name := range counts {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c := counts[name]
		st := statusOf(c[0], c[1])
		resp.Services[name] = &fedsyncv1.ServiceHealth{Status: st, Instances: int32(c[1]), HealthyInstances: int32(c[0])}
		switch {
		case st == Unhealthy:
			overall = Unhealthy
		case st == Degraded && overall == Healthy:
			overall = Degraded
		}
	}
	for name, r := range regions {
		resp.Regions[name] = &fedsyncv1.ServiceHealth{Status: statusOf(r[0], r[1]), Instances: int32(r[1]), HealthyInstances: int32(r[0])}
	}
	healthy, unhealthy := s.agents.counts()
	resp.Agents = &fedsyncv1.AgentHealth{Healthy: int32(healthy), Unhealthy: int32(unhealthy)}
	resp.Issues = s.pipeline.current()
	if len(resp.Issues) > 0 && overall == Healthy {
		overall = Degraded
	}
	resp.Status = overall
	return resp, nil
}
