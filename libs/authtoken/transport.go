package authtoken

import (
	"context"
	"net/http"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/audit"
)

// bearer extracts the token of an "Authorization: Bearer <token>" value.
func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// FromRequest returns the token of an HTTP request: the Authorization header, or
// the access_token query parameter, which only a WebSocket handshake may use
// (browsers cannot set headers on one); anywhere else a token in the URL would
// end up in access logs and proxies' caches, so it is refused.
func FromRequest(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		token, ok := bearer(h)
		if !ok {
			return "", apierr.New(apierr.Unauthenticated, "The Authorization header must use the Bearer scheme.")
		}
		return token, nil
	}
	token := r.URL.Query().Get("access_token")
	if token != "" && !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return "", apierr.New(apierr.Unauthenticated, "The access_token query parameter is accepted only when opening a WebSocket (/stream); send the token as Authorization: Bearer <token>.")
	}
	return token, nil
}

// HTTPMiddleware authenticates every request to next and puts the claims in its
// context; a request without a valid token gets 401 and never reaches next.
func (v *Verifier) HTTPMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, err := FromRequest(r)
		if err == nil {
			var c *Claims
			if c, err = v.Verify(r.Context(), token); err == nil {
				audit.SetActor(r.Context(), c.Subject)
				next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), c)))
				return
			}
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="fedsync"`)
		apierr.WriteHTTP(w, err)
	})
}

// FromGRPC verifies the token in ctx's incoming authorization metadata and
// returns ctx carrying its claims: for a method that needs a token on a
// server whose other methods do not.
func (v *Verifier) FromGRPC(ctx context.Context) (context.Context, error) { return v.fromMetadata(ctx) }

func (v *Verifier) fromMetadata(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return nil, apierr.New(apierr.Unauthenticated, "A bearer token is required in the authorization metadata.")
	}
	token, ok := bearer(vals[0])
	if !ok {
		return nil, apierr.New(apierr.Unauthenticated, "The authorization metadata must use the Bearer scheme.")
	}
	c, err := v.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	audit.SetActor(ctx, c.Subject)
	return NewContext(ctx, c), nil
}

// isHealth reports whether method belongs to grpc.health.v1, which probes and
// Consul call without a token.
func isHealth(method string) bool { return strings.HasPrefix(method, "/grpc.health.v1.Health/") }

// UnaryServerInterceptor authenticates unary RPCs other than health checks
// and the service-internal methods listed in internal (which carry no agent
// token; mtls.Policy says which services may call them).
func (v *Verifier) UnaryServerInterceptor(internal ...string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if isHealth(info.FullMethod) || slices.Contains(internal, info.FullMethod) {
			return h(ctx, req)
		}
		ctx, err := v.fromMetadata(ctx)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// StreamServerInterceptor authenticates streaming RPCs.
func (v *Verifier) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if isHealth(info.FullMethod) {
			return h(srv, ss)
		}
		ctx, err := v.fromMetadata(ss.Context())
		if err != nil {
			return err
		}
		return h(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
	}
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// WithToken returns an outgoing gRPC context that presents token.
func WithToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}
