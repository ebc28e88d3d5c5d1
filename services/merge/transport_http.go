package merge

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/fedsync/fedsync/libs/access"
	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/endpoints"
	"github.com/fedsync/fedsync/libs/httpjson"
	"github.com/fedsync/fedsync/libs/telemetry"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// conflictView is a conflict as the REST API shows it.
type conflictView struct {
	ID           string          `json:"id"`
	StateID      string          `json:"state_id"`
	DataType     string          `json:"data_type"`
	Field        string          `json:"field,omitempty"`
	Type         string          `json:"conflict_type"`
	Resolution   string          `json:"resolution_method"`
	Status       string          `json:"status"`
	Local        json.RawMessage `json:"local,omitempty"`
	Remote       json.RawMessage `json:"remote,omitempty"`
	Resolved     json.RawMessage `json:"resolved,omitempty"`
	LocalWriter  string          `json:"local_writer,omitempty"`
	RemoteWriter string          `json:"remote_writer,omitempty"`
	LocalVersion int64           `json:"local_version,omitempty"`
	MessageID    string          `json:"message_id"`
	DetectedAt   string          `json:"detected_at"`
	ResolvedBy   string          `json:"resolved_by,omitempty"`
	Detail       string          `json:"detail,omitempty"`
}

func raw(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return json.RawMessage(b)
}

func viewConflict(c *fedsyncv1.Conflict) conflictView {
	return conflictView{
		ID: c.GetId(), StateID: c.GetStateId(), DataType: c.GetDataType(), Field: c.GetField(), Type: c.GetType(),
		Resolution: c.GetResolution(), Status: c.GetStatus(), Local: raw(c.GetLocal()), Remote: raw(c.GetRemote()),
		Resolved: raw(c.GetResolved()), LocalWriter: c.GetLocalWriter(), RemoteWriter: c.GetRemoteWriter(),
		LocalVersion: c.GetLocalVersion(), MessageID: c.GetMessageId(),
		DetectedAt: time.Unix(0, c.GetDetectedAt()).UTC().Format(time.RFC3339Nano), ResolvedBy: c.GetResolvedBy(), Detail: c.GetDetail(),
	}
}

type resolveBody struct {
	Choice string          `json:"choice"`
	Value  json.RawMessage `json:"value"`
}

// NewHTTPHandler serves the review queue: GET /api/v1/sync/conflicts and
// POST /api/v1/sync/conflicts/{id}/resolve, both for level L3 and above.
func NewHTTPHandler(e Endpoints, v *authtoken.Verifier) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/sync/conflicts", func(w http.ResponseWriter, r *http.Request) {
		c, _ := authtoken.FromContext(r.Context())
		if err := access.RequireLevel(c, "L3", "Reading the review queue"); err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		q := r.URL.Query()
		status := q.Get("status")
		if status == "" {
			status = "pending"
		} else if status == "all" {
			status = ""
		}
		limit, _ := strconv.Atoi(q.Get("limit"))
		resp, err := endpoints.Call[*fedsyncv1.ListConflictsResponse](r.Context(), e.ListConflicts, &fedsyncv1.ListConflictsRequest{
			Status: status, Limit: int32(limit), PageToken: q.Get("page_token"),
		})
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		out := struct {
			Conflicts     []conflictView `json:"conflicts"`
			NextPageToken string         `json:"next_page_token"`
		}{Conflicts: []conflictView{}, NextPageToken: resp.GetNextPageToken()}
		for _, c := range resp.GetConflicts() {
			out.Conflicts = append(out.Conflicts, viewConflict(c))
		}
		httpjson.Write(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /api/v1/sync/conflicts/{id}/resolve", func(w http.ResponseWriter, r *http.Request) {
		c, _ := authtoken.FromContext(r.Context())
		if err := access.RequireLevel(c, "L3", "Resolving a conflict"); err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		var b resolveBody
		if err := httpjson.Decode(w, r, httpjson.DefaultMaxBody, &b); err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		resp, err := endpoints.Call[*fedsyncv1.ResolveConflictResponse](r.Context(), e.ResolveConflict, &fedsyncv1.ResolveConflictRequest{
			Id: r.PathValue("id"), Choice: b.Choice, Value: b.Value, Resolver: c.Subject,
		})
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, struct {
			Conflict conflictView `json:"conflict"`
			Version  int64        `json:"version"`
		}{viewConflict(resp.GetConflict()), resp.GetVersion()})
	})
	mux.HandleFunc("/", httpjson.NotFound)
	return v.HTTPMiddleware(telemetry.Routes(mux))
}
