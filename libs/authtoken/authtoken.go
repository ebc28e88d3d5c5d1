// Package authtoken signs and verifies fedsync's access tokens: JWTs signed with
// Ed25519 (EdDSA), published as a JWK Set, verified by every service that takes a
// token, over HTTP (Authorization header or access_token query parameter) and gRPC
// (authorization metadata).
package authtoken

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sync/singleflight"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/periodic"
)

// Claims are the claims of a fedsync access token (contract: Auth).
type Claims struct {
	jwt.RegisteredClaims
	FederationID string   `json:"federation_id"`
	Role         string   `json:"role"`
	Level        string   `json:"level"`
	Permissions  []string `json:"permissions"`
	Region       string   `json:"region,omitempty"`
	// Domains are the id prefixes assigned to the client besides its own.
	Domains []string `json:"domains,omitempty"`

	kid string // the key that signed the token, set by Verify
}

// Signer signs tokens with one Ed25519 key.
type Signer struct {
	KeyID string
	Key   ed25519.PrivateKey
}

// Sign returns the compact JWT of claims with the key id in its header.
func (s *Signer) Sign(c *Claims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = s.KeyID
	signed, err := t.SignedString(s.Key)
	if err != nil {
		return "", fmt.Errorf("sign token for %s: %w", c.Subject, err)
	}
	return signed, nil
}

// JWK is one public key in a JWK Set (RFC 7517, RFC 8037 for OKP keys).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// JWKS returns the JWK Set document of the public keys.
func JWKS(keys map[string]ed25519.PublicKey) []byte {
	set := struct {
		Keys []JWK `json:"keys"`
	}{Keys: []JWK{}}
	for kid, pub := range keys {
		set.Keys = append(set.Keys, JWK{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(pub), Kid: kid, Alg: "EdDSA", Use: "sig"})
	}
	b, _ := json.Marshal(set)
	return b
}

// ParseJWKS returns the Ed25519 keys of a JWK Set by key id; other key types are
// ignored.
func ParseJWKS(doc []byte) (map[string]ed25519.PublicKey, error) {
	var set struct {
		Keys []JWK `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		return nil, fmt.Errorf("decode jwks: %w", err)
	}
	keys := map[string]ed25519.PublicKey{}
	for _, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" || k.Kid == "" {
			continue
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("decode jwks key %s: bad x", k.Kid)
		}
		keys[k.Kid] = ed25519.PublicKey(x)
	}
	return keys, nil
}

// KeySource fetches the current JWK Set document.
type KeySource func(ctx context.Context) ([]byte, error)

// Verifier checks tokens against keys from a KeySource, fetching it again (at most
// once per MinRefresh) when a token names an unknown key. No lock is held across
// a fetch: concurrent fetches share one call, and a failed fetch is not retried
// for MinRefresh, so an unreachable authn costs one call per MinRefresh, not one
// per token.
type Verifier struct {
	source     KeySource
	issuer     string
	audience   string
	MinRefresh time.Duration
	Leeway     time.Duration
	// Revocations, when set, supplies disabled clients (client -> Unix time of
	// disabling) and revoked token ids; RefreshRevocations loads them.
	Revocations func(ctx context.Context) (disabled, revoked map[string]int64, err error)

	fetches singleflight.Group

	mu          sync.Mutex
	keys        map[string]ed25519.PublicKey
	lastAttempt time.Time
	lastErr     error
	disabled    map[string]int64
	revoked     map[string]int64
	// verified caches tokens whose signature and claims checked out, so an agent
	// presenting the same token again costs a map lookup instead of an Ed25519
	// verification. Expiry, revocation and the signing key's presence are still
	// checked on every use.
	verified map[string]*Claims
	// changed is closed, and replaced, whenever revocations or keys are
	// reloaded, waking the watchers of open streams.
	changed chan struct{}
}

// maxVerified bounds the verified-token cache.
const maxVerified = 10000

func (v *Verifier) cached(token string) (*Claims, bool) {
	v.mu.Lock()
	c, ok := v.verified[token]
	v.mu.Unlock()
	if !ok {
		return nil, false
	}
	if v.expiredAt(c, time.Now()) != "" {
		v.mu.Lock()
		delete(v.verified, token)
		v.mu.Unlock()
		return nil, false
	}
	return c, true
}

// expiredAt says why c is outside its validity window at now, or "".
func (v *Verifier) expiredAt(c *Claims, now time.Time) string {
	if c.ExpiresAt == nil || now.After(c.ExpiresAt.Add(v.Leeway)) {
		return "it has expired"
	}
	if c.NotBefore != nil && now.Before(c.NotBefore.Add(-v.Leeway)) {
		return "it is not valid yet"
	}
	return ""
}

func (v *Verifier) remember(token string, c *Claims) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.verified == nil || len(v.verified) >= maxVerified {
		v.verified = map[string]*Claims{} // a full cache starts over: tokens verify again once
	}
	v.verified[token] = c
}

// notifyLocked wakes every Watch; v.mu is held.
func (v *Verifier) notifyLocked() {
	if v.changed != nil {
		close(v.changed)
	}
	v.changed = make(chan struct{})
}

func (v *Verifier) changedCh() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.changed == nil {
		v.changed = make(chan struct{})
	}
	return v.changed
}

// RefreshRevocations loads the current revocations.
func (v *Verifier) RefreshRevocations(ctx context.Context) error {
	if v.Revocations == nil {
		return nil
	}
	disabled, revoked, err := v.Revocations(ctx)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.disabled, v.revoked = disabled, revoked
	v.notifyLocked()
	v.mu.Unlock()
	return nil
}

// RefreshKeys fetches the key set again, so a withdrawn signing key stops
// verifying tokens, cached ones included.
func (v *Verifier) RefreshKeys(ctx context.Context) error {
	_, err, _ := v.fetches.Do("jwks", func() (any, error) { return nil, v.fetchKeys(ctx) })
	return err
}

// RunRevocations refreshes revocations and keys every interval until ctx ends, so
// a disabled client's, a revoked token's or a withdrawn key's requests are
// refused, and their open streams closed (Watch), within interval.
func (v *Verifier) RunRevocations(ctx context.Context, interval time.Duration) error {
	// At start, until both load (authn may still be starting), every second.
	for ctx.Err() == nil {
		if v.RefreshRevocations(ctx) == nil && v.RefreshKeys(ctx) == nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return periodic.Run(ctx, interval, func(ctx context.Context) {
		// On failure the last known revocations and keys stay in force.
		_ = v.RefreshRevocations(ctx)
		_ = v.RefreshKeys(ctx)
	})
}

// invalidLocked says why c, verified before, is no longer valid, or "".
func (v *Verifier) invalidLocked(c *Claims) string {
	if at, ok := v.disabled[c.Subject]; ok && (c.IssuedAt == nil || c.IssuedAt.Unix() <= at) {
		return "its client is disabled"
	}
	if _, ok := v.revoked[c.ID]; ok && c.ID != "" {
		return "it has been revoked"
	}
	if c.kid != "" && v.keys != nil {
		if _, ok := v.keys[c.kid]; !ok {
			return "its signing key has been withdrawn"
		}
	}
	return ""
}

// ClientDisabled reports whether client is disabled now (as of the last
// revocation refresh): for work done in a client's name long after its token,
// such as webhook deliveries.
func (v *Verifier) ClientDisabled(client string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.disabled[client]
	return ok
}

func (v *Verifier) isRevoked(c *Claims) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.invalidLocked(c)
}

// Check says whether claims verified earlier are still valid now: not expired,
// not revoked, their client not disabled and their key not withdrawn. The error
// is unauthenticated and names the reason.
func (v *Verifier) Check(c *Claims) error {
	why := v.expiredAt(c, time.Now())
	if why == "" {
		why = v.isRevoked(c)
	}
	if why != "" {
		return apierr.New(apierr.Unauthenticated, "The token is not valid: %s.", why)
	}
	return nil
}

// Watch returns a context derived from ctx that is cancelled when c stops being
// valid (Check), with Check's error as its cause (context.Cause). Long-lived
// streams run under it so that expiry, revocation, a disabled client or a
// withdrawn key ends them within the revocation refresh interval. The cancel
// function releases the watch.
func (v *Verifier) Watch(ctx context.Context, c *Claims) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancelCause(ctx)
	go func() {
		expiry := time.NewTimer(time.Hour)
		defer expiry.Stop()
		for {
			if err := v.Check(c); err != nil {
				cancel(err)
				return
			}
			if c.ExpiresAt != nil {
				expiry.Reset(time.Until(c.ExpiresAt.Add(v.Leeway)) + time.Millisecond)
			}
			select {
			case <-wctx.Done():
				return
			case <-v.changedCh():
			case <-expiry.C:
			}
		}
	}()
	return wctx, func() { cancel(context.Canceled) }
}

// NewVerifier returns a verifier accepting tokens of issuer for audience.
func NewVerifier(source KeySource, issuer, audience string) *Verifier {
	return &Verifier{source: source, issuer: issuer, audience: audience, MinRefresh: 10 * time.Second, Leeway: 10 * time.Second}
}

// MaxTokenBytes bounds the size of a token a verifier will parse.
const MaxTokenBytes = 8 << 10

// Verify parses and checks token, returning its claims or an unauthenticated error
// that says what is wrong.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	if token == "" {
		return nil, apierr.New(apierr.Unauthenticated, "A bearer token is required: get one from POST /oauth2/token.")
	}
	if len(token) > MaxTokenBytes {
		return nil, apierr.New(apierr.Unauthenticated, "The token is longer than %d bytes.", MaxTokenBytes)
	}
	if c, ok := v.cached(token); ok {
		if why := v.isRevoked(c); why != "" {
			return nil, apierr.New(apierr.Unauthenticated, "The token is not valid: %s.", why)
		}
		return c, nil
	}
	var keyErr error
	var kid string
	claims := &Claims{}
	parsed, err := jwt.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		kid, _ = t.Header["kid"].(string)
		key, err := v.key(ctx, kid)
		keyErr = err
		return key, err
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(v.issuer),
		jwt.WithAudience(v.audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(v.Leeway),
	)
	if keyErr != nil && !errors.Is(keyErr, errUnknownKey) {
		return nil, apierr.New(apierr.Unavailable, "Token keys cannot be fetched right now; retry shortly.")
	}
	if err != nil || !parsed.Valid {
		return nil, apierr.New(apierr.Unauthenticated, "The token is not valid: %s.", reason(err))
	}
	if claims.Subject == "" {
		return nil, apierr.New(apierr.Unauthenticated, "The token is not valid: it has no subject.")
	}
	claims.kid = kid
	if why := v.isRevoked(claims); why != "" {
		return nil, apierr.New(apierr.Unauthenticated, "The token is not valid: %s.", why)
	}
	v.remember(token, claims)
	return claims, nil
}

func reason(err error) string {
	switch {
	case err == nil:
		return "unknown reason"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "it has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "it is not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unknown signing key or algorithm"
	}
	return "rejected"
}

var errUnknownKey = errors.New("unknown key id")

func (v *Verifier) key(ctx context.Context, kid string) (ed25519.PublicKey, error) {
	for attempt := 0; ; attempt++ {
		v.mu.Lock()
		k, ok := v.keys[kid]
		// Until keys were loaded once (authn still starting), a failure is
		// held for a second, not MinRefresh: the first tokens must not wait.
		hold := v.MinRefresh
		if v.keys == nil {
			hold = min(hold, time.Second)
		}
		recent := !v.lastAttempt.IsZero() && time.Since(v.lastAttempt) < hold
		lastErr := v.lastErr
		v.mu.Unlock()
		switch {
		case ok:
			return k, nil
		case recent && lastErr != nil:
			return nil, lastErr // authn was unreachable moments ago: do not ask again per token
		case recent || attempt > 0:
			return nil, errUnknownKey
		}
		if err := v.RefreshKeys(ctx); err != nil {
			return nil, err
		}
	}
}

// Loaded reports whether the key set has been loaded at least once: a
// service that verifies tokens is not ready before.
func (v *Verifier) Loaded() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.keys != nil
}

// fetchKeys loads the key set; RefreshKeys runs one at a time. Tokens cached
// under a key that is gone are forgotten.
func (v *Verifier) fetchKeys(ctx context.Context) error {
	doc, err := v.source(ctx)
	var keys map[string]ed25519.PublicKey
	if err == nil {
		keys, err = ParseJWKS(doc)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.lastAttempt = time.Now()
	if err != nil {
		v.lastErr = apierr.New(apierr.Unavailable, "fetch jwks: %v", err)
		return v.lastErr
	}
	v.lastErr = nil
	removed := false
	for kid := range v.keys {
		if _, ok := keys[kid]; !ok {
			removed = true
		}
	}
	v.keys = keys
	if removed {
		for tok, c := range v.verified {
			if _, ok := keys[c.kid]; !ok {
				delete(v.verified, tok)
			}
		}
		v.notifyLocked()
	}
	return nil
}

type claimsKey struct{}

// NewContext returns ctx carrying claims.
func NewContext(ctx context.Context, c *Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, c)
}

// FromContext returns the claims of the authenticated caller.
func FromContext(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*Claims)
	return c, ok
}

// LevelAtLeast reports whether level (L1..L4) is at least min.
func LevelAtLeast(level, min string) bool {
	return len(level) == 2 && len(min) == 2 && level[0] == 'L' && level >= min
}
