package statestore

import (
	"github.com/go-kit/kit/endpoint"

	"github.com/fedsync/fedsync/libs/endpoints"
)

// Endpoints are the statestore's go-kit endpoints, one per Service method.
type Endpoints struct {
	Apply      endpoint.Endpoint
	ApplyBatch endpoint.Endpoint
	Get        endpoint.Endpoint
	GetMany    endpoint.Endpoint
	Query      endpoint.Endpoint
	ReadLog    endpoint.Endpoint

	GetFrontier   endpoint.Endpoint
	GetDigests    endpoint.Endpoint
	RecordOutcome endpoint.Endpoint
	GetOutcome    endpoint.Endpoint
	ListConflicts endpoint.Endpoint
	GetConflict   endpoint.Endpoint
	GetControl    endpoint.Endpoint
	SetControl    endpoint.Endpoint

	CreateBackup  endpoint.Endpoint
	ListBackups   endpoint.Endpoint
	VerifyBackup  endpoint.Endpoint
	RestoreBackup endpoint.Endpoint
}

// MakeEndpoints wraps every method of svc in mw(method name).
func MakeEndpoints(svc Service, mw func(method string) endpoint.Middleware) Endpoints {
	return Endpoints{
		Apply:      mw("Apply")(endpoints.Make(svc.Apply)),
		ApplyBatch: mw("ApplyBatch")(endpoints.Make(svc.ApplyBatch)),
		Get:        mw("Get")(endpoints.Make(svc.Get)),
		GetMany:    mw("GetMany")(endpoints.Make(svc.GetMany)),
		Query:      mw("Query")(endpoints.Make(svc.Query)),
		ReadLog:    mw("ReadLog")(endpoints.Make(svc.ReadLog)),

		GetFrontier:   mw("GetFrontier")(endpoints.Make(svc.GetFrontier)),
		GetDigests:    mw("GetDigests")(endpoints.Make(svc.GetDigests)),
		RecordOutcome: mw("RecordOutcome")(endpoints.Make(svc.RecordOutcome)),
		GetOutcome:    mw("GetOutcome")(endpoints.Make(svc.GetOutcome)),
		ListConflicts: mw("ListConflicts")(endpoints.Make(svc.ListConflicts)),
		GetConflict:   mw("GetConflict")(endpoints.Make(svc.GetConflict)),
		GetControl:    mw("GetControl")(endpoints.Make(svc.GetControl)),
		SetControl:    mw("SetControl")(endpoints.Make(svc.SetControl)),

		CreateBackup:  mw("CreateBackup")(endpoints.Make(svc.CreateBackup)),
		ListBackups:   mw("ListBackups")(endpoints.Make(svc.ListBackups)),
		VerifyBackup:  mw("VerifyBackup")(endpoints.Make(svc.VerifyBackup)),
		RestoreBackup: mw("RestoreBackup")(endpoints.Make(svc.RestoreBackup)),
	}
}
