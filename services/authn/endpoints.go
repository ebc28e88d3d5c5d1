package authn

import (
	"github.com/go-kit/kit/endpoint"

	"github.com/fedsync/fedsync/libs/endpoints"
)

// Endpoints are authn's go-kit endpoints, one per Service method.
type Endpoints struct {
	IssueToken endpoint.Endpoint
	GetJWKS    endpoint.Endpoint
}

// MakeEndpoints wraps every method of svc in mw(method name).
func MakeEndpoints(svc Service, mw func(method string) endpoint.Middleware) Endpoints {
	return Endpoints{
		IssueToken: mw("IssueToken")(endpoints.Make(svc.IssueToken)),
		GetJWKS:    mw("GetJWKS")(endpoints.Make(svc.GetJWKS)),
	}
}
