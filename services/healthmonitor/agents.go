package healthmonitor

import (
	"context"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/kafkabus"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// agents tracks agents' heartbeats (seed 4.1: an agent silent for 30 s is down).
type agents struct {
	timeout time.Duration
	now     func() time.Time
	logger  log.Logger
	alert   func(name string, labels ...string)

	mu       sync.Mutex
	lastSeen map[string]time.Time
	region   map[string]string
	down     map[string]bool
}

func newAgents(timeout time.Duration, logger log.Logger, alert func(string, ...string)) *agents {
	return &agents{timeout: timeout, now: time.Now, logger: logger, alert: alert,
		lastSeen: map[string]time.Time{}, region: map[string]string{}, down: map[string]bool{}}
}

func (a *agents) seen(hb *fedsyncv1.Heartbeat) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastSeen[hb.GetAgentId()] = a.now()
	a.region[hb.GetAgentId()] = hb.GetRegion()
	if a.down[hb.GetAgentId()] {
		delete(a.down, hb.GetAgentId())
		level.Info(a.logger).Log("msg", "agent back", "agent", hb.GetAgentId())
	}
}

// counts returns healthy and unhealthy agents, raising an alert for each agent
// that just went silent.
func (a *agents) counts() (healthy, unhealthy int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	for id, t := range a.lastSeen {
		if now.Sub(t) <= a.timeout {
			healthy++
			continue
		}
		unhealthy++
		if !a.down[id] {
			a.down[id] = true
			level.Error(a.logger).Log("msg", "alert: agent heartbeat missing", "alert", "heartbeat_missing", "agent", id, "region", a.region[id], "silent_for", now.Sub(t).Round(time.Second))
			a.alert("heartbeat_missing", id, a.region[id])
		}
	}
	return healthy, unhealthy
}

// handler consumes fedsync.heartbeats.
func (a *agents) handler() kafkabus.Handler {
	return func(_ context.Context, m kafkabus.Message) error {
		env := &fedsyncv1.SyncMessage{}
		hb := &fedsyncv1.Heartbeat{}
		if proto.Unmarshal(m.Value, env) != nil || env.GetType() != fedsyncv1.MessageType_HEARTBEAT || proto.Unmarshal(env.GetPayload(), hb) != nil {
			return nil // not a heartbeat: nothing to track
		}
		a.seen(hb)
		return nil
	}
}
