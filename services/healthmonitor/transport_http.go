package healthmonitor

import (
	"net/http"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/endpoints"
	"github.com/fedsync/fedsync/libs/httpjson"
	"github.com/fedsync/fedsync/libs/telemetry"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

type componentHealth struct {
	Status           string `json:"status"`
	Instances        int32  `json:"instances"`
	HealthyInstances int32  `json:"healthy_instances"`
}

type agentHealth struct {
	Healthy   int32 `json:"healthy"`
	Unhealthy int32 `json:"unhealthy"`
}

type healthBody struct {
	Status   string                     `json:"status"`
	Services map[string]componentHealth `json:"services"`
	Regions  map[string]componentHealth `json:"regions"`
	Agents   agentHealth                `json:"agents"`
	// Issues say why the data path is degraded (see pipeline.go).
	Issues []issue `json:"issues"`
}

type issue struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

func issues(in []*fedsyncv1.HealthIssue) []issue {
	out := []issue{}
	for _, i := range in {
		out = append(out, issue{Kind: i.GetKind(), Message: i.GetMessage()})
	}
	return out
}

func components(m map[string]*fedsyncv1.ServiceHealth) map[string]componentHealth {
	out := map[string]componentHealth{}
	for k, v := range m {
		out[k] = componentHealth{Status: v.GetStatus(), Instances: v.GetInstances(), HealthyInstances: v.GetHealthyInstances()}
	}
	return out
}

// NewHTTPHandler serves GET /api/v1/sync/health, without a token: 200 when
// healthy or degraded, 503 when unhealthy, the same body either way.
//
// With a dashboard it also serves GET /dashboard and /dashboard/events.
func NewHTTPHandler(e Endpoints, dash *dashboard) http.Handler {
	mux := http.NewServeMux()
	if dash != nil {
		dash.register(mux)
	}
	// The REST API's OpenAPI 3.1 document (docs/openapi.json), for tools and
	// agent authors; no token needed.
	mux.HandleFunc("GET /api/v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPI)
	})
	mux.HandleFunc("GET /api/v1/sync/health", func(w http.ResponseWriter, r *http.Request) {
		resp, err := endpoints.Call[*fedsyncv1.GetHealthResponse](r.Context(), e.GetHealth, &fedsyncv1.GetHealthRequest{})
		if err != nil {
			apierr.WriteHTTP(w, err)
			return
		}
		status := http.StatusOK
		if resp.GetStatus() == Unhealthy {
			status = http.StatusServiceUnavailable
			w.Header().Set("Retry-After", "5")
		}
		httpjson.Write(w, status, healthBody{
			Status: resp.GetStatus(), Services: components(resp.GetServices()), Regions: components(resp.GetRegions()),
			Agents: agentHealth{Healthy: resp.GetAgents().GetHealthy(), Unhealthy: resp.GetAgents().GetUnhealthy()},
			Issues: issues(resp.GetIssues()),
		})
	})
	mux.HandleFunc("/", httpjson.NotFound)
	return telemetry.Routes(mux)
}
