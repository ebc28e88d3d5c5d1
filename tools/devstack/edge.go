package devstack

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/guard"
	"github.com/fedsync/fedsync/libs/httpjson"
)

// Routes are the HTTP addresses an edge routes to (one region's view).
// StateStore may name several replicas, comma-separated: a request goes to
// one of them and, when that one cannot be reached, to the next (any replica
// answers; a follower asks the leader).
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
	proxy := func(addrs string) http.Handler {
		replicas := strings.Split(addrs, ",")
		p := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: replicas[0]})
		p.Transport = transport
		if len(replicas) > 1 {
			p.Transport = &failover{next: transport, addrs: replicas}
		}
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
	mux.Handle("/api/v1/admin/backups", store) // cold backups (L4)
	mux.Handle("/api/v1/admin/backups/", store)
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

// failover sends a request to the replicas in turn, starting with the next
// in rotation, until one can be reached. Only a connection that could not be
// made moves on; any answer (errors included) is the answer.
type failover struct {
	next  http.RoundTripper
	addrs []string
	turn  atomic.Uint32
}

func (f *failover) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		var err error
		if body, err = io.ReadAll(r.Body); err != nil { // at most the edge's 1 MiB
			return nil, err
		}
		r.Body.Close()
	}
	start := int(f.turn.Add(1))
	var lastErr error
	for i := range f.addrs {
		out := r.Clone(r.Context())
		out.URL.Host = f.addrs[(start+i)%len(f.addrs)]
		if body != nil {
			out.Body = io.NopCloser(bytes.NewReader(body))
		}
		resp, err := f.next.RoundTrip(out)
		if err == nil {
			return resp, nil
		}
		lastErr = err
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			return nil, err
		}
	}
	return nil, lastErr
}
