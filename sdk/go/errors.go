package fedsync

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// The contract's error codes.
const (
	CodeInvalidArgument  = "invalid_argument"
	CodeUnauthenticated  = "unauthenticated"
	CodePermissionDenied = "permission_denied"
	CodeNotFound         = "not_found"
	CodeVersionConflict  = "version_conflict"
	CodeTooLarge         = "too_large"
	CodeRateLimited      = "rate_limited"
	CodeUnavailable      = "unavailable"
	CodeInternal         = "internal"
	// CodeInvalidClient is /oauth2/token's answer to bad credentials.
	CodeInvalidClient = "invalid_client"
)

// Error is an error the API answered with.
type Error struct {
	// Status is the HTTP status.
	Status int
	// Code is the contract's code, e.g. CodeVersionConflict.
	Code    string
	Message string
	Details map[string]any
	// RetryAfter is the server's Retry-After, when it sent one.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("fedsync: %s (HTTP %d)", e.Code, e.Status)
	}
	return fmt.Sprintf("fedsync: %s: %s", e.Code, e.Message)
}

// CodeOf returns the contract code of err, or "" when err is not an *Error.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Temporary reports whether err is worth sending again after a while:
// rate_limited and unavailable (nothing was accepted).
func Temporary(err error) bool {
	c := CodeOf(err)
	return c == CodeRateLimited || c == CodeUnavailable
}

// decodeError reads an error response.
func decodeError(resp *http.Response, body []byte) *Error {
	e := &Error{Status: resp.StatusCode}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	var wrapped struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &wrapped) == nil && len(wrapped.Error) > 0 {
		var inner struct {
			Code    string         `json:"code"`
			Message string         `json:"message"`
			Details map[string]any `json:"details"`
		}
		if json.Unmarshal(wrapped.Error, &inner) == nil && inner.Code != "" {
			e.Code, e.Message, e.Details = inner.Code, inner.Message, inner.Details
			return e
		}
		var oauth string // RFC 6749 5.2: {"error":"invalid_client"}
		if json.Unmarshal(wrapped.Error, &oauth) == nil {
			e.Code = oauth
			return e
		}
	}
	e.Code = map[int]string{400: CodeInvalidArgument, 401: CodeUnauthenticated, 403: CodePermissionDenied, 404: CodeNotFound,
		409: CodeVersionConflict, 413: CodeTooLarge, 429: CodeRateLimited, 503: CodeUnavailable}[resp.StatusCode]
	if e.Code == "" {
		e.Code = CodeInternal
	}
	e.Message = http.StatusText(resp.StatusCode)
	return e
}
