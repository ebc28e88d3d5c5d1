package authn

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/endpoints"
	"github.com/fedsync/fedsync/libs/httpjson"
	"github.com/fedsync/fedsync/libs/telemetry"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// maxTokenForm bounds the token endpoint's form body.
const maxTokenForm = 64 << 10

// oauthError is the RFC 6749 section 5.2 error body.
type oauthError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

// writeOAuthFailure answers a token or revocation request that failed: 401
// invalid_client for credentials that do not match; 503
// temporarily_unavailable with Retry-After when this replica cannot reach a
// majority of the authn group to check them against the latest registry
// (RFC 6749 5.2 leaves the code open; RFC 6749 4.1.2.1 names it); 500
// server_error for anything else.
func writeOAuthFailure(w http.ResponseWriter, err error) {
	e := apierr.As(err)
	switch e.Code {
	case apierr.Unauthenticated:
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "")
	case apierr.Unavailable:
		retry := e.RetryAfter
		if retry <= 0 {
			retry = time.Second
		}
		w.Header().Set("Retry-After", strconv.Itoa(int(max(1, retry.Round(time.Second)/time.Second))))
		writeOAuthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", e.Message)
	default:
		// The message names what failed (never the credentials), so the
		// caller's report leads to the cause.
		writeOAuthError(w, http.StatusInternalServerError, "server_error", e.Message)
	}
}

func writeOAuthError(w http.ResponseWriter, status int, code, desc string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="fedsync"`)
	}
	w.Header().Set("Cache-Control", "no-store")
	httpjson.Write(w, status, oauthError{Error: code, ErrorDescription: desc})
}

// clientCredentials returns the client credentials of a token or revocation
// request: HTTP Basic, or client_id and client_secret in the form.
func clientCredentials(r *http.Request) (string, string) {
	if id, secret, ok := r.BasicAuth(); ok {
		return id, secret
	}
	return r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
}

// HTTPOptions tune the HTTP transport.
type HTTPOptions struct {
	// Throttle slows down credential guessing; nil turns it off.
	Throttle *throttle
	// ProxyHops is how many proxies in front of authn append to
	// X-Forwarded-For (the edge: 1); the client's address is the entry that
	// many from the end, which a client cannot forge. 0 uses the peer address.
	ProxyHops int
}

// sourceAddr is the client's address as the nearest trusted proxy saw it.
func sourceAddr(r *http.Request, hops int) string {
	if hops > 0 {
		var parts []string
		for _, h := range r.Header.Values("X-Forwarded-For") {
			for _, p := range strings.Split(h, ",") {
				if p = strings.TrimSpace(p); p != "" {
					parts = append(parts, p)
				}
			}
		}
		if len(parts) >= hops {
			return parts[len(parts)-hops]
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// throttled answers 429 when the attempt must wait; it reports whether it did.
func (o HTTPOptions) throttled(w http.ResponseWriter, addr, id string) bool {
	if o.Throttle == nil {
		return false
	}
	wait := o.Throttle.wait(addr, id, time.Now())
	if wait <= 0 {
		return false
	}
	w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
	writeOAuthError(w, http.StatusTooManyRequests, "rate_limited", "Too many attempts from this address or for this client; retry after the Retry-After delay.")
	return true
}

func (o HTTPOptions) settled(addr, id string, ok bool) {
	switch {
	case o.Throttle == nil:
	case ok:
		o.Throttle.succeeded(addr, id, time.Now())
	default:
		o.Throttle.failed(addr, id, time.Now())
	}
}

// NewHTTPHandler serves POST /oauth2/token (RFC 6749 4.4, credentials in the form
// or HTTP Basic), POST /oauth2/revoke (RFC 7009), GET /.well-known/jwks.json, and
// the administration API under /api/v1/admin/ (level L4). Both credential
// endpoints are throttled per source address and per client id (o.Throttle).
func NewHTTPHandler(e Endpoints, v *authtoken.Verifier, o HTTPOptions) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth2/revoke", func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxTokenForm)
		if err := r.ParseForm(); err != nil || r.PostForm.Get("token") == "" {
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", "A token parameter is required.")
			return
		}
		id, secret := clientCredentials(r)
		addr := sourceAddr(r, o.ProxyHops)
		if o.throttled(w, addr, id) {
			return
		}
		_, err := endpoints.Call[struct{}](r.Context(), e.Revoke, RevokeRequest{ClientID: id, ClientSecret: secret, Token: r.PostForm.Get("token")})
		o.settled(addr, id, err == nil || apierr.As(err).Code != apierr.Unauthenticated)
		if err != nil {
			writeOAuthFailure(w, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	mux.Handle("/api/v1/admin/", v.HTTPMiddleware(adminHandler(e)))
	mux.HandleFunc("POST /oauth2/token", func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxTokenForm)
		if err := r.ParseForm(); err != nil {
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", "The request body is not a valid form of at most 64 KiB.")
			return
		}
		switch gt := r.PostForm.Get("grant_type"); gt {
		case "client_credentials":
		case "":
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", "grant_type is required.")
			return
		default:
			writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "Only grant_type=client_credentials is supported.")
			return
		}
		id, secret := clientCredentials(r)
		if id == "" || secret == "" {
			writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "Client credentials are required, in the form or HTTP Basic.")
			return
		}
		addr := sourceAddr(r, o.ProxyHops)
		if o.throttled(w, addr, id) {
			return
		}
		resp, err := endpoints.Call[*fedsyncv1.IssueTokenResponse](r.Context(), e.IssueToken, &fedsyncv1.IssueTokenRequest{ClientId: id, ClientSecret: secret})
		o.settled(addr, id, err == nil || apierr.As(err).Code != apierr.Unauthenticated)
		if err != nil {
			writeOAuthFailure(w, err)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		httpjson.Write(w, http.StatusOK, tokenResponse{AccessToken: resp.GetAccessToken(), TokenType: resp.GetTokenType(), ExpiresIn: resp.GetExpiresIn()})
	})
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		resp, err := endpoints.Call[*fedsyncv1.GetJWKSResponse](r.Context(), e.GetJWKS, &fedsyncv1.GetJWKSRequest{})
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "max-age=300")
		w.Write(resp.GetJwks())
	})
	mux.HandleFunc("/", httpjson.NotFound)
	return telemetry.Routes(mux)
}
