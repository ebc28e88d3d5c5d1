package healthmonitor

import (
	"github.com/go-kit/kit/endpoint"

	"github.com/fedsync/fedsync/libs/endpoints"
)

// Endpoints are the healthmonitor's go-kit endpoints, one per Service method.
type Endpoints struct {
	GetHealth endpoint.Endpoint
}

// MakeEndpoints wraps every method of svc in mw(method name).
func MakeEndpoints(svc Service, mw func(method string) endpoint.Middleware) Endpoints {
	return Endpoints{GetHealth: mw("GetHealth")(endpoints.Make(svc.GetHealth))}
}
