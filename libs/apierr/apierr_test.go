package apierr

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestWriteHTTP(t *testing.T) {
	tests := []struct {
		err        error
		wantStatus int
		wantCode   Code
	}{
		{New(InvalidArgument, "field id is required"), 400, InvalidArgument},
		{New(Unauthenticated, "no token"), 401, Unauthenticated},
		{New(PermissionDenied, "no"), 403, PermissionDenied},
		{New(NotFound, "no such state"), 404, NotFound},
		{New(VersionConflict, "stale").WithDetail("current_version", 3), 409, VersionConflict},
		{New(TooLarge, "big"), 413, TooLarge},
		{New(RateLimited, "slow down"), 429, RateLimited},
		{New(Unavailable, "log down"), 503, Unavailable},
		{errors.New("disk on fire"), 500, Internal},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		WriteHTTP(rec, tt.err)
		if rec.Code != tt.wantStatus {
			t.Errorf("%v: status %d, want %d", tt.err, rec.Code, tt.wantStatus)
		}
		got, err := ReadHTTP(rec.Body.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if got.Code != tt.wantCode {
			t.Errorf("%v: code %s, want %s", tt.err, got.Code, tt.wantCode)
		}
		if tt.wantStatus == 503 || tt.wantStatus == 429 {
			if rec.Header().Get("Retry-After") == "" {
				t.Errorf("%v: no Retry-After header", tt.err)
			}
		}
	}
}

func TestInternalErrorHidesCause(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteHTTP(rec, fmt.Errorf("open /secret/path: denied"))
	body, _ := io.ReadAll(rec.Body)
	if got := string(body); strings.Contains(got, "/secret/path") {
		t.Fatalf("internal error leaked its cause: %s", got)
	}
}

func TestGRPCRoundTripKeepsCodeAndDetails(t *testing.T) {
	in := New(VersionConflict, "state a is at version 4").WithDetail("current_version", 4)
	s, ok := status.FromError(in)
	if !ok || s.Code() != codes.FailedPrecondition {
		t.Fatalf("gRPC code %v, want FailedPrecondition", s.Code())
	}
	out := As(s.Err())
	if out.Code != VersionConflict || out.Message != in.Message {
		t.Fatalf("got %+v", out)
	}
	if v, _ := out.Details["current_version"].(float64); v != 4 {
		t.Fatalf("details lost: %+v", out.Details)
	}
	if HTTPStatus(out.Code) != http.StatusConflict {
		t.Fatal("wrong HTTP status after round trip")
	}
}

func TestIsInfrastructure(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{New(NotFound, "x"), false},
		{New(VersionConflict, "x"), false},
		{New(Unavailable, "x"), true},
		{status.Error(codes.Unavailable, "down"), true},
		{status.Error(codes.DeadlineExceeded, "slow"), true},
		{status.Error(codes.NotFound, "x"), false},
		{New(VersionConflict, "x").GRPCStatus().Err(), false},
		{errors.New("connection refused"), true},
	}
	for _, tt := range tests {
		if got := IsInfrastructure(tt.err); got != tt.want {
			t.Errorf("IsInfrastructure(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestIsAnswered(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{New(Unavailable, "made up on this side"), false},
		{status.Error(codes.Unavailable, "connection refused"), false},
		{New(Unavailable, "my statestore is away").GRPCStatus().Err(), true},
		{fmt.Errorf("wrapped: %w", New(VersionConflict, "x").GRPCStatus().Err()), true},
		{errors.New("eof"), false},
	}
	for _, tt := range tests {
		if got := IsAnswered(tt.err); got != tt.want {
			t.Errorf("IsAnswered(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
