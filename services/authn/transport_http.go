package authn

import (
	"net/http"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/endpoints"
	"github.com/fedsync/fedsync/libs/httpjson"
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

// NewHTTPHandler serves POST /oauth2/token (RFC 6749 4.4, credentials in the form
// or HTTP Basic), POST /oauth2/revoke (RFC 7009), GET /.well-known/jwks.json, and
// the administration API under /api/v1/admin/ (level L4).
func NewHTTPHandler(e Endpoints, v *authtoken.Verifier) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth2/revoke", func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxTokenForm)
		if err := r.ParseForm(); err != nil || r.PostForm.Get("token") == "" {
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", "A token parameter is required.")
			return
		}
		id, secret := clientCredentials(r)
		_, err := endpoints.Call[struct{}](r.Context(), e.Revoke, RevokeRequest{ClientID: id, ClientSecret: secret, Token: r.PostForm.Get("token")})
		if err != nil {
			writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "")
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
		resp, err := endpoints.Call[*fedsyncv1.IssueTokenResponse](r.Context(), e.IssueToken, &fedsyncv1.IssueTokenRequest{ClientId: id, ClientSecret: secret})
		if err != nil {
			if apierr.As(err).Code == apierr.Unauthenticated {
				writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "")
				return
			}
			writeOAuthError(w, http.StatusInternalServerError, "server_error", "")
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
	return mux
}
