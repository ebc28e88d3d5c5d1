// Package apierr is the public error model of contract v1: one Go type that maps to
// the REST body {"error":{"code","message","details"}} with its HTTP status, and to
// a gRPC status carrying the same code and details, so an error keeps its meaning
// across every hop.
package apierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Code is a contract error code.
type Code string

// The contract's error codes.
const (
	InvalidArgument  Code = "invalid_argument"
	Unauthenticated  Code = "unauthenticated"
	PermissionDenied Code = "permission_denied"
	NotFound         Code = "not_found"
	VersionConflict  Code = "version_conflict"
	TooLarge         Code = "too_large"
	RateLimited      Code = "rate_limited"
	Unavailable      Code = "unavailable"
	Internal         Code = "internal"
	// CursorExpired says a subscription cursor is older than the retained log; the
	// client must read a snapshot (GET or query) and subscribe again.
	CursorExpired Code = "cursor_expired"
)

var table = map[Code]struct {
	http int
	grpc codes.Code
}{
	InvalidArgument:  {http.StatusBadRequest, codes.InvalidArgument},
	Unauthenticated:  {http.StatusUnauthorized, codes.Unauthenticated},
	PermissionDenied: {http.StatusForbidden, codes.PermissionDenied},
	NotFound:         {http.StatusNotFound, codes.NotFound},
	VersionConflict:  {http.StatusConflict, codes.FailedPrecondition},
	TooLarge:         {http.StatusRequestEntityTooLarge, codes.InvalidArgument},
	RateLimited:      {http.StatusTooManyRequests, codes.ResourceExhausted},
	Unavailable:      {http.StatusServiceUnavailable, codes.Unavailable},
	Internal:         {http.StatusInternalServerError, codes.Internal},
	CursorExpired:    {http.StatusGone, codes.OutOfRange},
}

// Error is an error a client can act on.
type Error struct {
	Code       Code
	Message    string
	Details    map[string]any
	RetryAfter time.Duration
	// HTTPStatus, when set, is the HTTP status instead of the code's own: a
	// more precise status for the same contract code (415 for a body that is
	// not JSON, still invalid_argument).
	HTTPStatus int
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// New returns an error with a message formatted from format and args.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WithDetail returns e with one more detail.
func (e *Error) WithDetail(key string, value any) *Error {
	if e.Details == nil {
		e.Details = map[string]any{}
	}
	e.Details[key] = value
	return e
}

// WithRetryAfter returns e advising clients to retry after d.
func (e *Error) WithRetryAfter(d time.Duration) *Error {
	e.RetryAfter = d
	return e
}

// HTTPStatus returns the HTTP status of code.
func HTTPStatus(code Code) int {
	if t, ok := table[code]; ok {
		return t.http
	}
	return http.StatusInternalServerError
}

// As returns err as an *Error; an error that is none becomes an internal error
// whose message hides the cause.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.OK {
		return FromStatus(s)
	}
	return &Error{Code: Internal, Message: "The server failed to handle the request; it has been logged."}
}

type body struct {
	Error bodyError `json:"error"`
}

type bodyError struct {
	Code    Code           `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

// WithHTTPStatus answers e over HTTP with status instead of its code's.
func (e *Error) WithHTTPStatus(status int) *Error {
	e.HTTPStatus = status
	return e
}

// WriteHTTP writes err as the contract's JSON error body with its status.
func WriteHTTP(w http.ResponseWriter, err error) {
	e := As(err)
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	} else if e.Code == Unavailable || e.Code == RateLimited {
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/json")
	st := HTTPStatus(e.Code)
	if e.HTTPStatus != 0 {
		st = e.HTTPStatus
	}
	w.WriteHeader(st)
	_ = json.NewEncoder(w).Encode(body{Error: bodyError{Code: e.Code, Message: e.Message, Details: e.Details}})
}

// ReadHTTP decodes a contract error body; for clients and tests.
func ReadHTTP(data []byte) (*Error, error) {
	var b body
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("decode error body: %w", err)
	}
	if b.Error.Code == "" {
		return nil, fmt.Errorf("decode error body: no error code in %q", data)
	}
	return &Error{Code: b.Error.Code, Message: b.Error.Message, Details: b.Error.Details}, nil
}

const errorDomain = "fedsync.io"

// GRPCStatus makes *Error a gRPC status error: the code maps to a gRPC code and the
// contract code and details travel in an ErrorInfo.
func (e *Error) GRPCStatus() *status.Status {
	gc := codes.Internal
	if t, ok := table[e.Code]; ok {
		gc = t.grpc
	}
	s := status.New(gc, e.Message)
	meta := map[string]string{}
	if len(e.Details) > 0 {
		if b, err := json.Marshal(e.Details); err == nil {
			meta["details"] = string(b)
		}
	}
	if e.RetryAfter > 0 {
		meta["retry_after_ms"] = strconv.FormatInt(e.RetryAfter.Milliseconds(), 10)
	}
	if ds, err := s.WithDetails(&errdetails.ErrorInfo{Reason: string(e.Code), Domain: errorDomain, Metadata: meta}); err == nil {
		return ds
	}
	return s
}

// FromStatus converts a gRPC status back into an *Error. Statuses that carry no
// fedsync ErrorInfo are mapped by their gRPC code.
func FromStatus(s *status.Status) *Error {
	for _, d := range s.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.Domain != errorDomain {
			continue
		}
		e := &Error{Code: Code(info.Reason), Message: s.Message()}
		if raw := info.Metadata["details"]; raw != "" {
			_ = json.Unmarshal([]byte(raw), &e.Details)
		}
		if ms, err := strconv.ParseInt(info.Metadata["retry_after_ms"], 10, 64); err == nil {
			e.RetryAfter = time.Duration(ms) * time.Millisecond
		}
		return e
	}
	code := Internal
	switch s.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		code = InvalidArgument
	case codes.Unauthenticated:
		code = Unauthenticated
	case codes.PermissionDenied:
		code = PermissionDenied
	case codes.NotFound:
		code = NotFound
	case codes.FailedPrecondition, codes.Aborted, codes.AlreadyExists:
		code = VersionConflict
	case codes.ResourceExhausted:
		code = RateLimited
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		code = Unavailable
	}
	return &Error{Code: code, Message: s.Message()}
}

// IsAvailability reports whether err says a peer could not be reached or did
// not answer in time (a transport failure, UNAVAILABLE, DEADLINE_EXCEEDED):
// the only failures a circuit breaker counts. An INTERNAL answer is a failure
// of that one request (a bug, a poison input), not of the peer.
func IsAvailability(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code == Unavailable
	}
	s, ok := status.FromError(err)
	if !ok {
		return true
	}
	switch s.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// IsAnswered reports whether err is an error a fedsync service answered with
// on purpose (a gRPC status carrying fedsync's ErrorInfo), as opposed to one
// the transport made up (a refused connection, a deadline). A service that
// answers "unavailable" because something behind it is (its own peer, a
// Raft election) is up: that answer must not open the caller's circuit
// breaker for it, though the call may still be retried elsewhere.
func IsAnswered(err error) bool {
	var e *Error
	if err == nil || errors.As(err, &e) {
		return false
	}
	s, ok := status.FromError(err)
	if !ok {
		return false
	}
	for _, d := range s.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == errorDomain {
			return true
		}
	}
	return false
}

// IsInfrastructure reports whether err is a failure of the infrastructure (a peer
// down, overloaded or broken) rather than an answer about the request. Only these
// count against circuit breakers and are retried on another instance.
func IsInfrastructure(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code == Unavailable || e.Code == Internal
	}
	s, ok := status.FromError(err)
	if !ok {
		return true
	}
	switch s.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown, codes.DataLoss, codes.Unimplemented:
		return true
	}
	return false
}
