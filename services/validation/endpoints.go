package validation

import (
	"github.com/go-kit/kit/endpoint"

	"github.com/fedsync/fedsync/libs/endpoints"
)

// Endpoints are validation's go-kit endpoints, one per Service method.
type Endpoints struct {
	PushState   endpoint.Endpoint
	Heartbeat   endpoint.Endpoint
	SetPaused   endpoint.Endpoint
	GetControl  endpoint.Endpoint
	SyncControl endpoint.Endpoint
}

// MakeEndpoints wraps every method of svc in mw(method name).
func MakeEndpoints(svc Service, mw func(method string) endpoint.Middleware) Endpoints {
	return Endpoints{
		PushState:   mw("PushState")(endpoints.Make(svc.PushState)),
		Heartbeat:   mw("Heartbeat")(endpoints.Make(svc.Heartbeat)),
		SetPaused:   mw("SetPaused")(endpoints.Make(svc.SetPaused)),
		GetControl:  mw("GetControl")(endpoints.Make(svc.GetControl)),
		SyncControl: mw("SyncControl")(endpoints.Make(svc.SyncControl)),
	}
}
