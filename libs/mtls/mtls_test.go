package mtls

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

func serve(t *testing.T, id *Identity) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(id.ServerCredentials()))
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func check(addr string, creds credentials.TransportCredentials) (*peer.Peer, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var p peer.Peer
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
	return &p, err
}

func identity(t *testing.T, ca *DevCA, service string) *Identity {
	cfg, err := ca.Issue(service)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Reload = 50 * time.Millisecond
	id, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestMutualTLS(t *testing.T) {
	ca, err := OpenDevCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, identity(t, ca, "statestore"))
	p, err := check(addr, identity(t, ca, "merge").ClientCredentials())
	if err != nil {
		t.Fatalf("a federation client: %v", err)
	}
	if st, ok := p.AuthInfo.(credentials.TLSInfo); !ok || st.State.Version != tls.VersionTLS13 || ServiceOf(st.State.PeerCertificates[0]) != "statestore" {
		t.Fatalf("connection %+v", p.AuthInfo)
	}
	if _, err := check(addr, insecure.NewCredentials()); err == nil {
		t.Fatal("a plaintext client got through")
	}
	anon := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	if _, err := check(addr, credentials.NewTLS(anon)); err == nil {
		t.Fatal("a client without a certificate got through")
	}
	other, _ := OpenDevCA(t.TempDir())
	if _, err := check(addr, identity(t, other, "merge").ClientCredentials()); err == nil {
		t.Fatal("a client of another CA got through")
	}
	old := &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, Certificates: []tls.Certificate{mustPair(t, ca, "merge")}}
	if _, err := check(addr, credentials.NewTLS(old)); err == nil {
		t.Fatal("TLS 1.2 got through")
	}
}

func mustPair(t *testing.T, ca *DevCA, service string) tls.Certificate {
	cfg, _ := ca.Issue(service)
	c, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCertificatesReloadWithoutRestart(t *testing.T) {
	ca, _ := OpenDevCA(t.TempDir())
	server := identity(t, ca, "statestore")
	addr := serve(t, server)
	client := identity(t, ca, "merge").ClientCredentials()
	p1, err := check(addr, client)
	if err != nil {
		t.Fatal(err)
	}
	first := p1.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].SerialNumber
	os.Remove(server.cfg.Cert) // force a new certificate for the same service
	time.Sleep(20 * time.Millisecond)
	if _, err := ca.Issue("statestore"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	p2, err := check(addr, client)
	if err != nil {
		t.Fatal(err)
	}
	if second := p2.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].SerialNumber; second.Cmp(first) == 0 {
		t.Fatal("the server still presents the old certificate")
	}
}
