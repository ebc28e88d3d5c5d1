package authn

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"

	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/svcrun"
)

func newTestServer(t *testing.T) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	clientsPath := filepath.Join(dir, "clients.json")
	os.WriteFile(clientsPath, []byte(`{"clients":[
		{"client_id":"ai-001","client_secret":"s3cret","role":"ai_system_basic","level":"L2","region":"na"},
		{"client_id":"admin","client_secret":"root","role":"federation_admin","level":"L4","region":"na"}]}`), 0o600)
	clients, err := loadRegistry(clientsPath)
	if err != nil {
		t.Fatal(err)
	}
	kid, key, err := loadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	kid2, _, err := loadOrCreateKey(dir)
	if err != nil || kid2 != kid {
		t.Fatalf("signing key not kept across restarts: %s vs %s, %v", kid, kid2, err)
	}
	cfg := &Config{Service: svcrun.Config{Issuer: "fedsync-authn", Audience: "fedsync"}, TokenTTL: time.Hour, FederationID: "fed-1"}
	eps := MakeEndpoints(newService(clients, kid, key, cfg), func(string) endpoint.Middleware { return func(e endpoint.Endpoint) endpoint.Endpoint { return e } })
	srv := httptest.NewServer(NewHTTPHandler(eps))
	t.Cleanup(srv.Close)
	return srv
}

func TestTokenEndpoint(t *testing.T) {
	srv := newTestServer(t)
	tests := []struct {
		name      string
		form      url.Values
		basicUser string
		basicPass string
		status    int
		errCode   string
	}{
		{"form credentials", url.Values{"grant_type": {"client_credentials"}, "client_id": {"ai-001"}, "client_secret": {"s3cret"}}, "", "", 200, ""},
		{"basic credentials", url.Values{"grant_type": {"client_credentials"}}, "ai-001", "s3cret", 200, ""},
		{"wrong secret", url.Values{"grant_type": {"client_credentials"}, "client_id": {"ai-001"}, "client_secret": {"nope"}}, "", "", 401, "invalid_client"},
		{"unknown client", url.Values{"grant_type": {"client_credentials"}, "client_id": {"ai-999"}, "client_secret": {"s3cret"}}, "", "", 401, "invalid_client"},
		{"no credentials", url.Values{"grant_type": {"client_credentials"}}, "", "", 401, "invalid_client"},
		{"missing grant type", url.Values{"client_id": {"ai-001"}, "client_secret": {"s3cret"}}, "", "", 400, "invalid_request"},
		{"other grant type", url.Values{"grant_type": {"password"}, "client_id": {"ai-001"}, "client_secret": {"s3cret"}}, "", "", 400, "unsupported_grant_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", srv.URL+"/oauth2/token", strings.NewReader(tt.form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tt.basicUser != "" {
				req.SetBasicAuth(tt.basicUser, tt.basicPass)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, tt.status, body)
			}
			if tt.errCode != "" && body["error"] != tt.errCode {
				t.Fatalf("error %v, want %s", body["error"], tt.errCode)
			}
			if tt.status == 200 && (body["token_type"] != "Bearer" || body["expires_in"] != float64(3600) || body["access_token"] == "") {
				t.Fatalf("token response %v", body)
			}
		})
	}
}

func TestIssuedTokenVerifiesWithPublishedJWKS(t *testing.T) {
	srv := newTestServer(t)
	resp, err := http.PostForm(srv.URL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"admin"}, "client_secret": {"root"}})
	if err != nil {
		t.Fatal(err)
	}
	var tok tokenResponse
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	jwks := func(ctx context.Context) ([]byte, error) {
		r, err := http.Get(srv.URL + "/.well-known/jwks.json")
		if err != nil {
			return nil, err
		}
		defer r.Body.Close()
		return io.ReadAll(r.Body)
	}
	c, err := authtoken.NewVerifier(jwks, "fedsync-authn", "fedsync").Verify(context.Background(), tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "admin" || c.Level != "L4" || c.Role != "federation_admin" || c.FederationID != "fed-1" || c.ID == "" || len(c.Permissions) == 0 {
		t.Fatalf("claims %+v", c)
	}
}

func TestLoadRegistryRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"bad role":  `{"clients":[{"client_id":"a","client_secret":"b","role":"god","level":"L2"}]}`,
		"bad level": `{"clients":[{"client_id":"a","client_secret":"b","role":"observer","level":"L9"}]}`,
		"duplicate": `{"clients":[{"client_id":"a","client_secret":"b","role":"observer","level":"L1"},{"client_id":"a","client_secret":"c","role":"observer","level":"L1"}]}`,
		"no secret": `{"clients":[{"client_id":"a","role":"observer","level":"L1"}]}`,
		"not json":  `{`,
	} {
		p := filepath.Join(dir, "c.json")
		os.WriteFile(p, []byte(body), 0o600)
		if _, err := loadRegistry(p); err == nil {
			t.Errorf("%s: loaded without error", name)
		}
	}
}
