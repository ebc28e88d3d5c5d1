package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedsync/fedsync/libs/apierr"
)

// The overload preset offers fedsync twice the load it can commit and checks
// that it defends itself by refusing admission (HTTP 503 unavailable or 429
// rate_limited with Retry-After; gRPC Unavailable or ResourceExhausted with
// fedsync's ErrorInfo) rather than by acknowledging more than it commits.

// refusedError is a write the system refused to admit: it was not taken, and
// the agent retries it after RetryAfter. Refusals are counted apart from errors.
type refusedError struct {
	code          string // "503 unavailable", "429 rate_limited", "grpc Unavailable", ...
	retryAfter    time.Duration
	hasRetryAfter bool
	lag           int64 // details.lag, when the refusal gave one (-1: none)
}

func (e *refusedError) Error() string { return "refused: " + e.code }

func asRefused(err error) (*refusedError, bool) {
	var re *refusedError
	ok := errors.As(err, &re)
	return re, ok
}

// httpRefusal returns the refusal an HTTP response carries (503 or 429 with the
// contract's error body), or nil.
func httpRefusal(statusCode int, header http.Header, body []byte) *refusedError {
	if statusCode != http.StatusServiceUnavailable && statusCode != http.StatusTooManyRequests {
		return nil
	}
	re := &refusedError{code: fmt.Sprint(statusCode), lag: -1}
	if e, err := apierr.ReadHTTP(body); err == nil {
		re.code, re.lag = fmt.Sprintf("%d %s", statusCode, e.Code), detailsLag(e.Details)
	}
	re.retryAfter, re.hasRetryAfter = parseRetryAfter(header.Get("Retry-After"), time.Now())
	return re
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

func detailsLag(d map[string]any) int64 {
	if v, ok := d["lag"].(float64); ok {
		return int64(v)
	}
	return -1
}

// grpcRefusal returns the refusal a gRPC status carries: Unavailable or
// ResourceExhausted with fedsync's ErrorInfo (domain fedsync.io; its metadata
// holds retry_after_ms and the details as JSON), or nil. A bare Unavailable is
// a transport failure, not a refusal.
func grpcRefusal(st *status.Status) *refusedError {
	if st.Code() != codes.Unavailable && st.Code() != codes.ResourceExhausted {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == "fedsync.io" {
			e := apierr.FromStatus(st) // the contract error the ErrorInfo carries
			re := &refusedError{code: "grpc " + st.Code().String() + " " + string(e.Code), lag: detailsLag(e.Details)}
			re.retryAfter, re.hasRetryAfter = e.RetryAfter, e.RetryAfter > 0 || info.Metadata["retry_after_ms"] != ""
			return re
		}
	}
	return nil
}

// refusalPause is how long an agent waits before retrying a refused write:
// Retry-After plus up to 10% jitter (so that refused agents do not all come
// back at once; at least 50 ms), or a short pause (200 ms) when the refusal
// gave no Retry-After.
func refusalPause(re *refusedError, jitter float64) time.Duration {
	if !re.hasRetryAfter {
		return 200 * time.Millisecond
	}
	return max(re.retryAfter+time.Duration(float64(re.retryAfter)*0.1*jitter), 50*time.Millisecond)
}

// admissionOK is the overload check: no more accepted than committed + 5%.
func admissionOK(acceptedPerSec, committedPerSec float64) bool {
	return acceptedPerSec <= committedPerSec*1.05
}

// runOverload runs the overload preset on one system. The offered load is the
// scenario's rate (-rate) or, without one, twice fedsync's maximum: a probe
// first writes as fast as acknowledgements allow, and fedsync's maximum is what
// it committed per second then. The baselines get the same offered load (so
// fedsync must run first).
func runOverload(ctx context.Context, sys System, sc Scenario, o RunOptions, rep *Report) error {
	if rep.Best == nil {
		rep.Best = map[string]*Result{}
	}
	rate := sc.Rate
	if rate == 0 {
		if sys.Name() == "fedsync" {
			probe := sc
			probe.Warmup, probe.Duration = sc.ProbeWarmup, sc.ProbeDuration
			po := o
			po.Label = "probe"
			res, err := runOnce(ctx, sys, probe, 0, po)
			if err != nil {
				return err
			}
			rep.Results = append(rep.Results, res)
			ok := admissionOK(res.AcceptedPerSec, res.CommittedPerSec)
			res.AdmissionOK = &ok
			rep.ProbeCommittedPerSec = res.CommittedPerSec
			rep.OfferedRate = overloadRate(res.CommittedPerSec)
		}
		if rep.OfferedRate == 0 {
			return errors.New("no offered load: fedsync's probe must run first (put fedsync first in -systems) or give -rate")
		}
		rate = rep.OfferedRate
	} else {
		rep.OfferedRate = rate
	}
	o.Label = "offered " + fmtRate(rate) + "/s"
	res, err := runOnce(ctx, sys, sc, rate, o)
	if err != nil {
		return err
	}
	ok := admissionOK(res.AcceptedPerSec, res.CommittedPerSec)
	res.AdmissionOK = &ok
	rep.Results = append(rep.Results, res)
	rep.Best[sys.Name()] = res
	return nil
}

// overloadRate is twice a maximum, in whole tens, at least 10/s.
func overloadRate(maxPerSec float64) float64 {
	return math.Max(10, math.Round(2*maxPerSec/10)*10)
}
