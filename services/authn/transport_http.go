package authn

import (
	"net/http"

	"github.com/fedsync/fedsync/libs/apierr"
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

// NewHTTPHandler serves POST /oauth2/token (RFC 6749 4.4, credentials in the form
// or HTTP Basic) and GET /.well-known/jwks.json.
func NewHTTPHandler(e Endpoints) http.Handler {
	mux := http.NewServeMux()
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
		id, secret, basic := r.BasicAuth()
		if !basic {
			id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
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
