package verify

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// A small NetworkPolicy evaluator (the semantics of networking.k8s.io/v1): a pod
// selected by no policy of a direction is open in that direction; once selected,
// only what some rule allows passes. A flow needs the source's egress and the
// destination's ingress. Pods outside the fedsync namespace have no policies here.

// endpoint is a pod (namespace and labels, container ports) or an outside address.
type endpoint struct {
	name      string
	namespace string
	labels    map[string]string
	ports     map[string]int32 // named container ports
	ip        netip.Addr       // outside the cluster only
}

func nsLabels(objs []object, ns string) map[string]string {
	l := map[string]string{"kubernetes.io/metadata.name": ns}
	for _, n := range objectsOf[*corev1.Namespace](objs) {
		if n.Name == ns {
			for k, v := range n.Labels {
				l[k] = v
			}
		}
	}
	return l
}

func selectorMatches(sel *metav1.LabelSelector, l map[string]string) bool {
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(labels.Set(l))
}

func peerMatches(objs []object, policyNS string, p networkingv1.NetworkPolicyPeer, e endpoint) bool {
	if p.IPBlock != nil {
		if !e.ip.IsValid() {
			return false // in-cluster pods are reached through selectors
		}
		pfx, err := netip.ParsePrefix(p.IPBlock.CIDR)
		if err != nil || !pfx.Contains(e.ip) {
			return false
		}
		for _, ex := range p.IPBlock.Except {
			if x, err := netip.ParsePrefix(ex); err == nil && x.Contains(e.ip) {
				return false
			}
		}
		return true
	}
	if e.ip.IsValid() {
		return false
	}
	if p.NamespaceSelector != nil {
		if !selectorMatches(p.NamespaceSelector, nsLabels(objs, e.namespace)) {
			return false
		}
	} else if e.namespace != policyNS {
		return false
	}
	return p.PodSelector == nil || selectorMatches(p.PodSelector, e.labels)
}

func portMatches(ports []networkingv1.NetworkPolicyPort, dst endpoint, port int32, proto corev1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		pp := corev1.ProtocolTCP
		if p.Protocol != nil {
			pp = *p.Protocol
		}
		if pp != proto {
			continue
		}
		if p.Port == nil {
			return true
		}
		want := p.Port.IntVal
		if p.Port.StrVal != "" {
			want = dst.ports[p.Port.StrVal]
		}
		end := want
		if p.EndPort != nil {
			end = *p.EndPort
		}
		if port >= want && port <= end {
			return true
		}
	}
	return false
}

// allowed reports whether src may open a connection to dst:port/proto.
func allowed(objs []object, src, dst endpoint, port int32, proto corev1.Protocol) bool {
	egressOK, ingressOK := true, true
	if !src.ip.IsValid() {
		selected := false
		ok := false
		for _, np := range objectsOf[*networkingv1.NetworkPolicy](objs) {
			if np.Namespace != src.namespace || !hasType(np, networkingv1.PolicyTypeEgress) || !selectorMatchesOrAll(np.Spec.PodSelector, src.labels) {
				continue
			}
			selected = true
			for _, r := range np.Spec.Egress {
				if (len(r.To) == 0 || anyPeer(objs, np.Namespace, r.To, dst)) && portMatches(r.Ports, dst, port, proto) {
					ok = true
				}
			}
		}
		egressOK = !selected || ok
	}
	if !dst.ip.IsValid() {
		selected := false
		ok := false
		for _, np := range objectsOf[*networkingv1.NetworkPolicy](objs) {
			if np.Namespace != dst.namespace || !hasType(np, networkingv1.PolicyTypeIngress) || !selectorMatchesOrAll(np.Spec.PodSelector, dst.labels) {
				continue
			}
			selected = true
			for _, r := range np.Spec.Ingress {
				if (len(r.From) == 0 || anyPeer(objs, np.Namespace, r.From, src)) && portMatches(r.Ports, dst, port, proto) {
					ok = true
				}
			}
		}
		ingressOK = !selected || ok
	}
	return egressOK && ingressOK
}

func selectorMatchesOrAll(sel metav1.LabelSelector, l map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(&sel)
	return err == nil && s.Matches(labels.Set(l)) // an empty selector selects every pod
}

func hasType(np *networkingv1.NetworkPolicy, t networkingv1.PolicyType) bool {
	if len(np.Spec.PolicyTypes) == 0 { // the API server's default
		return t == networkingv1.PolicyTypeIngress || len(np.Spec.Egress) > 0
	}
	for _, x := range np.Spec.PolicyTypes {
		if x == t {
			return true
		}
	}
	return false
}

func anyPeer(objs []object, ns string, peers []networkingv1.NetworkPolicyPeer, e endpoint) bool {
	for _, p := range peers {
		if peerMatches(objs, ns, p, e) {
			return true
		}
	}
	return false
}

// podsOf returns an endpoint per rendered workload, by workload name.
func podsOf(objs []object) map[string]endpoint {
	out := map[string]endpoint{}
	for _, w := range workloadsOf(objs) {
		e := endpoint{name: w.Name, namespace: w.Namespace, labels: w.Template.Labels, ports: map[string]int32{}}
		for _, c := range w.Template.Spec.Containers {
			for _, p := range c.Ports {
				e.ports[p.Name] = p.ContainerPort
			}
		}
		out[w.Name] = e
	}
	return out
}

// TestNetworkPolicies checks, per overlay, that the flows of the architecture are
// allowed and that flows outside it are not.
func TestNetworkPolicies(t *testing.T) {
	outside := func(name, ns string, l map[string]string) endpoint {
		return endpoint{name: name, namespace: ns, labels: l}
	}
	ingressCtl := outside("ingress-nginx controller", "ingress-nginx", map[string]string{"app.kubernetes.io/name": "ingress-nginx"})
	dns := outside("kube-dns", "kube-system", map[string]string{"k8s-app": "kube-dns"})
	otel := outside("otel-collector", "observability", map[string]string{"app": "otel-collector"})
	prometheus := outside("prometheus", "monitoring", map[string]string{"app": "prometheus"})
	stranger := outside("a pod in namespace default", "default", map[string]string{"app": "whatever"})
	internet := endpoint{name: "a public webhook receiver", ip: netip.MustParseAddr("93.184.216.34")}
	privateNet := endpoint{name: "a private address", ip: netip.MustParseAddr("10.12.0.7")}

	for _, ov := range overlays {
		t.Run(ov[strings.LastIndex(ov, "/")+1:], func(t *testing.T) {
			objs := render(t, ov)
			pods := podsOf(objs)
			var consul, kafka endpoint
			if ov == "deploy/overlays/dev" {
				consul, kafka = pods["consul"], pods["kafka"]
			} else {
				consul = outside("consul-server", "consul", map[string]string{"app": "consul", "component": "server"})
				kafka = outside("strimzi broker", "kafka", map[string]string{"strimzi.io/cluster": "fedsync", "strimzi.io/kind": "Kafka"})
			}
			var fedsync []endpoint
			var regions []string
			for _, p := range pods {
				if p.labels["app.kubernetes.io/part-of"] == "fedsync" {
					fedsync = append(fedsync, p)
				}
				if r := p.labels["fedsync.io/region"]; r != "" && p.labels["app.kubernetes.io/name"] == "validation" {
					regions = append(regions, r)
				}
			}
			if len(fedsync) < 6 || len(regions) == 0 {
				t.Fatalf("found %d fedsync pods and regions %v", len(fedsync), regions)
			}
			port := func(e endpoint, name string) int32 {
				p := e.ports[name]
				if p == 0 {
					t.Fatalf("%s has no port %s", e.name, name)
				}
				return p
			}
			type flow struct {
				src, dst endpoint
				port     int32
				proto    corev1.Protocol
			}
			var allow, deny []flow
			tcp := func(src, dst endpoint, port int32) flow { return flow{src, dst, port, corev1.ProtocolTCP} }

			hubs := []string{}
			for _, r := range regions {
				hubs = append(hubs, "validation-"+r, "broadcaster-"+r)
			}
			// The public edge reaches every HTTP API, never gRPC.
			for _, n := range append([]string{"authn", "merge", "statestore", "healthmonitor"}, hubs...) {
				allow = append(allow, tcp(ingressCtl, pods[n], port(pods[n], "http")))
				deny = append(deny, tcp(ingressCtl, pods[n], port(pods[n], "grpc")))
				deny = append(deny, tcp(stranger, pods[n], port(pods[n], "http")))
			}
			for _, p := range fedsync {
				// Every service: authn's JWKS, Kafka, Consul, DNS, telemetry.
				allow = append(allow,
					tcp(p, pods["authn"], port(pods["authn"], "grpc")),
					tcp(p, kafka, 9092),
					tcp(p, consul, 8500),
					flow{p, dns, 53, corev1.ProtocolUDP},
					tcp(p, otel, 4317),
					// Probed by healthmonitor (mutual TLS on the gRPC port) and by
					// Consul's health checks (the plaintext health port); scraped.
					tcp(pods["healthmonitor"], p, port(p, "grpc")),
					tcp(consul, p, port(p, "grpc-health")),
					tcp(prometheus, p, port(p, "http")),
				)
				deny = append(deny,
					tcp(stranger, p, port(p, "grpc")),
					// The health port answers anyone who reaches it: only Consul
					// (and the kubelet, from the node) may.
					tcp(stranger, p, port(p, "grpc-health")),
					tcp(ingressCtl, p, port(p, "grpc-health")),
					tcp(prometheus, p, port(p, "grpc-health")),
					// Consul has no client certificate: it checks the health port only.
					tcp(consul, p, port(p, "grpc")),
					tcp(p, stranger, 8080),
					tcp(p, privateNet, 443),
				)
				if name := p.labels["app.kubernetes.io/name"]; name != "broadcaster" && name != "statestore" {
					deny = append(deny, tcp(p, internet, 443))
				}
			}
			for _, r := range regions {
				v, b := pods["validation-"+r], pods["broadcaster-"+r]
				allow = append(allow,
					tcp(v, pods["merge"], port(pods["merge"], "grpc")),           // strong writes
					tcp(v, pods["statestore"], port(pods["statestore"], "grpc")), // the operating state (pause); mtls.Policy keeps writes to merge
					tcp(b, pods["statestore"], port(pods["statestore"], "grpc")), // resume
					tcp(b, internet, 443), // webhooks
				)
				for _, r2 := range regions { // a pause is applied on every validation instance
					allow = append(allow, tcp(v, pods["validation-"+r2], port(pods["validation-"+r2], "grpc")))
				}
				deny = append(deny,
					tcp(b, pods["merge"], port(pods["merge"], "grpc")),
					tcp(v, b, port(b, "grpc")),
					tcp(b, v, port(v, "grpc")),
				)
			}
			allow = append(allow, tcp(pods["merge"], pods["statestore"], port(pods["statestore"], "grpc")),
				tcp(pods["statestore"], internet, 443)) // cold backups to object storage (S3 API)
			// Raft groups: each replica reaches the others' Raft port (and
			// gRPC, to hand calls to the leader); nothing else does.
			for _, g := range []string{"authn", "statestore"} {
				allow = append(allow, tcp(pods[g], pods[g], port(pods[g], "raft")), tcp(pods[g], pods[g], port(pods[g], "grpc")))
				deny = append(deny, tcp(pods["merge"], pods[g], port(pods[g], "raft")), tcp(stranger, pods[g], port(pods[g], "raft")))
			}
			deny = append(deny, tcp(pods["authn"], pods["statestore"], port(pods["statestore"], "raft")), tcp(pods["statestore"], pods["authn"], port(pods["authn"], "raft")))
			deny = append(deny,
				tcp(pods["authn"], pods["merge"], port(pods["merge"], "grpc")),
				tcp(pods["statestore"], pods["merge"], port(pods["merge"], "grpc")),
				tcp(pods["merge"], pods["authn"], port(pods["authn"], "http")),
				// Peers call each other over mutual TLS, never the plaintext health port.
				tcp(pods["merge"], pods["statestore"], port(pods["statestore"], "grpc-health")),
				tcp(pods["healthmonitor"], pods["merge"], port(pods["merge"], "grpc-health")),
			)
			if ov == "deploy/overlays/dev" { // the dev Kafka and Consul are under this namespace's policies
				deny = append(deny, tcp(stranger, kafka, 9092), tcp(stranger, consul, 8500), tcp(consul, kafka, 9092))
			}
			for _, f := range allow {
				if !allowed(objs, f.src, f.dst, f.port, f.proto) {
					t.Errorf("denied, but the architecture needs it: %s -> %s:%d/%s", f.src.name, f.dst.name, f.port, f.proto)
				}
			}
			for _, f := range deny {
				if allowed(objs, f.src, f.dst, f.port, f.proto) {
					t.Errorf("allowed, but outside the architecture: %s -> %s:%d/%s", f.src.name, f.dst.name, f.port, f.proto)
				}
			}
			t.Logf("%d required flows allowed, %d others denied", len(allow), len(deny))
		})
	}
}

// TestNetworkPolicyEvaluator checks the evaluator itself on a hand-made policy.
func TestNetworkPolicyEvaluator(t *testing.T) {
	objs, err := decodeStream(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: fedsync}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-to-b, namespace: fedsync}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]
  egress:
    - to: [{podSelector: {matchLabels: {app: b}}}]
      ports: [{port: http}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: fedsync}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: a}}}]
      ports: [{port: 8080}]
`)
	if err != nil {
		t.Fatal(err)
	}
	a := endpoint{name: "a", namespace: "fedsync", labels: map[string]string{"app": "a"}, ports: map[string]int32{}}
	b := endpoint{name: "b", namespace: "fedsync", labels: map[string]string{"app": "b"}, ports: map[string]int32{"http": 8080}}
	c := endpoint{name: "c", namespace: "other", labels: map[string]string{"app": "a"}}
	for _, tc := range []struct {
		src, dst endpoint
		port     int32
		want     bool
	}{
		{a, b, 8080, true},
		{a, b, 9090, false},
		{b, a, 8080, false},
		{c, b, 8080, false}, // same labels, other namespace
	} {
		if got := allowed(objs, tc.src, tc.dst, tc.port, corev1.ProtocolTCP); got != tc.want {
			t.Errorf("%s -> %s:%d: allowed=%v, want %v", tc.src.name, tc.dst.name, tc.port, got, tc.want)
		}
	}
}
