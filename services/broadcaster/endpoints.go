package broadcaster

import (
	"context"

	"github.com/go-kit/kit/endpoint"

	"github.com/fedsync/fedsync/libs/endpoints"
)

// Endpoints are the broadcaster's request/response go-kit endpoints. Streams
// (WebSocket, gRPC Subscribe) are served from the Service directly.
type Endpoints struct {
	CreateSubscription endpoint.Endpoint
	DeleteSubscription endpoint.Endpoint
	ListSubscriptions  endpoint.Endpoint
}

// DeleteRequest asks to remove a registered subscription.
type DeleteRequest struct {
	ID     string
	Caller string
}

// MakeEndpoints wraps the registry's operations in mw(method name).
func MakeEndpoints(r *Registry, mw func(method string) endpoint.Middleware) Endpoints {
	return Endpoints{
		CreateSubscription: mw("CreateSubscription")(endpoints.Make(r.Create)),
		DeleteSubscription: mw("DeleteSubscription")(endpoints.Make(func(ctx context.Context, req DeleteRequest) (struct{}, error) {
			return struct{}{}, r.Delete(ctx, req.ID, req.Caller)
		})),
		ListSubscriptions: mw("ListSubscriptions")(endpoints.Make(r.List)),
	}
}
