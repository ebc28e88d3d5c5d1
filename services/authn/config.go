package authn

import (
	"errors"
	"flag"
	"time"

	"github.com/fedsync/fedsync/libs/svcrun"
)

// Config configures an authn instance.
type Config struct {
	Service svcrun.Config
	// ClientsFile is the client registry: {"clients":[{"client_id",...}]}.
	ClientsFile  string
	TokenTTL     time.Duration
	FederationID string
}

// ParseConfig reads the configuration from flags and FEDSYNC_* variables.
func ParseConfig(fs *flag.FlagSet, args []string) (*Config, error) {
	c := &Config{}
	c.Service.RegisterFlags(fs, "authn", "127.0.0.1:19101", "127.0.0.1:19201")
	fs.StringVar(&c.ClientsFile, "clients-file", ".fedsync/dev/clients.json", "client registry file")
	fs.DurationVar(&c.TokenTTL, "token-ttl", time.Hour, "lifetime of issued access tokens")
	fs.StringVar(&c.FederationID, "federation-id", "superstructure-1", "federation_id claim of issued tokens")
	return c, svcrun.Parse(fs, args, c.Validate)
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch {
	case c.ClientsFile == "":
		return errors.New("clients-file: required")
	case c.TokenTTL < time.Minute || c.TokenTTL > 24*time.Hour:
		return errors.New("token-ttl: must be between 1m and 24h")
	case c.FederationID == "":
		return errors.New("federation-id: required")
	case c.Service.DataDir == "":
		return errors.New("data-dir: authn keeps its signing key there")
	}
	return c.Service.Validate()
}
