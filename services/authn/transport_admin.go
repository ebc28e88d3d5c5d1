package authn

import (
	"net/http"

	"github.com/go-kit/kit/endpoint"

	"github.com/fedsync/fedsync/libs/access"
	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/endpoints"
	"github.com/fedsync/fedsync/libs/httpjson"
	"github.com/fedsync/fedsync/libs/telemetry"
)

// adminHandler serves the administration API; every route needs level L4.
//
//	GET  /api/v1/admin/clients                      list clients (no secrets)
//	POST /api/v1/admin/clients                      create: 201 with the secret, shown once
//	POST /api/v1/admin/clients/{id}/disable         no new tokens; live ones refused within the revocation refresh
//	POST /api/v1/admin/clients/{id}/enable
//	POST /api/v1/admin/clients/{id}/rotate-secret   a new secret, shown once
//	GET  /api/v1/admin/keys                         signing keys and their states
//	POST /api/v1/admin/keys/rotate                  next key signs, current retires
func adminHandler(e Endpoints) http.Handler {
	mux := http.NewServeMux()
	serve := func(ep endpoint.Endpoint, status int, req func(r *http.Request) (any, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c, _ := authtoken.FromContext(r.Context())
			if err := access.RequireLevel(c, "L4", "Client and key administration"); err != nil {
				apierr.WriteHTTP(w, err)
				return
			}
			in, err := req(r)
			if err != nil {
				apierr.WriteHTTP(w, err)
				return
			}
			resp, err := ep(r.Context(), in)
			if err == nil {
				if f, ok := resp.(endpoint.Failer); ok {
					err = f.Failed()
				}
			}
			if err != nil {
				apierr.WriteHTTP(w, err)
				return
			}
			httpjson.Write(w, status, valueOf(resp))
		}
	}
	none := func(*http.Request) (any, error) { return struct{}{}, nil }
	id := func(r *http.Request) (any, error) { return r.PathValue("id"), nil }
	mux.HandleFunc("GET /api/v1/admin/clients", serve(e.ListClients, http.StatusOK, none))
	mux.HandleFunc("POST /api/v1/admin/clients", serve(e.CreateClient, http.StatusCreated, func(r *http.Request) (any, error) {
		var req CreateClientRequest
		return req, httpjson.Decode(nil, r, 64<<10, &req)
	}))
	mux.HandleFunc("POST /api/v1/admin/clients/{id}/disable", serve(e.SetClientDisabled, http.StatusOK, func(r *http.Request) (any, error) {
		return SetDisabledRequest{ClientID: r.PathValue("id"), Disabled: true}, nil
	}))
	mux.HandleFunc("POST /api/v1/admin/clients/{id}/enable", serve(e.SetClientDisabled, http.StatusOK, func(r *http.Request) (any, error) {
		return SetDisabledRequest{ClientID: r.PathValue("id"), Disabled: false}, nil
	}))
	mux.HandleFunc("POST /api/v1/admin/clients/{id}/rotate-secret", serve(e.RotateClientSecret, http.StatusOK, id))
	mux.HandleFunc("GET /api/v1/admin/keys", serve(e.ListKeys, http.StatusOK, none))
	mux.HandleFunc("POST /api/v1/admin/keys/rotate", serve(e.RotateKeys, http.StatusOK, none))
	mux.HandleFunc("/", httpjson.NotFound)
	return telemetry.Routes(mux)
}

// valueOf unwraps an endpoint response for JSON encoding.
func valueOf(resp any) any {
	switch r := resp.(type) {
	case endpoints.Response[[]Client]:
		return map[string]any{"clients": r.Value}
	case endpoints.Response[ClientWithSecret]:
		return r.Value
	case endpoints.Response[*Client]:
		return r.Value
	case endpoints.Response[[]KeyInfo]:
		return map[string]any{"keys": r.Value}
	}
	return resp
}
