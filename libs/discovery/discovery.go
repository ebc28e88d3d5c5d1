// Package discovery finds fedsync's services and calls them. In "consul" mode every
// service registers itself in Consul with a gRPC health check, and callers follow
// the healthy instances through go-kit's sd/consul instancer; in "static" mode (the
// embedded default) instance addresses come from configuration. Either way a call
// goes through one go-kit endpoint stack: round-robin load balancing, retry on
// another instance, and a gobreaker circuit breaker per instance.
package discovery

import (
	"errors"
	"flag"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-kit/kit/sd"
	consulsd "github.com/go-kit/kit/sd/consul"
	"github.com/go-kit/log"
	consulapi "github.com/hashicorp/consul/api"
)

// Modes of discovery.
const (
	ModeStatic = "static"
	ModeConsul = "consul"
)

// Config selects how services are found.
type Config struct {
	Mode       string
	ConsulAddr string
	// Peers holds static instance addresses by service name.
	Peers PeerMap
	// CheckInterval is how often Consul runs the gRPC health check.
	CheckInterval time.Duration
}

// RegisterFlags registers the discovery flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Peers = PeerMap{}
	fs.StringVar(&c.Mode, "discovery", ModeStatic, "how to find other services: static (addresses from -peers) or consul")
	fs.StringVar(&c.ConsulAddr, "consul.addr", "127.0.0.1:8500", "Consul agent HTTP address (consul discovery)")
	fs.Var(&c.Peers, "peers", "static instance addresses: name=host:port[,host:port][;name=...]")
	fs.DurationVar(&c.CheckInterval, "consul.check-interval", 10*time.Second, "interval of the gRPC health check Consul runs")
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch c.Mode {
	case ModeStatic, ModeConsul:
	default:
		return fmt.Errorf("discovery: must be %q or %q, got %q", ModeStatic, ModeConsul, c.Mode)
	}
	if c.Mode == ModeConsul && c.ConsulAddr == "" {
		return errors.New("consul.addr: required with -discovery=consul")
	}
	return nil
}

// PeerMap is a flag.Value of static instance addresses by service name.
type PeerMap map[string][]string

// String renders the map in its flag syntax, services sorted.
func (m *PeerMap) String() string {
	if m == nil {
		return ""
	}
	names := make([]string, 0, len(*m))
	for n := range *m {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + "=" + strings.Join((*m)[n], ",")
	}
	return strings.Join(parts, ";")
}

// Set parses "name=addr[,addr];name=addr".
func (m *PeerMap) Set(s string) error {
	out := PeerMap{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, addrs, ok := strings.Cut(part, "=")
		if !ok || name == "" || addrs == "" {
			return fmt.Errorf("peer %q: want name=host:port[,host:port]", part)
		}
		for _, a := range strings.Split(addrs, ",") {
			if a = strings.TrimSpace(a); a != "" {
				out[name] = append(out[name], a)
			}
		}
	}
	*m = out
	return nil
}

// ServiceInfo describes one running instance for registration.
type ServiceInfo struct {
	Name     string
	ID       string
	GRPCAddr string // host:port that serves gRPC and grpc.health.v1
	Tags     []string
	Meta     map[string]string
	// TLS says the gRPC port serves mutual TLS: Consul's check then uses TLS and
	// needs the agent's own federation certificate (enable_agent_tls_for_checks),
	// unless HealthAddr names a plaintext health-only port, which it then checks.
	TLS        bool
	HealthAddr string
}

// Registrar announces an instance while it runs.
type Registrar interface {
	Register()
	Deregister()
}

type noopRegistrar struct{}

func (noopRegistrar) Register()   {}
func (noopRegistrar) Deregister() {}

// Discovery creates registrars and instancers for one mode.
type Discovery struct {
	cfg    Config
	consul consulsd.Client
	logger log.Logger
}

// New returns discovery for cfg.
func New(cfg Config, logger log.Logger) (*Discovery, error) {
	d := &Discovery{cfg: cfg, logger: logger}
	if cfg.Mode == ModeConsul {
		cc := consulapi.DefaultConfig()
		cc.Address = cfg.ConsulAddr
		client, err := consulapi.NewClient(cc)
		if err != nil {
			return nil, fmt.Errorf("create consul client for %s: %w", cfg.ConsulAddr, err)
		}
		d.consul = consulsd.NewClient(client)
	}
	return d, nil
}

// Registrar returns the registrar of an instance: a Consul registration with a
// gRPC health check in consul mode, nothing in static mode.
func (d *Discovery) Registrar(s ServiceInfo) (Registrar, error) {
	if d.consul == nil {
		return noopRegistrar{}, nil
	}
	host, port, err := splitHostPort(s.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", s.ID, err)
	}
	reg := &consulapi.AgentServiceRegistration{
		ID:      s.ID,
		Name:    s.Name,
		Tags:    s.Tags,
		Meta:    s.Meta,
		Address: host,
		Port:    port,
		Check: &consulapi.AgentServiceCheck{
			CheckID:                        "grpc-health-" + s.ID,
			Name:                           "gRPC health of " + s.ID,
			GRPC:                           checkAddr(s),
			Interval:                       d.cfg.CheckInterval.String(),
			Timeout:                        "5s",
			DeregisterCriticalServiceAfter: "1m",
			GRPCUseTLS:                     s.TLS && s.HealthAddr == "",
		},
	}
	return consulsd.NewRegistrar(d.consul, reg, log.With(d.logger, "component", "consul-registrar")), nil
}

// Instancer returns the live instances of a service: the passing instances in
// Consul, or the static addresses.
func (d *Discovery) Instancer(service string) (sd.Instancer, error) {
	if d.consul == nil {
		addrs := d.cfg.Peers[service]
		if len(addrs) == 0 {
			return nil, fmt.Errorf("no address for service %s: pass -peers %s=host:port", service, service)
		}
		return sd.FixedInstancer(addrs), nil
	}
	return consulsd.NewInstancer(d.consul, log.With(d.logger, "component", "consul-instancer", "peer", service), service, nil, true), nil
}

// checkAddr is where Consul runs the gRPC health check: the plaintext health port
// when there is one (on the advertised host), else the gRPC port.
func checkAddr(s ServiceInfo) string {
	if s.HealthAddr == "" {
		return s.GRPCAddr
	}
	host, _, _ := splitHostPort(s.GRPCAddr)
	_, port, err := splitHostPort(s.HealthAddr)
	if err != nil {
		return s.GRPCAddr
	}
	return fmt.Sprintf("%s:%d", host, port)
}

func splitHostPort(addr string) (string, int, error) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return "", 0, fmt.Errorf("address %q has no port", addr)
	}
	var port int
	if _, err := fmt.Sscanf(addr[i+1:], "%d", &port); err != nil || port <= 0 {
		return "", 0, fmt.Errorf("address %q has a bad port", addr)
	}
	return addr[:i], port, nil
}
