package validation

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/fedsync/fedsync/libs/access"
	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/endpoints"
	"github.com/fedsync/fedsync/libs/httpjson"
	"github.com/fedsync/fedsync/libs/telemetry"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// pushBody is the body of POST /api/v1/sync/state (contract: State).
type pushBody struct {
	ID              string           `json:"id"`
	DataType        string           `json:"data_type"`
	Patch           json.RawMessage  `json:"patch"`
	Consistency     string           `json:"consistency"`
	ExpectedVersion *int64           `json:"expected_version"`
	VectorClock     map[string]int64 `json:"vector_clock"`
	MessageID       string           `json:"message_id"`
	Priority        *int32           `json:"priority"`
	BaseVersion     *int64           `json:"base_version"`
}

type pushResponse struct {
	MessageID string `json:"message_id"`
	Status    string `json:"status"`
	Version   int64  `json:"version,omitempty"`
}

// NewHTTPHandler serves the write API: POST /api/v1/sync/state, and
// POST /api/v1/sync/heartbeat for agents' signs of life.
func NewHTTPHandler(e Endpoints, v *authtoken.Verifier, maxBody int64) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/sync/state", func(w http.ResponseWriter, r *http.Request) {
		var b pushBody
		if err := httpjson.Decode(w, r, maxBody, &b); err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		req := &fedsyncv1.PushStateRequest{
			Id: b.ID, DataType: b.DataType, Patch: b.Patch, Consistency: b.Consistency,
			VectorClock: b.VectorClock, MessageId: b.MessageID,
		}
		if b.ExpectedVersion != nil {
			req.ExpectedVersion, req.HasExpectedVersion = *b.ExpectedVersion, true
		}
		if b.BaseVersion != nil {
			req.BaseVersion, req.HasBaseVersion = *b.BaseVersion, true
		}
		if b.Priority != nil {
			req.Priority, req.HasPriority = *b.Priority, true
		}
		resp, err := endpoints.Call[*fedsyncv1.PushStateResponse](r.Context(), e.PushState, req)
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		status := http.StatusAccepted
		if resp.GetStatus() == "committed" {
			status = http.StatusOK
		}
		httpjson.Write(w, status, pushResponse{MessageID: resp.GetMessageId(), Status: resp.GetStatus(), Version: resp.GetVersion()})
	})
	mux.HandleFunc("POST /api/v1/sync/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		if _, err := endpoints.Call[*fedsyncv1.HeartbeatResponse](r.Context(), e.Heartbeat, &fedsyncv1.HeartbeatRequest{}); err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	control := func(paused bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c, _ := authtoken.FromContext(r.Context())
			if err := access.RequireLevel(c, "L4", "Pausing and resuming the federation"); err != nil {
				apierr.WriteHTTP(w, err)
				return
			}
			var body struct {
				Reason string `json:"reason"`
			}
			if r.ContentLength > 0 {
				if err := httpjson.Decode(w, r, 64<<10, &body); err != nil {
					apierr.WriteHTTP(w, err)
					return
				}
			}
			res, err := endpoints.Call[*PauseResult](r.Context(), e.SetPaused, SetPausedRequest{Paused: paused, By: c.Subject, Reason: body.Reason})
			if err != nil {
				apierr.WriteHTTP(w, err)
				return
			}
			view := controlView(res.State)
			view["instances"], view["unconfirmed"] = res.Instances, append([]string{}, res.Unconfirmed...)
			httpjson.Write(w, http.StatusOK, view)
		}
	}
	mux.HandleFunc("POST /api/v1/control/pause", control(true))
	mux.HandleFunc("POST /api/v1/control/resume", control(false))
	mux.HandleFunc("GET /api/v1/control/state", func(w http.ResponseWriter, r *http.Request) {
		c, _ := authtoken.FromContext(r.Context())
		if err := access.RequireLevel(c, "L3", "Reading the federation's operating state"); err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		st, err := endpoints.Call[*fedsyncv1.ControlState](r.Context(), e.GetControl, struct{}{})
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, controlView(st))
	})
	mux.HandleFunc("/", httpjson.NotFound)
	return v.HTTPMiddleware(telemetry.Routes(mux))
}

func controlView(st *fedsyncv1.ControlState) map[string]any {
	out := map[string]any{"paused": st.GetPaused(), "by": st.GetBy(), "reason": st.GetReason()}
	if st.GetAt() > 0 {
		out["at"] = time.Unix(0, st.GetAt()).UTC().Format(time.RFC3339Nano)
	}
	return out
}
