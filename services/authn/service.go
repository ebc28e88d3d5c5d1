// Package authn is fedsync's identity service (seed 2.3, 6.2): the OAuth 2.0
// client-credentials grant, a durable client registry whose secrets are kept only
// as bcrypt hashes, access tokens as Ed25519-signed JWTs with rotating keys, the
// JWK Set and the revocations every other service verifies tokens with, and the
// administration API (level L4).
package authn

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"regexp"
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
	GetRevocations(ctx context.Context, req *fedsyncv1.GetRevocationsRequest) (*fedsyncv1.GetRevocationsResponse, error)
	// Revoke revokes a token the caller holds (RFC 7009).
	Revoke(ctx context.Context, req RevokeRequest) (struct{}, error)
	Admin
}

// Admin is the client and key administration (L4).
type Admin interface {
	ListClients(ctx context.Context, _ struct{}) ([]Client, error)
	CreateClient(ctx context.Context, req CreateClientRequest) (ClientWithSecret, error)
	SetClientDisabled(ctx context.Context, req SetDisabledRequest) (*Client, error)
	RotateClientSecret(ctx context.Context, id string) (ClientWithSecret, error)
	ListKeys(ctx context.Context, _ struct{}) ([]KeyInfo, error)
	RotateKeys(ctx context.Context, _ struct{}) ([]KeyInfo, error)
}

// ErrInvalidClient is the answer to unknown clients, wrong secrets and disabled
// clients alike.
var ErrInvalidClient = apierr.New(apierr.Unauthenticated, "Client authentication failed.")

// RevokeRequest revokes a token presented by its client.
type RevokeRequest struct {
	ClientID, ClientSecret, Token string
}

// CreateClientRequest registers a client.
type CreateClientRequest struct {
	ClientID string   `json:"client_id"`
	Role     string   `json:"role"`
	Level    string   `json:"level"`
	Region   string   `json:"region"`
	Domains  []string `json:"domains"`
}

// ClientWithSecret is a client and its new secret, shown once.
type ClientWithSecret struct {
	Client       *Client `json:"client"`
	ClientSecret string  `json:"client_secret"`
}

// SetDisabledRequest disables or enables a client.
type SetDisabledRequest struct {
	ClientID string
	Disabled bool
}

// KeyInfo is a signing key without its private part.
type KeyInfo struct {
	ID        string    `json:"kid"`
	State     string    `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	RetiredAt time.Time `json:"retired_at,omitzero"`
}

type service struct {
	store        *store
	issuer       string
	audience     string
	federationID string
	ttl          time.Duration
	verifier     *authtoken.Verifier
}

func newService(st *store, cfg *Config) *service {
	s := &service{store: st, issuer: cfg.Service.Issuer, audience: cfg.Service.Audience, federationID: cfg.FederationID, ttl: cfg.TokenTTL}
	s.verifier = authtoken.NewVerifier(func(context.Context) ([]byte, error) { return s.jwks() }, s.issuer, s.audience)
	return s
}

// signer returns the current signing key.
func (s *service) signer() (*authtoken.Signer, error) {
	keys, err := s.store.keys()
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if k.State == KeyCurrent {
			return &authtoken.Signer{KeyID: k.ID, Key: ed25519.NewKeyFromSeed(k.Seed)}, nil
		}
	}
	return nil, apierr.New(apierr.Unavailable, "No current signing key.")
}

// jwks publishes the next key (before it signs anything), the current key, and
// retired keys until every token they signed has expired.
func (s *service) jwks() ([]byte, error) {
	keys, err := s.store.keys()
	if err != nil {
		return nil, err
	}
	pub := map[string]ed25519.PublicKey{}
	for _, k := range keys {
		if k.State == KeyRetired && time.Since(k.RetiredAt) > s.ttl+time.Minute {
			continue
		}
		pub[k.ID] = ed25519.NewKeyFromSeed(k.Seed).Public().(ed25519.PublicKey)
	}
	return authtoken.JWKS(pub), nil
}

func (s *service) IssueToken(ctx context.Context, req *fedsyncv1.IssueTokenRequest) (*fedsyncv1.IssueTokenResponse, error) {
	c, why, err := s.store.authenticate(ctx, req.GetClientId(), req.GetClientSecret())
	if err != nil {
		return nil, err
	}
	if c == nil {
		e := *ErrInvalidClient
		return nil, e.WithDetail("reason", why) // for the audit log; the HTTP answer stays invalid_client
	}
	signer, err := s.signer()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	jti := make([]byte, 16)
	rand.Read(jti)
	token, err := signer.Sign(&authtoken.Claims{
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
	doc, err := s.jwks()
	if err != nil {
		return nil, err
	}
	return &fedsyncv1.GetJWKSResponse{Jwks: doc}, nil
}

func (s *service) GetRevocations(context.Context, *fedsyncv1.GetRevocationsRequest) (*fedsyncv1.GetRevocationsResponse, error) {
	disabled, revoked, err := s.store.revocations()
	if err != nil {
		return nil, err
	}
	return &fedsyncv1.GetRevocationsResponse{DisabledClients: disabled, RevokedTokens: revoked}, nil
}

func (s *service) Revoke(ctx context.Context, req RevokeRequest) (struct{}, error) {
	c, _, err := s.store.authenticate(ctx, req.ClientID, req.ClientSecret)
	if err != nil {
		return struct{}{}, err
	}
	if c == nil {
		return struct{}{}, ErrInvalidClient
	}
	claims, err := s.verifier.Verify(ctx, req.Token)
	if err != nil || claims.Subject != c.ClientID {
		return struct{}{}, nil // RFC 7009 2.2: an invalid or foreign token is not an error
	}
	return struct{}{}, s.store.revoke(ctx, claims.ID, claims.ExpiresAt.Time)
}

var clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ListClients and ListKeys answer from a replica caught up with the group:
// what an administrator changed a moment ago through another replica is there.
func (s *service) ListClients(ctx context.Context, _ struct{}) ([]Client, error) {
	if err := s.store.sync(ctx); err != nil {
		return nil, err
	}
	return s.store.clients()
}

func (s *service) CreateClient(ctx context.Context, req CreateClientRequest) (ClientWithSecret, error) {
	switch {
	case !clientIDPattern.MatchString(req.ClientID):
		return ClientWithSecret{}, apierr.New(apierr.InvalidArgument, "Field client_id must match %s.", clientIDPattern)
	case access.RolePermissions[req.Role] == nil:
		return ClientWithSecret{}, apierr.New(apierr.InvalidArgument, "Field role must be one of observer, ai_system_basic, ai_system_advanced, regional_coordinator, federation_admin.")
	case !levelPattern.MatchString(req.Level):
		return ClientWithSecret{}, apierr.New(apierr.InvalidArgument, "Field level must be L1, L2, L3 or L4.")
	}
	secret, c, err := s.store.createClient(ctx, Client{ClientID: req.ClientID, Role: req.Role, Level: req.Level, Region: req.Region, Domains: req.Domains})
	if err != nil {
		return ClientWithSecret{}, err
	}
	return ClientWithSecret{Client: c, ClientSecret: secret}, nil
}

func (s *service) SetClientDisabled(ctx context.Context, req SetDisabledRequest) (*Client, error) {
	return s.store.setDisabled(ctx, req.ClientID, req.Disabled)
}

func (s *service) RotateClientSecret(ctx context.Context, id string) (ClientWithSecret, error) {
	secret, c, err := s.store.rotateSecret(ctx, id)
	if err != nil {
		return ClientWithSecret{}, err
	}
	return ClientWithSecret{Client: c, ClientSecret: secret}, nil
}

func (s *service) ListKeys(ctx context.Context, _ struct{}) ([]KeyInfo, error) {
	if err := s.store.sync(ctx); err != nil {
		return nil, err
	}
	keys, err := s.store.keys()
	if err != nil {
		return nil, err
	}
	out := make([]KeyInfo, len(keys))
	for i, k := range keys {
		out[i] = KeyInfo{ID: k.ID, State: k.State, CreatedAt: k.CreatedAt, RetiredAt: k.RetiredAt}
	}
	return out, nil
}

func (s *service) RotateKeys(ctx context.Context, _ struct{}) ([]KeyInfo, error) {
	if err := s.store.rotateKeys(ctx); err != nil {
		return nil, err
	}
	return s.ListKeys(ctx, struct{}{})
}
