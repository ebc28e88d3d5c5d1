package merge

import (
	"github.com/go-kit/kit/endpoint"

	"github.com/fedsync/fedsync/libs/endpoints"
)

// Endpoints are merge's go-kit endpoints, one per Service method.
type Endpoints struct {
	Merge           endpoint.Endpoint
	MergeBatch      endpoint.Endpoint
	CommitStrong    endpoint.Endpoint
	ResolveConflict endpoint.Endpoint
	ListConflicts   endpoint.Endpoint
}

// MakeEndpoints wraps every method of svc in mw(method name).
func MakeEndpoints(svc Service, mw func(method string) endpoint.Middleware) Endpoints {
	return Endpoints{
		Merge:           mw("Merge")(endpoints.Make(svc.Merge)),
		MergeBatch:      mw("MergeBatch")(endpoints.Make(svc.MergeBatch)),
		CommitStrong:    mw("CommitStrong")(endpoints.Make(svc.CommitStrong)),
		ResolveConflict: mw("ResolveConflict")(endpoints.Make(svc.ResolveConflict)),
		ListConflicts:   mw("ListConflicts")(endpoints.Make(svc.ListConflicts)),
	}
}
