package authn

import (
	"context"
	"encoding/base64"
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
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

type fixture struct {
	srv *httptest.Server
	svc *service
	st  *store
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	clientsPath := filepath.Join(dir, "clients.json")
	os.WriteFile(clientsPath, []byte(`{"clients":[
		{"client_id":"ai-001","client_secret":"s3cret","role":"ai_system_basic","level":"L2","region":"na","domains":["shared-"]},
		{"client_id":"coordinator","client_secret":"c00rd","role":"regional_coordinator","level":"L3","region":"na"},
		{"client_id":"admin","client_secret":"root","role":"federation_admin","level":"L4","region":"na"}]}`), 0o600)
	entries, err := readClientsFile(clientsPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := openStore(dir, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.close() })
	if n, err := st.importClients(context.Background(), entries); err != nil || n != 3 {
		t.Fatalf("import: %d %v", n, err)
	}
	if n, _ := st.importClients(context.Background(), entries); n != 0 {
		t.Fatalf("a second import added %d clients", n)
	}
	if err := st.ensureKeys(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Service: svcrun.Config{Issuer: "fedsync-authn", Audience: "fedsync"}, TokenTTL: time.Hour, FederationID: "fed-1"}
	svc := newService(st, cfg)
	eps := MakeEndpoints(svc, func(string) endpoint.Middleware { return func(e endpoint.Endpoint) endpoint.Endpoint { return e } })
	srv := httptest.NewServer(NewHTTPHandler(eps, svc.verifier, HTTPOptions{}))
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, svc: svc, st: st}
}

func (f *fixture) token(t *testing.T, id, secret string) string {
	t.Helper()
	resp, err := http.PostForm(f.srv.URL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok tokenResponse
	json.NewDecoder(resp.Body).Decode(&tok)
	if resp.StatusCode != 200 {
		t.Fatalf("token for %s: %s", id, resp.Status)
	}
	return tok.AccessToken
}

func (f *fixture) admin(t *testing.T, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func TestTokenEndpoint(t *testing.T) {
	f := newFixture(t)
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
			req, _ := http.NewRequest("POST", f.srv.URL+"/oauth2/token", strings.NewReader(tt.form.Encode()))
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

func jwksFrom(f *fixture) authtoken.KeySource {
	return func(ctx context.Context) ([]byte, error) {
		r, err := http.Get(f.srv.URL + "/.well-known/jwks.json")
		if err != nil {
			return nil, err
		}
		defer r.Body.Close()
		return io.ReadAll(r.Body)
	}
}

func TestIssuedTokenVerifiesWithPublishedJWKS(t *testing.T) {
	f := newFixture(t)
	tok := f.token(t, "ai-001", "s3cret")
	c, err := authtoken.NewVerifier(jwksFrom(f), "fedsync-authn", "fedsync").Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "ai-001" || c.Level != "L2" || c.Role != "ai_system_basic" || c.FederationID != "fed-1" || c.ID == "" ||
		len(c.Permissions) != 3 || len(c.Domains) != 1 || c.NotBefore == nil {
		t.Fatalf("claims %+v", c)
	}
}

// TestKeyRotation: the next key is published before it signs; after a rotation
// tokens of the old key still verify, new tokens use the former next key.
func TestKeyRotation(t *testing.T) {
	f := newFixture(t)
	before, _ := f.st.keys()
	var next string
	for _, k := range before {
		if k.State == KeyNext {
			next = k.ID
		}
	}
	keys, _ := authtoken.ParseJWKS(mustJWKS(t, f))
	if _, published := keys[next]; !published || len(keys) != 2 {
		t.Fatalf("the next key must be published before it signs: %v", keys)
	}
	old := f.token(t, "ai-001", "s3cret")
	admin := f.token(t, "admin", "root")
	if st, body := f.admin(t, "POST", "/api/v1/admin/keys/rotate", admin, ""); st != 200 {
		t.Fatalf("rotate: %d %v", st, body)
	}
	fresh := f.token(t, "ai-001", "s3cret")
	v := authtoken.NewVerifier(jwksFrom(f), "fedsync-authn", "fedsync")
	for name, tok := range map[string]string{"old": old, "fresh": fresh} {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("%s token after rotation: %v", name, err)
		}
	}
	if kid := headerKid(t, fresh); kid != next {
		t.Fatalf("new tokens signed by %s, want the former next key %s", kid, next)
	}
	keys, _ = authtoken.ParseJWKS(mustJWKS(t, f))
	if len(keys) != 3 {
		t.Fatalf("JWKS after rotation has %d keys, want retired+current+next", len(keys))
	}
}

func mustJWKS(t *testing.T, f *fixture) []byte {
	doc, err := jwksFrom(f)(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func headerKid(t *testing.T, token string) string {
	var h struct {
		Kid string `json:"kid"`
	}
	seg := strings.Split(token, ".")[0]
	raw, err := decodeSegment(seg)
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(raw, &h)
	return h.Kid
}

func TestAdminAPI(t *testing.T) {
	f := newFixture(t)
	admin := f.token(t, "admin", "root")
	coord := f.token(t, "coordinator", "c00rd")
	if st, body := f.admin(t, "GET", "/api/v1/admin/clients", coord, ""); st != 403 || body["error"].(map[string]any)["code"] != "permission_denied" {
		t.Fatalf("client admin by L3: %d %v", st, body)
	}
	if st, _ := f.admin(t, "GET", "/api/v1/admin/clients", "", ""); st != 401 {
		t.Fatalf("client admin without token: %d", st)
	}
	st, body := f.admin(t, "POST", "/api/v1/admin/clients", admin, `{"client_id":"ai-077","role":"ai_system_basic","level":"L2","region":"eu"}`)
	if st != 201 || body["client_secret"] == "" {
		t.Fatalf("create: %d %v", st, body)
	}
	secret := body["client_secret"].(string)
	f.token(t, "ai-077", secret)
	if st, _ := f.admin(t, "POST", "/api/v1/admin/clients", admin, `{"client_id":"ai-077","role":"ai_system_basic","level":"L2"}`); st != 409 {
		t.Fatalf("create twice: %d", st)
	}
	if st, _ := f.admin(t, "POST", "/api/v1/admin/clients", admin, `{"client_id":"x","role":"god","level":"L2"}`); st != 400 {
		t.Fatalf("bad role: %d", st)
	}
	st, body = f.admin(t, "POST", "/api/v1/admin/clients/ai-077/rotate-secret", admin, "")
	if st != 200 || body["client_secret"] == secret {
		t.Fatalf("rotate secret: %d %v", st, body)
	}
	live := f.token(t, "ai-077", body["client_secret"].(string))
	if st, _ := f.admin(t, "POST", "/api/v1/admin/clients/ai-077/disable", admin, ""); st != 200 {
		t.Fatalf("disable: %d", st)
	}
	resp, _ := http.PostForm(f.srv.URL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"ai-077"}, "client_secret": {body["client_secret"].(string)}})
	if resp.StatusCode != 401 {
		t.Fatalf("disabled client got a token: %s", resp.Status)
	}
	rev, _ := f.svc.GetRevocations(context.Background(), &fedsyncv1.GetRevocationsRequest{})
	if _, ok := rev.DisabledClients["ai-077"]; !ok {
		t.Fatalf("revocations %v", rev)
	}
	v := authtoken.NewVerifier(jwksFrom(f), "fedsync-authn", "fedsync")
	v.Revocations = func(context.Context) (map[string]int64, map[string]int64, error) {
		return rev.DisabledClients, rev.RevokedTokens, nil
	}
	v.RefreshRevocations(context.Background())
	if _, err := v.Verify(context.Background(), live); err == nil {
		t.Fatal("a live token of a disabled client still verifies")
	}
	st, body = f.admin(t, "GET", "/api/v1/admin/clients", admin, "")
	if st != 200 || len(body["clients"].([]any)) != 4 || strings.Contains(mustJSON(body), "secret_hash") {
		t.Fatalf("list: %d %v", st, body)
	}
}

func TestRevokeToken(t *testing.T) {
	f := newFixture(t)
	tok := f.token(t, "ai-001", "s3cret")
	resp, _ := http.PostForm(f.srv.URL+"/oauth2/revoke", url.Values{"token": {tok}, "client_id": {"ai-001"}, "client_secret": {"s3cret"}})
	if resp.StatusCode != 200 {
		t.Fatalf("revoke: %s", resp.Status)
	}
	rev, _ := f.svc.GetRevocations(context.Background(), &fedsyncv1.GetRevocationsRequest{})
	if len(rev.RevokedTokens) != 1 {
		t.Fatalf("revoked %v", rev.RevokedTokens)
	}
	v := authtoken.NewVerifier(jwksFrom(f), "fedsync-authn", "fedsync")
	v.Revocations = func(context.Context) (map[string]int64, map[string]int64, error) {
		return rev.DisabledClients, rev.RevokedTokens, nil
	}
	v.RefreshRevocations(context.Background())
	if _, err := v.Verify(context.Background(), tok); err == nil {
		t.Fatal("a revoked token still verifies")
	}
}

func TestReadClientsFileRejectsBadFiles(t *testing.T) {
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
		if _, err := readClientsFile(p); err == nil {
			t.Errorf("%s: read without error", name)
		}
	}
}

func TestSecretsStoredOnlyAsHashes(t *testing.T) {
	f := newFixture(t)
	path := f.st.db.Path()
	f.st.close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "s3cret") || strings.Contains(string(raw), "c00rd") {
		t.Fatal("a client secret is stored in clear")
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func decodeSegment(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(s)
}
