// Package authtokentest issues real signed tokens for tests of services that
// verify them, without running authn.
package authtokentest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/fedsync/fedsync/libs/access"
	"github.com/fedsync/fedsync/libs/authtoken"
)

// Issuer signs tokens with a fresh key and verifies them.
type Issuer struct {
	signer   *authtoken.Signer
	Verifier *authtoken.Verifier
}

// New returns an issuer whose verifier accepts issuer "fedsync-authn" and
// audience "fedsync", as the services' defaults do.
func New(t testing.TB) *Issuer {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks := authtoken.JWKS(map[string]ed25519.PublicKey{"test": pub})
	return &Issuer{
		signer:   &authtoken.Signer{KeyID: "test", Key: priv},
		Verifier: authtoken.NewVerifier(func(context.Context) ([]byte, error) { return jwks, nil }, "fedsync-authn", "fedsync"),
	}
}

// Token returns a valid one-hour token for subject at level, with the level's
// usual role and its permissions.
func (i *Issuer) Token(t testing.TB, subject, level string, domains ...string) string {
	now := time.Now()
	tok, err := i.signer.Sign(&authtoken.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: subject, Issuer: "fedsync-authn", Audience: jwt.ClaimStrings{"fedsync"},
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(now), ID: subject + "-test",
		},
		Level: level, Role: access.LevelRole[level], Permissions: access.RolePermissions[access.LevelRole[level]], Domains: domains,
	})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
