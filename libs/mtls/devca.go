package mtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// DevCA is a local certificate authority for development: make run creates one
// under .fedsync/dev/tls on first start and a certificate per service.
type DevCA struct {
	Dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// CAFile is the CA certificate's path.
func (ca *DevCA) CAFile() string { return filepath.Join(ca.Dir, "ca.pem") }

// OpenDevCA loads the CA in dir, creating it when absent.
func OpenDevCA(dir string) (*DevCA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca := &DevCA{Dir: dir}
	certPEM, err1 := os.ReadFile(ca.CAFile())
	keyPEM, err2 := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if err1 == nil && err2 == nil {
		cb, _ := pem.Decode(certPEM)
		kb, _ := pem.Decode(keyPEM)
		if cb != nil && kb != nil {
			cert, err := x509.ParseCertificate(cb.Bytes)
			if err == nil && time.Until(cert.NotAfter) > 24*time.Hour {
				if key, err := x509.ParseECPrivateKey(kb.Bytes); err == nil {
					ca.cert, ca.key = cert, key
					return ca, nil
				}
			}
		}
	} else if !errors.Is(err1, fs.ErrNotExist) && err1 != nil {
		return nil, err1
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "fedsync development CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	if err := writePEM(filepath.Join(dir, "ca-key.pem"), "EC PRIVATE KEY", kder); err != nil {
		return nil, err
	}
	if err := writePEM(ca.CAFile(), "CERTIFICATE", der); err != nil {
		return nil, err
	}
	ca.cert, ca.key = cert, key
	return ca, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

func writePEM(path, kind string, der []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Issue writes a certificate and key for service (valid 90 days, for servers and
// clients, naming spiffe://fedsync/<service>, localhost and 127.0.0.1) unless
// valid ones exist, and returns the config that uses them.
func (ca *DevCA) Issue(service string) (Config, error) {
	cfg := Config{CA: ca.CAFile(), Cert: filepath.Join(ca.Dir, service+".pem"), Key: filepath.Join(ca.Dir, service+"-key.pem"), Reload: 5 * time.Second}
	if raw, err := os.ReadFile(cfg.Cert); err == nil {
		if b, _ := pem.Decode(raw); b != nil {
			if c, err := x509.ParseCertificate(b.Bytes); err == nil && time.Until(c.NotAfter) > 24*time.Hour && c.CheckSignatureFrom(ca.cert) == nil {
				return cfg, nil
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return cfg, err
	}
	uri, _ := url.Parse(URIPrefix + service)
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: service},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(0, 0, 90),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{uri},
		DNSNames:     []string{service, "localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return cfg, fmt.Errorf("issue certificate for %s: %w", service, err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	if err := writePEM(cfg.Key, "EC PRIVATE KEY", kder); err != nil {
		return cfg, err
	}
	return cfg, writePEM(cfg.Cert, "CERTIFICATE", der)
}
