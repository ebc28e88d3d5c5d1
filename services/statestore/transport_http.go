package statestore

import (
	"context"
	"net/http"
	"time"

	"github.com/fedsync/fedsync/libs/access"
	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/backup"
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
	adminBackupRoutes(mux, e)
	mux.HandleFunc("/", httpjson.NotFound)
	return v.HTTPMiddleware(telemetry.Routes(mux))
}

// viewBackup is a backup in the admin API: its manifest.
func viewBackup(b *fedsyncv1.BackupInfo) backup.Manifest {
	return backup.Manifest{Format: backup.Format, ID: b.GetId(), Service: b.GetService(), CreatedAt: time.Unix(0, b.GetCreatedAt()).UTC(), RaftIndex: b.GetRaftIndex(),
		Size: b.GetSize(), SHA256: b.GetSha256(), PlainSize: b.GetPlainSize(), KeyID: b.GetKeyId(), Documents: b.GetDocuments(), DocumentsDigest: b.GetDocumentsDigest(), Where: b.GetWhere()}
}

// adminBackupRoutes serves the cold backups to administrators (L4):
//
//	POST /api/v1/admin/backups               export the state now: 201 with the backup
//	GET  /api/v1/admin/backups               {"backups":[...]}, newest first
//	POST /api/v1/admin/backups/{id}/verify   read it whole: digest, sealed chunks, documents
//	POST /api/v1/admin/backups/{id}/restore  make it the group's state (pause writes first)
func adminBackupRoutes(mux *http.ServeMux, e Endpoints) {
	admin := func(what string, fn func(w http.ResponseWriter, r *http.Request, who string)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c, _ := authtoken.FromContext(r.Context())
			if err := access.RequireLevel(c, "L4", what); err != nil {
				apierr.WriteHTTP(w, err)
				return
			}
			fn(w, r, c.Subject)
		}
	}
	mux.HandleFunc("POST /api/v1/admin/backups", admin("Taking a backup", func(w http.ResponseWriter, r *http.Request, who string) {
		resp, err := endpoints.Call[*fedsyncv1.CreateBackupResponse](r.Context(), e.CreateBackup, &fedsyncv1.CreateBackupRequest{RequestedBy: who})
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		httpjson.Write(w, http.StatusCreated, viewBackup(resp.GetBackup()))
	}))
	mux.HandleFunc("GET /api/v1/admin/backups", admin("Listing backups", func(w http.ResponseWriter, r *http.Request, _ string) {
		resp, err := endpoints.Call[*fedsyncv1.ListBackupsResponse](r.Context(), e.ListBackups, &fedsyncv1.ListBackupsRequest{})
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		out := []backup.Manifest{}
		for _, b := range resp.GetBackups() {
			out = append(out, viewBackup(b))
		}
		httpjson.Write(w, http.StatusOK, map[string]any{"backups": out})
	}))
	mux.HandleFunc("POST /api/v1/admin/backups/{id}/verify", admin("Verifying a backup", func(w http.ResponseWriter, r *http.Request, _ string) {
		resp, err := endpoints.Call[*fedsyncv1.VerifyBackupResponse](r.Context(), e.VerifyBackup, &fedsyncv1.VerifyBackupRequest{Id: r.PathValue("id")})
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, viewBackup(resp.GetBackup()))
	}))
	mux.HandleFunc("POST /api/v1/admin/backups/{id}/restore", admin("Restoring a backup", func(w http.ResponseWriter, r *http.Request, who string) {
		resp, err := endpoints.Call[*fedsyncv1.RestoreBackupResponse](r.Context(), e.RestoreBackup, &fedsyncv1.RestoreBackupRequest{Id: r.PathValue("id"), RequestedBy: who})
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, viewBackup(resp.GetBackup()))
	}))
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
