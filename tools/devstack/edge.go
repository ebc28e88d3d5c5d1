package devstack

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/guard"
	"github.com/fedsync/fedsync/libs/httpjson"
)

// Routes are the HTTP addresses an edge routes to (one region's view).
type Routes struct {
	Authn, Validation, Merge, StateStore, Broadcaster, HealthMonitor string
}

// NewEdge returns the path router of one region: the same routing the Kubernetes
// Ingress does, by path only. It refuses a body over the contract's 1 MiB
// before forwarding anything (a declared Content-Length of 1e14 is 413 at
// once), and answers a body that breaks on the way (bad chunked framing, too
// slow) with 400, not as an unreachable service. Serve it with
// guard.Limits.Server for the header, body and idle timeouts.
func NewEdge(r Routes) http.Handler {
	// One pool of kept-alive connections to the services. Go's default keeps
	// only 2 idle connections per service, so under concurrent load almost
	// every request dialled a new connection (a third of the edge's CPU, and
	// as much again in the service accepting it).
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = 4096
	transport.MaxIdleConnsPerHost = 1024
	transport.IdleConnTimeout = 90 * time.Second
	proxy := func(addr string) http.Handler {
		p := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: addr})
		p.Transport = transport
		p.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
			if e := guard.BodyError(r); e != nil {
				w.Header().Set("Connection", "close")
				apierr.WriteHTTP(w, e)
				return
			}
			if r.Context().Err() != nil {
				return // the client went away
			}
			apierr.WriteHTTP(w, apierr.New(apierr.Unavailable, "The service behind %s is unreachable.", r.URL.Path))
		}
		return p
	}
	authn, validation, merge, store, bcast, health := proxy(r.Authn), proxy(r.Validation), proxy(r.Merge), proxy(r.StateStore), proxy(r.Broadcaster), proxy(r.HealthMonitor)
	mux := http.NewServeMux()
	mux.Handle("/oauth2/", authn)
	mux.Handle("/.well-known/", authn)
	mux.Handle("/api/v1/admin/", authn)
	mux.Handle("/api/v1/sync/state", validation) // exact: the write API
	mux.Handle("/api/v1/sync/heartbeat", validation)
	mux.Handle("/api/v1/control/", validation) // pause and resume (seed 9.2)
	mux.Handle("/api/v1/sync/state/", store)   // prefix: reads by id
	mux.Handle("/api/v1/sync/query", store)
	mux.Handle("/api/v1/sync/outcomes/", store)
	mux.Handle("/api/v1/sync/clock/", store)
	mux.Handle("/api/v1/sync/conflicts", merge) // the review queue
	mux.Handle("/api/v1/sync/conflicts/", merge)
	mux.Handle("/stream", bcast)
	mux.Handle("/api/v1/sync/subscribe", bcast)
	mux.Handle("/api/v1/sync/unsubscribe", bcast)
	mux.Handle("/api/v1/sync/health", health)
	mux.Handle("/api/v1/openapi.json", health)
	mux.Handle("/dashboard", health) // the operators' live view
	mux.Handle("/dashboard/", health)
	mux.HandleFunc("/", httpjson.NotFound)
	return guard.LimitBody(mux, httpjson.DefaultMaxBody)
}
