package statestore

import (
	"context"
	"net/http"
	"time"

	"github.com/fedsync/fedsync/libs/access"
	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/endpoints"
	"github.com/fedsync/fedsync/libs/httpjson"
	"github.com/fedsync/fedsync/libs/statedoc"
	"github.com/fedsync/fedsync/libs/telemetry"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// queryRequest is the body of POST /api/v1/sync/query.
type queryRequest struct {
	IDPrefix  string `json:"id_prefix"`
	DataType  string `json:"data_type"`
	Limit     int32  `json:"limit"`
	PageToken string `json:"page_token"`
}

// outcomeView is the body of GET /api/v1/sync/outcomes/{message_id}.
type outcomeView struct {
	MessageID string `json:"message_id"`
	ID        string `json:"id"`
	Status    string `json:"status"`
	Version   int64  `json:"version,omitempty"`
	Reason    string `json:"reason,omitempty"`
	At        string `json:"at"`
}

type queryResponse struct {
	Items         []statedoc.View `json:"items"`
	NextPageToken string          `json:"next_page_token"`
}

// NewHTTPHandler serves the contract's read API: GET /api/v1/sync/state/{id} and
// POST /api/v1/sync/query, both for authenticated callers.
func NewHTTPHandler(e Endpoints, v *authtoken.Verifier) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/sync/state/{id}", func(w http.ResponseWriter, r *http.Request) {
		c, _ := authtoken.FromContext(r.Context())
		if err := access.CheckRead(c, r.PathValue("id")); err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		ctx, err := readConsistency(w, r)
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		resp, err := endpoints.Call[*fedsyncv1.GetResponse](ctx, e.Get, &fedsyncv1.GetRequest{Id: r.PathValue("id")})
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, statedoc.ViewOf(resp.GetState(), r.URL.Query().Get("provenance") == "true"))
	})
	mux.HandleFunc("POST /api/v1/sync/query", func(w http.ResponseWriter, r *http.Request) {
		var q queryRequest
		if err := httpjson.Decode(w, r, httpjson.DefaultMaxBody, &q); err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		ctx, err := readConsistency(w, r)
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		resp, err := endpoints.Call[*fedsyncv1.QueryResponse](ctx, e.Query, &fedsyncv1.QueryRequest{
			IdPrefix: q.IDPrefix, DataType: q.DataType, Limit: q.Limit, PageToken: q.PageToken,
		})
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		out := queryResponse{Items: []statedoc.View{}, NextPageToken: resp.GetNextPageToken()}
		c, _ := authtoken.FromContext(r.Context())
		for _, st := range resp.GetItems() {
			if !access.CanRead(c, st.GetId()) {
				continue // what the caller may not read is left out of the page
			}
			out.Items = append(out.Items, statedoc.ViewOf(st, false))
		}
		httpjson.Write(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /api/v1/sync/outcomes/{message_id}", func(w http.ResponseWriter, r *http.Request) {
		resp, err := endpoints.Call[*fedsyncv1.GetOutcomeResponse](r.Context(), e.GetOutcome, &fedsyncv1.GetOutcomeRequest{MessageId: r.PathValue("message_id")})
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		o := resp.GetOutcome()
		if c, _ := authtoken.FromContext(r.Context()); !access.CanRead(c, o.GetStateId()) {
			apierr.WriteHTTP(w, access.CheckRead(c, o.GetStateId()))
			return
		}
		httpjson.Write(w, http.StatusOK, outcomeView{
			MessageID: o.GetMessageId(), ID: o.GetStateId(), Status: o.GetStatus(), Version: o.GetVersion(), Reason: o.GetReason(),
			At: time.Unix(0, o.GetAt()).UTC().Format(time.RFC3339Nano),
		})
	})
	mux.HandleFunc("GET /api/v1/sync/clock/{agent}", func(w http.ResponseWriter, r *http.Request) {
		agent := r.PathValue("agent")
		if c, _ := authtoken.FromContext(r.Context()); c.Subject != agent && !access.CanReadAll(c) {
			apierr.WriteHTTP(w, apierr.New(apierr.PermissionDenied, "Reading the causal clock of %s needs permission read_all; a client reads its own.", agent).
				WithDetail("missing_permission", access.ReadAll))
			return
		}
		resp, err := endpoints.Call[*fedsyncv1.GetFrontierResponse](r.Context(), e.GetFrontier, &fedsyncv1.GetFrontierRequest{})
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		n := resp.GetFrontier()[agent]
		httpjson.Write(w, http.StatusOK, map[string]any{"agent": agent, "counter": n, "next": n + 1})
	})
	mux.HandleFunc("/", httpjson.NotFound)
	return v.HTTPMiddleware(telemetry.Routes(mux))
}

// readConsistency reads ?consistency=: "linearizable" (the default: the Raft
// leader answers, after confirming it still leads) or "stale" (whichever
// replica the request reaches answers from its own copy, which may be behind
// the leader; the answer carries Fedsync-Consistency: stale).
func readConsistency(w http.ResponseWriter, r *http.Request) (context.Context, error) {
	switch r.URL.Query().Get("consistency") {
	case "", "linearizable":
		return r.Context(), nil
	case "stale":
		w.Header().Set("Fedsync-Consistency", "stale")
		return WithStaleRead(r.Context()), nil
	}
	return nil, apierr.New(apierr.InvalidArgument, "Query parameter consistency must be linearizable (the default) or stale, not %q.", r.URL.Query().Get("consistency"))
}
