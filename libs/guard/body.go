package guard

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"

	"github.com/fedsync/fedsync/libs/apierr"
)

// LimitBody bounds the request bodies next receives, for a proxy that passes
// them on unread: a declared Content-Length over max is refused at once with
// 413 (nothing is read or forwarded), a streamed body is cut at max, and what
// broke a body is kept for BodyError.
func LimitBody(next http.Handler, max int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			w.Header().Set("Connection", "close")
			apierr.WriteHTTP(w, apierr.New(apierr.TooLarge, "The request body is %d bytes; the limit is %d bytes.", r.ContentLength, max).WithDetail("limit", max))
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			b := &body{rc: http.MaxBytesReader(w, r.Body, max)}
			r.Body = b
			r = r.WithContext(context.WithValue(r.Context(), bodyKey{}, b))
		}
		next.ServeHTTP(w, r)
	})
}

type bodyKey struct{}

// body remembers the first error reading a request body.
type body struct {
	rc  io.ReadCloser
	err error
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

func (b *body) Close() error { return b.rc.Close() }

// BodyError is the client's fault behind a failed proxy request, when reading
// its body failed: 413 too_large past the limit, 400 invalid_argument for a
// body that is malformed (bad chunked framing) or not sent within the body
// timeout. It is nil when the body was fine (the failure was the backend's).
func BodyError(r *http.Request) *apierr.Error {
	b, ok := r.Context().Value(bodyKey{}).(*body)
	if !ok || b.err == nil {
		return nil
	}
	var tooLarge *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(b.err, &tooLarge):
		return apierr.New(apierr.TooLarge, "The request body is larger than the limit of %d bytes.", tooLarge.Limit).WithDetail("limit", tooLarge.Limit)
	case errors.As(b.err, &ne) && ne.Timeout():
		return apierr.New(apierr.InvalidArgument, "The request body was not received in time.").WithDetail("reason", "body_timeout")
	default:
		return apierr.New(apierr.InvalidArgument, "The request body is malformed: %v.", b.err).WithDetail("reason", "malformed_body")
	}
}
