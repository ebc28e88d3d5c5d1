package authtoken

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/fedsync/fedsync/libs/apierr"
)

func newKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func claims(sub string, exp time.Duration) *Claims {
	now := time.Now()
	return &Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: sub, Issuer: "fedsync-authn", Audience: jwt.ClaimStrings{"fedsync"},
			ExpiresAt: jwt.NewNumericDate(now.Add(exp)), IssuedAt: jwt.NewNumericDate(now), ID: "j1",
		},
		Level: "L2", Role: "ai_system_basic",
	}
}

func TestVerify(t *testing.T) {
	pub, priv := newKey(t)
	_, otherPriv := newKey(t)
	var fetches atomic.Int32
	src := func(context.Context) ([]byte, error) {
		fetches.Add(1)
		return JWKS(map[string]ed25519.PublicKey{"k1": pub}), nil
	}
	v := NewVerifier(src, "fedsync-authn", "fedsync")
	good, _ := (&Signer{KeyID: "k1", Key: priv}).Sign(claims("ai-001", time.Hour))
	expired, _ := (&Signer{KeyID: "k1", Key: priv}).Sign(claims("ai-001", -time.Hour))
	wrongKey, _ := (&Signer{KeyID: "k1", Key: otherPriv}).Sign(claims("ai-001", time.Hour))
	unknownKid, _ := (&Signer{KeyID: "k9", Key: priv}).Sign(claims("ai-001", time.Hour))
	wrongAud := claims("ai-001", time.Hour)
	wrongAud.Audience = jwt.ClaimStrings{"other"}
	wrongAudTok, _ := (&Signer{KeyID: "k1", Key: priv}).Sign(wrongAud)
	none := jwt.NewWithClaims(jwt.SigningMethodNone, claims("ai-001", time.Hour))
	none.Header["kid"] = "k1"
	noneTok, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)

	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"valid", good, true},
		{"empty", "", false},
		{"garbage", "not.a.jwt", false},
		{"expired", expired, false},
		{"signed by another key", wrongKey, false},
		{"unknown kid", unknownKid, false},
		{"wrong audience", wrongAudTok, false},
		{"alg none", noneTok, false},
		{"tampered payload", good[:strings.Index(good, ".")+2] + "x" + good[strings.Index(good, ".")+3:], false},
		{"oversized", strings.Repeat("a", MaxTokenBytes+1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(context.Background(), tt.token)
			if tt.ok {
				if err != nil || c.Subject != "ai-001" || c.Level != "L2" {
					t.Fatalf("got %+v, %v", c, err)
				}
				return
			}
			var e *apierr.Error
			if !errors.As(err, &e) || e.Code != apierr.Unauthenticated {
				t.Fatalf("want unauthenticated, got %v", err)
			}
		})
	}
	if n := fetches.Load(); n > 2 {
		t.Errorf("jwks fetched %d times; unknown kids must not cause a fetch per token", n)
	}
}

func TestHTTPMiddleware(t *testing.T) {
	pub, priv := newKey(t)
	v := NewVerifier(func(context.Context) ([]byte, error) { return JWKS(map[string]ed25519.PublicKey{"k1": pub}), nil }, "fedsync-authn", "fedsync")
	tok, _ := (&Signer{KeyID: "k1", Key: priv}).Sign(claims("ai-007", time.Hour))
	h := v.HTTPMiddleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := FromContext(r.Context())
		w.Write([]byte(c.Subject))
	}))
	tests := []struct {
		name   string
		setup  func(r *http.Request)
		status int
	}{
		{"header", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }, 200},
		{"query on a WebSocket handshake", func(r *http.Request) { r.URL.RawQuery = "access_token=" + tok; r.Header.Set("Upgrade", "websocket") }, 200},
		{"query on a REST request", func(r *http.Request) { r.URL.RawQuery = "access_token=" + tok }, 401},
		{"none", func(r *http.Request) {}, 401},
		{"basic scheme", func(r *http.Request) { r.Header.Set("Authorization", "Basic "+tok) }, 401},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/x", nil)
		tt.setup(r)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != tt.status {
			t.Errorf("%s: status %d, want %d", tt.name, rec.Code, tt.status)
		}
	}
}

func TestKeySourceDownIsUnavailable(t *testing.T) {
	_, priv := newKey(t)
	v := NewVerifier(func(context.Context) ([]byte, error) { return nil, errors.New("authn down") }, "fedsync-authn", "fedsync")
	tok, _ := (&Signer{KeyID: "k1", Key: priv}).Sign(claims("ai-001", time.Hour))
	_, err := v.Verify(context.Background(), tok)
	if apierr.As(err).Code != apierr.Unavailable {
		t.Fatalf("want unavailable, got %v", err)
	}
}

func TestVerifiedTokenCacheStillChecksExpiryAndRevocation(t *testing.T) {
	pub, priv := newKey(t)
	var fetches atomic.Int32
	v := NewVerifier(func(context.Context) ([]byte, error) {
		fetches.Add(1)
		return JWKS(map[string]ed25519.PublicKey{"k1": pub}), nil
	}, "fedsync-authn", "fedsync")
	v.Leeway = 0
	short := claims("ai-001", time.Hour)
	// JWT times have whole seconds: 1.5 s from now is at least 0.5 s from now.
	short.ExpiresAt = jwt.NewNumericDate(time.Now().Add(1500 * time.Millisecond))
	tok, _ := (&Signer{KeyID: "k1", Key: priv}).Sign(short)
	for i := 0; i < 3; i++ {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("use %d: %v", i, err)
		}
	}
	time.Sleep(2100 * time.Millisecond)
	if _, err := v.Verify(context.Background(), tok); err == nil {
		t.Fatal("a cached token was accepted after it expired")
	}
	good, _ := (&Signer{KeyID: "k1", Key: priv}).Sign(claims("ai-002", time.Hour))
	if _, err := v.Verify(context.Background(), good); err != nil {
		t.Fatal(err)
	}
	v.Revocations = func(context.Context) (map[string]int64, map[string]int64, error) {
		return map[string]int64{"ai-002": time.Now().Add(time.Minute).Unix()}, nil, nil
	}
	v.RefreshRevocations(context.Background())
	if _, err := v.Verify(context.Background(), good); err == nil {
		t.Fatal("a cached token of a disabled client was accepted")
	}
}

// An unreachable authn is asked once per MinRefresh, not once per token, and a
// slow key fetch does not hold up tokens whose key is known.
func TestKeyFetchHoldsNoLockAndBacksOff(t *testing.T) {
	pub, priv := newKey(t)
	var fetches atomic.Int32
	var down atomic.Bool
	release := make(chan struct{})
	var slow atomic.Bool
	v := NewVerifier(func(context.Context) ([]byte, error) {
		fetches.Add(1)
		if slow.Load() {
			<-release
		}
		if down.Load() {
			return nil, errors.New("authn down")
		}
		return JWKS(map[string]ed25519.PublicKey{"k1": pub}), nil
	}, "fedsync-authn", "fedsync")
	v.MinRefresh = time.Hour
	good, _ := (&Signer{KeyID: "k1", Key: priv}).Sign(claims("ai-001", time.Hour))
	if _, err := v.Verify(context.Background(), good); err != nil {
		t.Fatal(err)
	}
	// A fetch that hangs (authn stalled) must not block a known key.
	slow.Store(true)
	go v.RefreshKeys(context.Background())
	for fetches.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	other, _ := (&Signer{KeyID: "k1", Key: priv}).Sign(claims("ai-002", time.Hour))
	done := make(chan error, 1)
	go func() { _, err := v.Verify(context.Background(), other); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Verify waited for a key fetch in progress")
	}
	down.Store(true)
	close(release)
	slow.Store(false)
	for v.RefreshKeys(context.Background()) == nil {
	}
	n := fetches.Load()
	for i := 0; i < 50; i++ {
		tok, _ := (&Signer{KeyID: fmt.Sprintf("unknown-%d", i), Key: priv}).Sign(claims("ai-003", time.Hour))
		if _, err := v.Verify(context.Background(), tok); apierr.As(err).Code != apierr.Unavailable {
			t.Fatalf("unknown kid while authn is down: %v, want unavailable", err)
		}
	}
	if got := fetches.Load() - n; got != 0 {
		t.Fatalf("50 unknown kids within MinRefresh of a failed fetch made %d fetches, want 0", got)
	}
}

// A token cached under a key that authn withdrew is refused once keys are
// reloaded.
func TestWithdrawnKeyEndsCachedTokens(t *testing.T) {
	pub, priv := newKey(t)
	keys := map[string]ed25519.PublicKey{"k1": pub}
	var mu sync.Mutex
	v := NewVerifier(func(context.Context) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		return JWKS(keys), nil
	}, "fedsync-authn", "fedsync")
	tok, _ := (&Signer{KeyID: "k1", Key: priv}).Sign(claims("ai-001", time.Hour))
	c, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := v.Watch(context.Background(), c)
	defer cancel()
	mu.Lock()
	keys = map[string]ed25519.PublicKey{}
	mu.Unlock()
	if err := v.RefreshKeys(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), tok); apierr.As(err).Code != apierr.Unauthenticated {
		t.Fatalf("token of a withdrawn key: %v, want refused", err)
	}
	select {
	case <-ctx.Done():
		if !strings.Contains(context.Cause(ctx).Error(), "withdrawn") {
			t.Fatalf("cause %v", context.Cause(ctx))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch of a token whose key was withdrawn did not end")
	}
}

// Watch ends a stream's context on revocation, on its client's disabling and at
// expiry, naming the reason; a valid token's watch stays open.
func TestWatch(t *testing.T) {
	pub, priv := newKey(t)
	v := NewVerifier(func(context.Context) ([]byte, error) { return JWKS(map[string]ed25519.PublicKey{"k1": pub}), nil }, "fedsync-authn", "fedsync")
	v.Leeway = 0
	verify := func(c *Claims) *Claims {
		tok, _ := (&Signer{KeyID: "k1", Key: priv}).Sign(c)
		got, err := v.Verify(context.Background(), tok)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	revokedC := claims("ai-001", time.Hour)
	revokedC.ID = "jti-revoked"
	disabledC := claims("ai-002", time.Hour)
	shortC := claims("ai-003", time.Hour)
	shortC.ExpiresAt = jwt.NewNumericDate(time.Now().Add(1500 * time.Millisecond))
	okC := claims("ai-004", time.Hour)
	okC.ID = "jti-ok"

	watch := func(c *Claims) context.Context {
		ctx, cancel := v.Watch(context.Background(), verify(c))
		t.Cleanup(cancel)
		return ctx
	}
	revoked, disabled, short, fine := watch(revokedC), watch(disabledC), watch(shortC), watch(okC)
	v.Revocations = func(context.Context) (map[string]int64, map[string]int64, error) {
		return map[string]int64{"ai-002": time.Now().Add(time.Minute).Unix()}, map[string]int64{"jti-revoked": 1}, nil
	}
	if err := v.RefreshRevocations(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ctx  context.Context
		want string
	}{{revoked, "revoked"}, {disabled, "disabled"}, {short, "expired"}} {
		select {
		case <-tc.ctx.Done():
			cause := context.Cause(tc.ctx)
			if apierr.As(cause).Code != apierr.Unauthenticated || !strings.Contains(cause.Error(), tc.want) {
				t.Errorf("cause %v, want unauthenticated naming %q", cause, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("watch not ended for %q", tc.want)
		}
	}
	if fine.Err() != nil {
		t.Fatalf("a valid token's watch ended: %v", context.Cause(fine))
	}
}
