// Package mtls is the mutual TLS between fedsync's services: TLS 1.3 only, every
// peer presents a certificate from the federation's CA naming its service
// (URI SAN spiffe://fedsync/<service>), and certificates and the CA are re-read
// when their files change, without a restart. It also issues the local
// development CA and certificates that make run uses.
package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// URIPrefix starts the URI SAN that names a service.
const URIPrefix = "spiffe://fedsync/"

// Config names the files of one instance's identity.
type Config struct {
	CA, Cert, Key string
	// Reload is how often the files are checked for changes.
	Reload time.Duration
}

// RegisterFlags registers the mTLS flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.CA, "tls.ca", "", "PEM file of the federation CA; with -tls.cert and -tls.key turns on mutual TLS between services")
	fs.StringVar(&c.Cert, "tls.cert", "", "PEM certificate of this instance")
	fs.StringVar(&c.Key, "tls.key", "", "PEM private key of this instance")
	fs.DurationVar(&c.Reload, "tls.reload", 5*time.Second, "interval between checks of the TLS files for changes")
}

// Enabled reports whether mutual TLS is configured.
func (c *Config) Enabled() bool { return c.CA != "" || c.Cert != "" || c.Key != "" }

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	if c.Enabled() && (c.CA == "" || c.Cert == "" || c.Key == "") {
		return errors.New("tls.ca, tls.cert and tls.key: give all three for mutual TLS, or none")
	}
	if c.Enabled() && c.Reload <= 0 {
		return errors.New("tls.reload: must be positive")
	}
	return nil
}

// Identity holds the current certificate and CA pool, reloaded from files.
type Identity struct {
	cfg Config

	mu      sync.RWMutex
	cert    *tls.Certificate
	pool    *x509.CertPool
	stamp   string
	checked time.Time
}

// Load reads the files of cfg.
func Load(cfg Config) (*Identity, error) {
	id := &Identity{cfg: cfg}
	if err := id.reload(); err != nil {
		return nil, err
	}
	return id, nil
}

func stampOf(paths ...string) string {
	var b strings.Builder
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%d/%d;", st.ModTime().UnixNano(), st.Size())
		}
	}
	return b.String()
}

func (id *Identity) reload() error {
	stamp := stampOf(id.cfg.CA, id.cfg.Cert, id.cfg.Key)
	cert, err := tls.LoadX509KeyPair(id.cfg.Cert, id.cfg.Key)
	if err != nil {
		return fmt.Errorf("load certificate %s: %w", id.cfg.Cert, err)
	}
	caPEM, err := os.ReadFile(id.cfg.CA)
	if err != nil {
		return fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("CA file %s holds no certificate", id.cfg.CA)
	}
	id.mu.Lock()
	id.cert, id.pool, id.stamp, id.checked = &cert, pool, stamp, time.Now()
	id.mu.Unlock()
	return nil
}

// current returns the certificate and pool, re-reading the files when they
// changed (checked at most every Reload). A bad new file keeps the old identity.
func (id *Identity) current() (*tls.Certificate, *x509.CertPool) {
	id.mu.RLock()
	cert, pool, due := id.cert, id.pool, time.Since(id.checked) > id.cfg.Reload
	id.mu.RUnlock()
	if due {
		id.mu.Lock()
		id.checked = time.Now()
		changed := stampOf(id.cfg.CA, id.cfg.Cert, id.cfg.Key) != id.stamp
		id.mu.Unlock()
		if changed && id.reload() == nil {
			id.mu.RLock()
			cert, pool = id.cert, id.pool
			id.mu.RUnlock()
		}
	}
	return cert, pool
}

// verifyPeer checks that the peer's chain leads to the federation CA and that
// its certificate names a fedsync service. Host names are not checked: peers
// are found by address (Consul, pod IPs), and the CA vouches for the service.
func (id *Identity) verifyPeer(usage x509.ExtKeyUsage) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("mtls: the peer presented no certificate")
		}
		_, pool := id.current()
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return fmt.Errorf("mtls: peer certificate: %w", err)
		}
		if ServiceOf(leaf) == "" {
			return errors.New("mtls: the peer certificate names no fedsync service")
		}
		return nil
	}
}

// ServiceOf returns the fedsync service a certificate names, or "".
func ServiceOf(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if s, ok := strings.CutPrefix(u.String(), URIPrefix); ok {
			return s
		}
	}
	return ""
}

// ServerConfig is the TLS configuration of a gRPC server: TLS 1.3, client
// certificates required and verified.
func (id *Identity) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAnyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, _ := id.current()
			return c, nil
		},
		VerifyConnection: id.verifyPeer(x509.ExtKeyUsageClientAuth),
	}
}

// ClientConfig is the TLS configuration of a gRPC client.
func (id *Identity) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The chain is verified against the (reloadable) CA in VerifyConnection.
		InsecureSkipVerify: true, //nolint:gosec
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, _ := id.current()
			return c, nil
		},
		VerifyConnection: id.verifyPeer(x509.ExtKeyUsageServerAuth),
	}
}

// ServerCredentials are gRPC server credentials for mutual TLS.
func (id *Identity) ServerCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(id.ServerConfig())
}

// ClientCredentials are gRPC client credentials for mutual TLS.
func (id *Identity) ClientCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(id.ClientConfig())
}
