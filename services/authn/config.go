package authn

import (
	"errors"
	"flag"
	"time"

	"github.com/fedsync/fedsync/libs/atrest"
	"github.com/fedsync/fedsync/libs/raftgroup"
	"github.com/fedsync/fedsync/libs/svcrun"
)

// Config configures an authn instance.
type Config struct {
	Service svcrun.Config
	// ClientsFile is the client registry: {"clients":[{"client_id",...}]}.
	ClientsFile  string
	TokenTTL     time.Duration
	FederationID string
	// BcryptCost is the work factor of client secret hashes.
	BcryptCost int
	// KeyRotation is how often the signing key rotates (seed 6.1: quarterly).
	KeyRotation time.Duration
	// Token endpoint throttling (see throttle).
	FreeFailuresAddr, FreeFailuresID int
	MaxDelay                         time.Duration
	AddrRate                         float64
	AddrBurst                        int
	ProxyHops                        int
	// Raft places this replica in authn's Raft group (docs/replication.md).
	Raft raftgroup.Config
	// AtRest are the keys that seal the registry, the Raft log and snapshots.
	AtRest atrest.Config
}

// ParseConfig reads the configuration from flags and FEDSYNC_* variables.
func ParseConfig(fs *flag.FlagSet, args []string) (*Config, error) {
	c := &Config{}
	c.Service.RegisterFlags(fs, "authn", "127.0.0.1:19101", "127.0.0.1:19201")
	fs.StringVar(&c.ClientsFile, "clients-file", ".fedsync/dev/clients.json", "bootstrap clients imported into the registry when absent from it (empty: none)")
	fs.DurationVar(&c.TokenTTL, "token-ttl", time.Hour, "lifetime of issued access tokens")
	fs.StringVar(&c.FederationID, "federation-id", "superstructure-1", "federation_id claim of issued tokens")
	fs.IntVar(&c.BcryptCost, "bcrypt-cost", 10, "bcrypt work factor of stored client secrets (4..31)")
	fs.DurationVar(&c.KeyRotation, "key-rotation", 90*24*time.Hour, "interval of automatic signing-key rotation")
	fs.IntVar(&c.FreeFailuresAddr, "token.free-failures-addr", 10, "failed credential checks from one address before each further attempt waits a doubling delay")
	fs.IntVar(&c.FreeFailuresID, "token.free-failures-client", 5, "failed credential checks for one client id (from addresses it never succeeded from) before each further attempt waits a doubling delay")
	fs.DurationVar(&c.MaxDelay, "token.max-delay", 5*time.Minute, "longest delay imposed after repeated failures")
	fs.Float64Var(&c.AddrRate, "token.rate", 10, "credential checks per second one address may make (0: no limit)")
	fs.IntVar(&c.AddrBurst, "token.burst", 100, "burst of credential checks one address may make")
	fs.IntVar(&c.ProxyHops, "trusted-proxy-hops", 1, "proxies in front of authn that append to X-Forwarded-For (the edge or Ingress: 1); 0 takes the connection's address")
	c.Raft.RegisterFlags(fs, "127.0.0.1:19501")
	c.AtRest.RegisterFlags(fs)
	return c, svcrun.Parse(fs, args, c.Validate)
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch {
	case c.TokenTTL < time.Minute || c.TokenTTL > 24*time.Hour:
		return errors.New("token-ttl: must be between 1m and 24h")
	case c.FederationID == "":
		return errors.New("federation-id: required")
	case c.Service.DataDir == "":
		return errors.New("data-dir: authn keeps its client registry and signing keys there")
	case c.BcryptCost < 4 || c.BcryptCost > 31:
		return errors.New("bcrypt-cost: must be between 4 and 31")
	case c.KeyRotation < time.Hour:
		return errors.New("key-rotation: must be at least 1h")
	case c.FreeFailuresAddr < 1 || c.FreeFailuresID < 1 || c.MaxDelay < time.Second || c.AddrRate < 0 || c.AddrBurst < 1 || c.ProxyHops < 0:
		return errors.New("token.*: free failures and burst must be at least 1, max-delay at least 1s, rate and trusted-proxy-hops not negative")
	}
	if err := c.Raft.ValidateFor(c.Service.Advertise()); err != nil {
		return err
	}
	if err := c.AtRest.Validate(); err != nil {
		return err
	}
	return c.Service.Validate()
}
