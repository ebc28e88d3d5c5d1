package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fedsync/fedsync/libs/audit"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/mtls"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
	"github.com/fedsync/fedsync/tools/devstack"
)

// forger signs tokens with the federation's real signing key (planted before
// authn started), so tests can present validly signed tokens with bad claims.
type forger struct {
	kid string
	key ed25519.PrivateKey
}

func (f *forger) sign(t *testing.T, mutate func(c *authtoken.Claims)) string {
	now := time.Now()
	c := &authtoken.Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: "ai-001", Issuer: "fedsync-authn", Audience: jwt.ClaimStrings{"fedsync"},
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), ID: "forged"},
		Level: "L2", Role: "ai_system_basic", Permissions: []string{"read_public", "write_own"},
	}
	mutate(c)
	tok, err := (&authtoken.Signer{KeyID: f.kid, Key: f.key}).Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func plantKey(t *testing.T, dir string) *forger {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	raw, _ := json.Marshal(map[string]any{"kid": "planted", "seed": priv.Seed()})
	// Every authn replica finds it (as each would mount the Kubernetes
	// Secret): whichever founds the group's keys makes it current.
	for _, name := range []string{"authn", "authn-2", "authn-3"} {
		authnDir := filepath.Join(dir, "data", name)
		os.MkdirAll(authnDir, 0o700)
		if err := os.WriteFile(filepath.Join(authnDir, "signing-key.json"), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return &forger{kid: "planted", key: priv}
}

// TestSecuritySuite sends hostile requests through the real HTTP edge and gRPC
// servers and asserts the exact status and error code of each.
func TestSecuritySuite(t *testing.T) {
	dir := t.TempDir()
	f := plantKey(t, dir)
	s := startStackWith(t, dir, func(o *devstack.Options) { o.RevocationRefresh = 200 * time.Millisecond })
	a := newAgent(t, s, "ai-001", "na")
	other := newAgent(t, s, "ai-002", "na")
	observer := newAgent(t, s, "observer", "na")
	coord := newAgent(t, s, "coordinator", "na")
	admin := newAgent(t, s, "admin", "na")
	good := a.token
	parts := strings.Split(good, ".")
	tamperedPayload := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","level":"L4"}`)) + "." + parts[2]
	sig := []byte(parts[2])
	sig[5] ^= 1
	tamperedSig := parts[0] + "." + parts[1] + "." + string(sig)
	none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "ai-001", "iss": "fedsync-authn", "aud": "fedsync", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()})
	none.Header["kid"] = "planted"
	noneTok, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	// HS256 keyed with the published public key: the classic algorithm confusion.
	pub := f.key.Public().(ed25519.PublicKey)
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ai-001", "iss": "fedsync-authn", "aud": "fedsync", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(), "level": "L4"})
	hs.Header["kid"] = "planted"
	hsTok, _ := hs.SignedString([]byte(pub))
	unknownKid := (&forger{kid: "nobody", key: f.key}).sign(t, func(*authtoken.Claims) {})

	write := `{"id":"ai-001:sec","data_type":"note","patch":{"x":1}}`
	type hostile struct {
		name, method, path, body string
		header                   http.Header
		status                   int
		code                     string
	}
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	cases := []hostile{
		{"alg none", "POST", "/api/v1/sync/state", write, bearer(noneTok), 401, "unauthenticated"},
		{"HS256 keyed with the public key", "POST", "/api/v1/sync/state", write, bearer(hsTok), 401, "unauthenticated"},
		{"unknown kid", "POST", "/api/v1/sync/state", write, bearer(unknownKid), 401, "unauthenticated"},
		{"wrong iss", "POST", "/api/v1/sync/state", write, bearer(f.sign(t, func(c *authtoken.Claims) { c.Issuer = "evil" })), 401, "unauthenticated"},
		{"wrong aud", "POST", "/api/v1/sync/state", write, bearer(f.sign(t, func(c *authtoken.Claims) { c.Audience = jwt.ClaimStrings{"other"} })), 401, "unauthenticated"},
		{"expired", "POST", "/api/v1/sync/state", write, bearer(f.sign(t, func(c *authtoken.Claims) {
			c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
			c.IssuedAt = jwt.NewNumericDate(time.Now().Add(-2 * time.Hour))
			c.NotBefore = c.IssuedAt
		})), 401, "unauthenticated"},
		{"not yet valid", "POST", "/api/v1/sync/state", write, bearer(f.sign(t, func(c *authtoken.Claims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour)) })), 401, "unauthenticated"},
		{"tampered payload", "POST", "/api/v1/sync/state", write, bearer(tamperedPayload), 401, "unauthenticated"},
		{"tampered signature", "POST", "/api/v1/sync/state", write, bearer(tamperedSig), 401, "unauthenticated"},
		{"oversized token", "POST", "/api/v1/sync/state", write, bearer(strings.Repeat("A", 9000)), 401, "unauthenticated"},
		{"token in the Basic scheme", "POST", "/api/v1/sync/state", write, http.Header{"Authorization": {"Basic " + good}}, 401, "unauthenticated"},
		{"no token", "POST", "/api/v1/sync/state", write, nil, 401, "unauthenticated"},
		{"L1 write", "POST", "/api/v1/sync/state", `{"id":"observer:x","data_type":"note","patch":{}}`, bearer(observer.token), 403, "permission_denied"},
		{"L2 write outside its domain", "POST", "/api/v1/sync/state", `{"id":"ai-002:x","data_type":"note","patch":{}}`, bearer(good), 403, "permission_denied"},
		{"L2 reads another's private state", "GET", "/api/v1/sync/state/ai-002:private:diary", "", bearer(good), 403, "permission_denied"},
		{"L2 reads the review queue", "GET", "/api/v1/sync/conflicts", "", bearer(good), 403, "permission_denied"},
		{"client administration by L3", "GET", "/api/v1/admin/clients", "", bearer(coord.token), 403, "permission_denied"},
		{"key rotation by L2", "POST", "/api/v1/admin/keys/rotate", "", bearer(good), 403, "permission_denied"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, a.edge+tc.path, strings.NewReader(tc.body))
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			json.NewDecoder(resp.Body).Decode(&body)
			e, _ := body["error"].(map[string]any)
			if resp.StatusCode != tc.status || e["code"] != tc.code {
				t.Fatalf("got %d %v, want %d %s", resp.StatusCode, body, tc.status, tc.code)
			}
			if tc.code == "permission_denied" && !strings.Contains(e["message"].(string), "permission") {
				t.Fatalf("a denial must name the missing permission: %v", e["message"])
			}
		})
	}

	oauth := []struct {
		name   string
		form   url.Values
		status int
		code   string
	}{
		{"wrong client secret", url.Values{"grant_type": {"client_credentials"}, "client_id": {"ai-001"}, "client_secret": {"guess"}}, 401, "invalid_client"},
		{"missing grant type", url.Values{"client_id": {"ai-001"}, "client_secret": {"guess"}}, 400, "invalid_request"},
	}
	for _, tc := range oauth {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.PostForm(a.edge+"/oauth2/token", tc.form)
			if err != nil {
				t.Fatal(err)
			}
			var body map[string]any
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || body["error"] != tc.code {
				t.Fatalf("got %d %v", resp.StatusCode, body)
			}
		})
	}

	t.Run("L2 subscription to a foreign private prefix receives nothing of it", func(t *testing.T) {
		spy, _ := a.subscribe(map[string]any{"id_prefix": "ai-002:private:"})
		owner, _ := other.subscribe(map[string]any{"id_prefix": "ai-002:private:"})
		if st, b := other.push(`{"id":"ai-002:private:diary","data_type":"note","patch":{"secret":1}}`); st != 202 {
			t.Fatalf("owner write: %d %v", st, b)
		}
		if m := owner.next(20 * time.Second); m["type"] != "change" {
			t.Fatalf("the owner must receive its own private change: %v", m)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var m map[string]any
		if err := readJSONCtx(ctx, spy, &m); err == nil {
			t.Fatalf("a foreign subscriber received %v", m)
		}
	})

	t.Run("webhook to the mesh's own address (SSRF)", func(t *testing.T) {
		// As make run starts it: the services listen on loopback, which
		// webhooks may not reach.
		st, body, _ := a.do("POST", "/api/v1/sync/subscribe", []byte(`{"id_prefix":"ai-001:","callback_url":"http://`+s.GRPCAddr("statestore")+`/"}`), a.token)
		if e, _ := body["error"].(map[string]any); st != 400 || e["details"].(map[string]any)["reason"] != "callback_not_allowed" {
			t.Fatalf("callback to statestore's address: %d %v", st, body)
		}
	})

	t.Run("replay of a revoked token", func(t *testing.T) {
		victim := newAgent(t, s, "ai-003", "na")
		var secret string
		for _, c := range s.Clients {
			if c.ClientID == "ai-003" {
				secret = c.ClientSecret
			}
		}
		resp, _ := http.PostForm(a.edge+"/oauth2/revoke", url.Values{"token": {victim.token}, "client_id": {"ai-003"}, "client_secret": {secret}})
		resp.Body.Close()
		waitStatus(t, victim, `{"id":"ai-003:x","data_type":"note","patch":{}}`, 401)
	})

	t.Run("token of a disabled client", func(t *testing.T) {
		victim := newAgent(t, s, "ai-004", "na")
		if st, b := victim.push(`{"id":"ai-004:x","data_type":"note","patch":{}}`); st != 202 {
			t.Fatalf("before disabling: %d %v", st, b)
		}
		open, _ := victim.subscribe(map[string]any{"id_prefix": "shared-"})
		if st, _, _ := admin.do("POST", "/api/v1/admin/clients/ai-004/disable", nil, admin.token); st != 200 {
			t.Fatalf("disable: %d", st)
		}
		disabledAt := time.Now()
		waitStatus(t, victim, `{"id":"ai-004:x","data_type":"note","patch":{}}`, 401)
		// Its open stream is closed too, with the reason (F2).
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		for {
			var m map[string]any
			err := readJSONCtx(ctx, open, &m)
			if err == nil {
				continue // changes of other agents' writes, before the close
			}
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, "disabled") {
				t.Fatalf("the disabled client's open stream ended with %v, want close 1008 naming the reason", err)
			}
			t.Logf("open stream closed %s after the disable: %s", time.Since(disabledAt).Round(time.Millisecond), ce.Reason)
			break
		}
	})

	t.Run("gRPC without a federation certificate", func(t *testing.T) {
		cc, err := grpc.NewClient(s.GRPCAddr("validation-na"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err = fedsyncv1.NewValidationServiceClient(cc).PushState(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+good), &fedsyncv1.PushStateRequest{Id: "ai-001:g", DataType: "note", Patch: []byte(`{}`)})
		if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
			t.Fatalf("a plaintext client must not get through mutual TLS: %v", err)
		}
	})

	t.Run("gRPC without and with too little authority", func(t *testing.T) {
		idCfg, err := s.ClientIdentity("e2e-client")
		if err != nil {
			t.Fatal(err)
		}
		id, err := mtls.Load(idCfg)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(s.GRPCAddr("validation-na"), grpc.WithTransportCredentials(id.ClientCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		client := fedsyncv1.NewValidationServiceClient(cc)
		req := &fedsyncv1.PushStateRequest{Id: "ai-001:g", DataType: "note", Patch: []byte(`{}`)}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := client.PushState(ctx, req); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("no token: %v", err)
		}
		if _, err := client.PushState(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+noneTok), req); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("alg none: %v", err)
		}
		if _, err := client.PushState(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+observer.token), &fedsyncv1.PushStateRequest{Id: "observer:g", DataType: "note", Patch: []byte(`{}`)}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("L1 write over gRPC: %v", err)
		}
		if _, err := client.PushState(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+good), req); err != nil {
			t.Fatalf("a good token over gRPC: %v", err)
		}
	})

	t.Run("every denial is in a verifiable audit log", func(t *testing.T) {
		time.Sleep(500 * time.Millisecond)
		found := 0
		// Each replica of authn and the statestore keeps its own log:
		// commits are audited by the leader, denials by the replica the
		// request reached.
		records := map[string]int{}
		for _, name := range append(append([]string{"validation-na", "merge"}, s.AuthnNames()...), s.StateStoreNames()...) {
			path := filepath.Join(s.DataDir(name), "audit.log")
			n, err := audit.VerifyFile(path)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			raw, _ := os.ReadFile(path)
			found += strings.Count(string(raw), `"result":"denied:`)
			records[strings.SplitN(name, "-", 2)[0]] += n
		}
		for _, svc := range []string{"authn", "validation", "merge", "statestore"} {
			if records[svc] == 0 {
				t.Errorf("%s wrote no audit records", svc)
			}
		}
		if found < 15 {
			t.Fatalf("%d denials audited, want at least 15", found)
		}
	})
}

func waitStatus(t *testing.T, a *agent, body string, want int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, b := a.push(body)
		if st == want {
			if e, _ := b["error"].(map[string]any); e["code"] != "unauthenticated" {
				t.Fatalf("body %v", b)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %d, want %d within 15s", st, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
