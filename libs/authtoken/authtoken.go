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
// once per MinRefresh) when a token names an unknown key.
type Verifier struct {
	source     KeySource
	issuer     string
	audience   string
	MinRefresh time.Duration
	Leeway     time.Duration
	// Revocations, when set, supplies disabled clients (client -> Unix time of
	// disabling) and revoked token ids; RefreshRevocations loads them.
	Revocations func(ctx context.Context) (disabled, revoked map[string]int64, err error)

	mu        sync.Mutex
	keys      map[string]ed25519.PublicKey
	lastFetch time.Time
	disabled  map[string]int64
	revoked   map[string]int64
	// verified caches tokens whose signature and claims checked out, so an agent
	// presenting the same token again costs a map lookup instead of an Ed25519
	// verification. Expiry and revocation are still checked on every use.
	verified map[string]*Claims
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
	now := time.Now()
	if c.ExpiresAt == nil || now.After(c.ExpiresAt.Add(v.Leeway)) || (c.NotBefore != nil && now.Before(c.NotBefore.Add(-v.Leeway))) {
		v.mu.Lock()
		delete(v.verified, token)
		v.mu.Unlock()
		return nil, false
	}
	return c, true
}

func (v *Verifier) remember(token string, c *Claims) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.verified == nil || len(v.verified) >= maxVerified {
		v.verified = map[string]*Claims{} // a full cache starts over: tokens verify again once
	}
	v.verified[token] = c
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
	v.mu.Unlock()
	return nil
}

// RunRevocations refreshes revocations every interval until ctx ends, so a
// disabled client's or a revoked token's requests are refused within interval.
func (v *Verifier) RunRevocations(ctx context.Context, interval time.Duration) error {
	return periodic.Run(ctx, interval, func(ctx context.Context) {
		_ = v.RefreshRevocations(ctx) // on failure the last known revocations stay in force
	})
}

func (v *Verifier) isRevoked(c *Claims) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if at, ok := v.disabled[c.Subject]; ok && (c.IssuedAt == nil || c.IssuedAt.Unix() <= at) {
		return "its client is disabled"
	}
	if _, ok := v.revoked[c.ID]; ok && c.ID != "" {
		return "it has been revoked"
	}
	return ""
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
	claims := &Claims{}
	parsed, err := jwt.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
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
	v.mu.Lock()
	defer v.mu.Unlock()
	if k, ok := v.keys[kid]; ok {
		return k, nil
	}
	if v.keys != nil && time.Since(v.lastFetch) < v.MinRefresh {
		return nil, errUnknownKey
	}
	doc, err := v.source(ctx)
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "fetch jwks: %v", err)
	}
	keys, err := ParseJWKS(doc)
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "%v", err)
	}
	v.keys, v.lastFetch = keys, time.Now()
	if k, ok := keys[kid]; ok {
		return k, nil
	}
	return nil, errUnknownKey
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
