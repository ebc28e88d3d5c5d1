package verify

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

// route resolves a request path on an Ingress rule as the Ingress API specifies:
// the longest matching path wins, Exact before Prefix at equal length; a Prefix
// matches whole path elements ("/a/b" matches "/a/b" and "/a/b/c", not "/a/bc").
// It returns the backend Service's name, or "" when nothing matches.
func route(rule networkingv1.IngressRule, reqPath string) string {
	best, bestLen, bestExact := "", -1, false
	for _, p := range rule.HTTP.Paths {
		matched, exact := false, false
		switch *p.PathType {
		case networkingv1.PathTypeExact:
			matched, exact = reqPath == p.Path, true
		case networkingv1.PathTypePrefix, networkingv1.PathTypeImplementationSpecific:
			matched = prefixMatch(p.Path, reqPath)
		}
		if !matched {
			continue
		}
		l := len(strings.TrimSuffix(p.Path, "/"))
		if l > bestLen || (l == bestLen && exact && !bestExact) {
			best, bestLen, bestExact = p.Backend.Service.Name, l, exact
		}
	}
	return best
}

func prefixMatch(prefix, reqPath string) bool {
	pe := strings.Split(strings.Trim(prefix, "/"), "/")
	re := strings.Split(strings.Trim(reqPath, "/"), "/")
	if strings.Trim(prefix, "/") == "" {
		return true
	}
	if len(re) < len(pe) {
		return false
	}
	return slices.Equal(pe, re[:len(pe)])
}

// edgeRoutes reads the `make run` edge (tools/devstack/edge.go) and returns its
// ServeMux patterns with the service each goes to (region-independent names:
// authn, validation, merge, statestore, broadcaster, healthmonitor).
func edgeRoutes(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, repoPath("tools/devstack/edge.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	field := map[string]string{"Authn": "authn", "Validation": "validation", "Merge": "merge", "StateStore": "statestore",
		"Broadcaster": "broadcaster", "HealthMonitor": "healthmonitor"}
	proxies := map[string]string{} // local variable -> service
	routes := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.AssignStmt: // authn, validation, ... := proxy(r.Authn), proxy(r.Validation), ...
			for i, rhs := range x.Rhs {
				call, ok := rhs.(*ast.CallExpr)
				if !ok || len(call.Args) != 1 || i >= len(x.Lhs) {
					continue
				}
				if sel, ok := call.Args[0].(*ast.SelectorExpr); ok {
					if svc, ok := field[sel.Sel.Name]; ok {
						proxies[x.Lhs[i].(*ast.Ident).Name] = svc
					}
				}
			}
		case *ast.CallExpr: // mux.Handle("/pattern", proxyVar)
			sel, ok := x.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "Handle" || len(x.Args) != 2 {
				return true
			}
			lit, ok := x.Args[0].(*ast.BasicLit)
			id, ok2 := x.Args[1].(*ast.Ident)
			if !ok || !ok2 {
				return true
			}
			pattern, _ := strconv.Unquote(lit.Value)
			if svc, ok := proxies[id.Name]; ok {
				routes[pattern] = svc
			}
		}
		return true
	})
	if len(routes) < 8 {
		t.Fatalf("read only %d routes from tools/devstack/edge.go (%v): has its shape changed? Update edgeRoutes.", len(routes), routes)
	}
	return routes
}

// samplePaths turns a ServeMux pattern into request paths it routes.
func samplePaths(pattern string) []string {
	if _, p, ok := strings.Cut(pattern, " "); ok { // "GET /path"
		pattern = p
	}
	if strings.HasSuffix(pattern, "/") {
		return []string{pattern + "ai-042:beliefs", pattern + "a/b"}
	}
	return []string{pattern}
}

// contractPaths are the public paths of docs/contract-v1.md and the control API
// (seed 9.2), with the service that must answer them.
var contractPaths = map[string]string{
	"/oauth2/token":                   "authn",
	"/.well-known/jwks.json":          "authn",
	"/api/v1/sync/state":              "validation",
	"/api/v1/sync/heartbeat":          "validation",
	"/api/v1/sync/state/ai-042:notes": "statestore",
	"/api/v1/sync/query":              "statestore",
	"/stream":                         "broadcaster",
	"/api/v1/sync/subscribe":          "broadcaster",
	"/api/v1/sync/unsubscribe":        "broadcaster",
	"/api/v1/sync/health":             "healthmonitor",
	"/dashboard":                      "healthmonitor",
	"/api/v1/openapi.json":            "healthmonitor",
	"/dashboard/events":               "healthmonitor",
	"/api/v1/control/pause":           "validation",
	"/api/v1/control/resume":          "validation",
}

// regionalName is the Service of a service in a region: hubs are per region.
func regionalName(svc, region string) string {
	if regionalServices[svc] {
		return svc + "-" + region
	}
	return svc
}

// TestIngressRoutes: each region has one HTTP Ingress; it routes every
// contract path and every route of the `make run` edge to the same service as
// the edge does, and routes nothing else. Each region also has one gRPC
// Ingress, on a host of its own, for the hub's public gRPC endpoint.
func TestIngressRoutes(t *testing.T) {
	edge := edgeRoutes(t)
	for _, ov := range overlays {
		t.Run(ov[strings.LastIndex(ov, "/")+1:], func(t *testing.T) {
			objs := render(t, ov)
			byRegion := map[string]*networkingv1.Ingress{}
			grpcByRegion := map[string]*networkingv1.Ingress{}
			hosts := map[string]string{}
			for _, ing := range objectsOf[*networkingv1.Ingress](objs) {
				r := ing.Labels["fedsync.io/region"]
				if r == "" {
					t.Errorf("Ingress/%s has no fedsync.io/region label", ing.Name)
					continue
				}
				if ing.Annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC" {
					// The region's gRPC edge for agents: everything on its own
					// host goes to the hub's public gRPC port.
					if grpcByRegion[r] != nil {
						t.Errorf("region %s has two gRPC Ingresses", r)
					}
					grpcByRegion[r] = ing
					if len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].Host == "" || ing.Spec.Rules[0].HTTP == nil || len(ing.Spec.Rules[0].HTTP.Paths) != 1 {
						t.Fatalf("gRPC Ingress/%s: want exactly one rule with a host and one path", ing.Name)
					}
					if other, dup := hosts[ing.Spec.Rules[0].Host]; dup {
						t.Errorf("regions %s and %s share the host %s", other, r, ing.Spec.Rules[0].Host)
					}
					hosts[ing.Spec.Rules[0].Host] = r
					p := ing.Spec.Rules[0].HTTP.Paths[0]
					if b := p.Backend.Service; p.Path != "/" || b == nil || b.Name != regionalName("broadcaster", r) || b.Port.Name != "grpc-public" {
						t.Errorf("gRPC Ingress/%s routes %s to %+v; want / to %s port grpc-public", ing.Name, p.Path, p.Backend.Service, regionalName("broadcaster", r))
					}
					continue
				}
				if byRegion[r] != nil {
					t.Errorf("region %s has two Ingresses", r)
				}
				byRegion[r] = ing
				if len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].Host == "" || ing.Spec.Rules[0].HTTP == nil {
					t.Fatalf("Ingress/%s: want exactly one rule with a host", ing.Name)
				}
				if other, dup := hosts[ing.Spec.Rules[0].Host]; dup {
					t.Errorf("regions %s and %s share the host %s", other, r, ing.Spec.Rules[0].Host)
				}
				hosts[ing.Spec.Rules[0].Host] = r
			}
			for _, w := range workloadsOf(objs) {
				if r := w.Template.Labels["fedsync.io/region"]; r != "" && byRegion[r] == nil {
					t.Errorf("region %s (from %s) has no Ingress", r, w.id())
				}
				if r := w.Template.Labels["fedsync.io/region"]; r != "" && grpcByRegion[r] == nil {
					t.Errorf("region %s (from %s) has no gRPC Ingress for agents", r, w.id())
				}
			}
			for r, ing := range byRegion {
				rule := ing.Spec.Rules[0]
				check := func(path, svc, source string) {
					if got, want := route(rule, path), regionalName(svc, r); got != want {
						t.Errorf("region %s: %s (%s) goes to %q, want %q", r, path, source, got, want)
					}
				}
				for path, svc := range contractPaths {
					check(path, svc, "contract")
				}
				for pattern, svc := range edge {
					for _, p := range samplePaths(pattern) {
						check(p, svc, "edge.go "+pattern)
					}
				}
				// Only what the edge or the contract routes is exposed.
				for _, p := range rule.HTTP.Paths {
					known := false
					for pattern := range edge {
						for _, s := range samplePaths(pattern) {
							known = known || route(networkingv1.IngressRule{IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{p}}}}, s) != ""
						}
					}
					for c := range contractPaths {
						known = known || prefixMatch(p.Path, c) && (*p.PathType != networkingv1.PathTypeExact || p.Path == c)
					}
					if !known {
						t.Errorf("region %s: Ingress path %s (%s) is neither a contract path nor an edge route", r, p.Path, *p.PathType)
					}
				}
				// Paths nobody serves stay unrouted, as on the edge.
				for _, p := range []string{"/", "/metrics", "/healthz", "/api/v1/sync/statex", "/api/v1/sync/querying", "/streams"} {
					if got := route(rule, p); got != "" {
						t.Errorf("region %s: %s is routed to %s", r, p, got)
					}
				}
			}
		})
	}
}

// TestIngressRouteSemantics checks the matcher on the cases that matter here.
func TestIngressRouteSemantics(t *testing.T) {
	exact, prefix := networkingv1.PathTypeExact, networkingv1.PathTypePrefix
	path := func(p string, typ *networkingv1.PathType, svc string) networkingv1.HTTPIngressPath {
		return networkingv1.HTTPIngressPath{Path: p, PathType: typ, Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: svc}}}
	}
	rule := networkingv1.IngressRule{IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{
		path("/a/state/", &prefix, "store"),
		path("/a/state", &exact, "write"),
		path("/a", &prefix, "any"),
	}}}}
	for p, want := range map[string]string{"/a/state": "write", "/a/state/x": "store", "/a/state/": "store", "/a/statex": "any", "/b": ""} {
		if got := route(rule, p); got != want {
			t.Errorf("%s: got %q, want %q", p, got, want)
		}
	}
}
