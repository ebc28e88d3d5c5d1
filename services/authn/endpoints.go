package authn

import (
	"github.com/go-kit/kit/endpoint"

	"github.com/fedsync/fedsync/libs/endpoints"
)

// Endpoints are authn's go-kit endpoints, one per Service method.
type Endpoints struct {
	IssueToken     endpoint.Endpoint
	GetJWKS        endpoint.Endpoint
	GetRevocations endpoint.Endpoint
	Revoke         endpoint.Endpoint

	ListClients        endpoint.Endpoint
	CreateClient       endpoint.Endpoint
	SetClientDisabled  endpoint.Endpoint
	RotateClientSecret endpoint.Endpoint
	ListKeys           endpoint.Endpoint
	RotateKeys         endpoint.Endpoint
}

// MakeEndpoints wraps every method of svc in mw(method name).
func MakeEndpoints(svc Service, mw func(method string) endpoint.Middleware) Endpoints {
	return Endpoints{
		IssueToken:     mw("IssueToken")(endpoints.Make(svc.IssueToken)),
		GetJWKS:        mw("GetJWKS")(endpoints.Make(svc.GetJWKS)),
		GetRevocations: mw("GetRevocations")(endpoints.Make(svc.GetRevocations)),
		Revoke:         mw("Revoke")(endpoints.Make(svc.Revoke)),

		ListClients:        mw("ListClients")(endpoints.Make(svc.ListClients)),
		CreateClient:       mw("CreateClient")(endpoints.Make(svc.CreateClient)),
		SetClientDisabled:  mw("SetClientDisabled")(endpoints.Make(svc.SetClientDisabled)),
		RotateClientSecret: mw("RotateClientSecret")(endpoints.Make(svc.RotateClientSecret)),
		ListKeys:           mw("ListKeys")(endpoints.Make(svc.ListKeys)),
		RotateKeys:         mw("RotateKeys")(endpoints.Make(svc.RotateKeys)),
	}
}
