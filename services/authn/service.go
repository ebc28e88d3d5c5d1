// Package authn is fedsync's identity service (seed 2.3): the OAuth 2.0
// client-credentials grant, access tokens as Ed25519-signed JWTs, and the JWK Set
// every other service verifies them with.
package authn

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/fedsync/fedsync/libs/access"
	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Service is authn's business logic.
type Service interface {
	IssueToken(ctx context.Context, req *fedsyncv1.IssueTokenRequest) (*fedsyncv1.IssueTokenResponse, error)
	GetJWKS(ctx context.Context, req *fedsyncv1.GetJWKSRequest) (*fedsyncv1.GetJWKSResponse, error)
}

// ErrInvalidClient is the answer to unknown clients and wrong secrets alike.
var ErrInvalidClient = apierr.New(apierr.Unauthenticated, "Client authentication failed.")

type service struct {
	clients      registry
	signer       *authtoken.Signer
	jwks         []byte
	issuer       string
	audience     string
	federationID string
	ttl          time.Duration
	now          func() time.Time
}

func newService(clients registry, kid string, key ed25519.PrivateKey, cfg *Config) *service {
	return &service{
		clients:      clients,
		signer:       &authtoken.Signer{KeyID: kid, Key: key},
		jwks:         authtoken.JWKS(map[string]ed25519.PublicKey{kid: key.Public().(ed25519.PublicKey)}),
		issuer:       cfg.Service.Issuer,
		audience:     cfg.Service.Audience,
		federationID: cfg.FederationID,
		ttl:          cfg.TokenTTL,
		now:          time.Now,
	}
}

func (s *service) IssueToken(_ context.Context, req *fedsyncv1.IssueTokenRequest) (*fedsyncv1.IssueTokenResponse, error) {
	c, ok := s.clients.authenticate(req.GetClientId(), req.GetClientSecret())
	if !ok {
		return nil, ErrInvalidClient
	}
	now := s.now()
	jti := make([]byte, 16)
	rand.Read(jti)
	token, err := s.signer.Sign(&authtoken.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.ClientID,
			Issuer:    s.issuer,
			Audience:  jwt.ClaimStrings{s.audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(s.ttl)),
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ID:        hex.EncodeToString(jti),
		},
		FederationID: s.federationID,
		Role:         c.Role,
		Level:        c.Level,
		Permissions:  access.RolePermissions[c.Role],
		Region:       c.Region,
		Domains:      c.Domains,
	})
	if err != nil {
		return nil, err
	}
	return &fedsyncv1.IssueTokenResponse{AccessToken: token, TokenType: "Bearer", ExpiresIn: int64(s.ttl / time.Second)}, nil
}

func (s *service) GetJWKS(context.Context, *fedsyncv1.GetJWKSRequest) (*fedsyncv1.GetJWKSResponse, error) {
	return &fedsyncv1.GetJWKSResponse{Jwks: s.jwks}, nil
}
