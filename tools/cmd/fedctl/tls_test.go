package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedsync/fedsync/libs/mtls"
)

// captureStdout runs f and returns what it printed.
func captureStdout(t *testing.T, f func() int) (int, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	out := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	code := f()
	os.Stdout = old
	w.Close()
	return code, <-out
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(raw)
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("%s holds no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTLSIssue: the files the deployment's Secrets are made of (deploy/README.md,
// Tiltfile): DIR/ca.pem, DIR/<service>.pem and DIR/<service>-key.pem, each
// certificate naming spiffe://fedsync/<service> for server and client auth and
// chaining to the CA; a second run keeps them byte for byte.
func TestTLSIssue(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	services := []string{"authn", "validation", "merge"}
	code, out := captureStdout(t, func() int { return run(append([]string{"tls", "issue", dir}, services...)) })
	if code != 0 {
		t.Fatalf("exit %d, output %q", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(services) {
		t.Fatalf("want one line per service, got %q", out)
	}

	roots := x509.NewCertPool()
	ca := readCert(t, filepath.Join(dir, "ca.pem"))
	if !ca.IsCA {
		t.Fatal("ca.pem is not a CA certificate")
	}
	roots.AddCert(ca)
	snapshot := map[string][]byte{}
	for i, s := range services {
		cert, key := filepath.Join(dir, s+".pem"), filepath.Join(dir, s+"-key.pem")
		for _, want := range []string{s + ":", "ca=" + filepath.Join(dir, "ca.pem"), "cert=" + cert, "key=" + key, "uri=spiffe://fedsync/" + s} {
			if !strings.Contains(lines[i], want) {
				t.Errorf("line %q lacks %q", lines[i], want)
			}
		}
		c := readCert(t, cert)
		if got := mtls.ServiceOf(c); got != s {
			t.Errorf("%s.pem names service %q", s, got)
		}
		for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if !slices.Contains(c.ExtKeyUsage, u) {
				t.Errorf("%s.pem lacks extended key usage %v", s, u)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
				t.Errorf("%s.pem does not verify against ca.pem for %v: %v", s, u, err)
			}
		}
		if st, err := os.Stat(key); err != nil || st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: key file mode %v (err %v), want private to its owner", s, st.Mode().Perm(), err)
		}
		if _, err := mtls.Load(mtls.Config{CA: filepath.Join(dir, "ca.pem"), Cert: cert, Key: key, Reload: time.Second}); err != nil {
			t.Errorf("%s: libs/mtls cannot load the issued files: %v", s, err)
		}
		for _, f := range []string{cert, key} {
			snapshot[f], _ = os.ReadFile(f)
		}
	}
	snapshot[filepath.Join(dir, "ca.pem")], _ = os.ReadFile(filepath.Join(dir, "ca.pem"))

	// Idempotent: Tilt runs it at every evaluation of the Tiltfile, and a changed
	// file would change the Secrets and re-run the Tiltfile again.
	if code, out := captureStdout(t, func() int { return run(append([]string{"tls", "issue", dir}, services...)) }); code != 0 {
		t.Fatalf("second run: exit %d, output %q", code, out)
	}
	for f, before := range snapshot {
		if after, _ := os.ReadFile(f); !bytes.Equal(before, after) {
			t.Errorf("second run rewrote %s", f)
		}
	}

	// Another service later joins the same CA.
	if code, _ := captureStdout(t, func() int { return run([]string{"tls", "issue", dir, "statestore"}) }); code != 0 {
		t.Fatalf("issue statestore: exit %d", code)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); !bytes.Equal(after, snapshot[filepath.Join(dir, "ca.pem")]) {
		t.Error("issuing for another service replaced the CA")
	}
}

// TestTLSIssuedHandshake: two issued identities complete libs/mtls's mutual TLS
// 1.3 handshake in both roles, and the server sees the client's service.
func TestTLSIssuedHandshake(t *testing.T) {
	dir := t.TempDir()
	if code, _ := captureStdout(t, func() int { return run([]string{"tls", "issue", dir, "validation", "merge"}) }); code != 0 {
		t.Fatalf("exit %d", code)
	}
	load := func(s string) *mtls.Identity {
		id, err := mtls.Load(mtls.Config{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, s+".pem"), Key: filepath.Join(dir, s+"-key.pem"), Reload: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	client, server := load("validation"), load("merge")
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := tls.Server(b, server.ServerConfig())
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	cli := tls.Client(a, client.ClientConfig())
	if err := cli.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if v := cli.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("TLS version %x, want 1.3", v)
	}
	peers := srv.ConnectionState().PeerCertificates
	if len(peers) == 0 || mtls.ServiceOf(peers[0]) != "validation" {
		t.Errorf("the server does not see the client as validation")
	}
}

// TestTLSIssueUsage: missing services and names unfit for a file or URI are
// usage errors, and nothing is written.
func TestTLSIssueUsage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	for _, args := range [][]string{
		{"tls", "issue"},
		{"tls", "issue", dir},
		{"tls", "issue", dir, "../authn"},
		{"tls", "issue", dir, "authn", "Merge"},
		{"tls", "issue", dir, ""},
		{"tls", "sign", dir, "authn"},
	} {
		if code := run(args); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("a usage error created %s (%v)", dir, err)
	}
}
