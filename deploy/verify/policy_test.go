package verify

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// services are fedsync's six services; regional ones run once per region.
var services = []string{"authn", "validation", "merge", "statestore", "broadcaster", "healthmonitor"}

var regionalServices = map[string]bool{"validation": true, "broadcaster": true}

// namespace is where every fedsync object lives.
const namespace = "fedsync"

// externalRefs are the ConfigMaps and Secrets an overlay uses but does not render:
// created by the Tiltfile (dev) or by the operator before the first apply (prod,
// deploy/README.md). Anything else a workload or Ingress references must render.
var externalRefs = map[string]map[string]bool{
	"deploy/overlays/dev": {
		"ConfigMap/fedsync-datatypes": true, // Tiltfile, from config/datatypes.yaml
		// Tiltfile, from `fedctl tls issue .fedsync/dev/tls ...`: mutual TLS.
		"Secret/fedsync-tls-authn":         true,
		"Secret/fedsync-tls-validation":    true,
		"Secret/fedsync-tls-merge":         true,
		"Secret/fedsync-tls-statestore":    true,
		"Secret/fedsync-tls-broadcaster":   true,
		"Secret/fedsync-tls-healthmonitor": true,
	},
	"deploy/overlays/prod": {
		"ConfigMap/fedsync-datatypes": true,
		"Secret/authn-clients":        true,
		"Secret/authn-signing-key":    true,
		// fedctl keys new: the AES-256-GCM keys that seal data at rest.
		"Secret/fedsync-at-rest-authn":      true,
		"Secret/fedsync-at-rest-statestore": true,
		"Secret/fedsync-na-tls":             true,
		"Secret/fedsync-eu-tls":             true,
		"Secret/fedsync-grpc-na-tls":        true,
		"Secret/fedsync-grpc-eu-tls":        true,
		// cert-manager Certificates or `fedctl tls issue`: mutual TLS.
		"Secret/fedsync-tls-authn":         true,
		"Secret/fedsync-tls-validation":    true,
		"Secret/fedsync-tls-merge":         true,
		"Secret/fedsync-tls-statestore":    true,
		"Secret/fedsync-tls-broadcaster":   true,
		"Secret/fedsync-tls-healthmonitor": true,
	},
}

// statefulServices keep their durable state in their own data dir, so they run as
// a StatefulSet on PersistentVolumeClaims; the value is why, for the violation
// messages.
var statefulServices = map[string]string{
	"authn":      "its data dir holds its copy of the replicated client registry, signing keys and revocations, and its Raft log",
	"statestore": "its data dir holds its copy of the replicated documents and its Raft log",
}

// raftGroups are the services whose replicas form a Raft group: their gRPC
// port (a replica's ID) and Raft port.
var raftGroups = map[string][2]int{"authn": {19101, 19501}, "statestore": {19104, 19504}}

// workload is a Deployment or StatefulSet, reduced to what the policies look at.
type workload struct {
	Kind, Name, Namespace string
	Replicas              *int32
	Selector              *metav1.LabelSelector
	Template              *corev1.PodTemplateSpec
	Claims                []string // volumeClaimTemplates names
}

func (w workload) id() string { return w.Kind + "/" + w.Name }

func workloadsOf(objs []object) []workload {
	var out []workload
	for _, o := range objs {
		switch x := o.Obj.(type) {
		case *appsv1.Deployment:
			out = append(out, workload{"Deployment", x.Name, x.Namespace, x.Spec.Replicas, x.Spec.Selector, &x.Spec.Template, nil})
		case *appsv1.StatefulSet:
			var claims []string
			for _, c := range x.Spec.VolumeClaimTemplates {
				claims = append(claims, c.Name)
			}
			out = append(out, workload{"StatefulSet", x.Name, x.Namespace, x.Spec.Replicas, x.Spec.Selector, &x.Spec.Template, claims})
		case *appsv1.DaemonSet, *appsv1.ReplicaSet:
			panic(fmt.Sprintf("%s: policy checks do not cover this kind yet", o.id()))
		}
	}
	return out
}

func objectsOf[T runtime.Object](objs []object) []T {
	var out []T
	for _, o := range objs {
		if x, ok := o.Obj.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

// serviceOf returns the fedsync service a container runs ("" for third-party
// images): the image is fedsync/<service>[:tag].
func serviceOf(image string) string {
	repo := imageRepo(image)
	if name, ok := strings.CutPrefix(repo, "fedsync/"); ok {
		return name
	}
	if i := strings.Index(repo, "/fedsync/"); i >= 0 { // <registry>/fedsync/<service>
		return repo[i+len("/fedsync/"):]
	}
	return ""
}

// imageRepo strips the tag and digest from an image reference.
func imageRepo(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

func imageTag(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		return image[i:]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[i+1:]
	}
	return ""
}

var pinnedTag = regexp.MustCompile(`^(v?\d+\.\d+(\.\d+)?([-.][0-9A-Za-z.-]+)?|@sha256:[0-9a-f]{64})$`)

// --- checks: each returns the violations it found, one line each ---

// checkContainers: every container has a readiness and a liveness probe that are
// different checks, CPU and memory requests and limits, and a restricted security
// context (non-root, read-only root filesystem, no privilege escalation, all
// capabilities dropped, RuntimeDefault seccomp).
func checkContainers(objs []object) []string {
	var v []string
	for _, w := range workloadsOf(objs) {
		pod := w.Template.Spec
		psc := pod.SecurityContext
		if psc == nil {
			psc = &corev1.PodSecurityContext{}
		}
		if pod.HostNetwork || pod.HostPID || pod.HostIPC {
			v = append(v, w.id()+": uses the host's network, PID or IPC namespace")
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			v = append(v, w.id()+": automountServiceAccountToken is not false (nothing here calls the Kubernetes API)")
		}
		all := append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...)
		for _, c := range all {
			id := w.id() + " container " + c.Name
			if c.ReadinessProbe == nil {
				v = append(v, id+": no readinessProbe")
			}
			if c.LivenessProbe == nil {
				v = append(v, id+": no livenessProbe")
			}
			if c.ReadinessProbe != nil && c.LivenessProbe != nil && reflect.DeepEqual(c.ReadinessProbe.ProbeHandler, c.LivenessProbe.ProbeHandler) {
				v = append(v, id+": readiness and liveness probes are the same check")
			}
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, hasReq := c.Resources.Requests[r]
				lim, hasLim := c.Resources.Limits[r]
				if !hasReq || req.IsZero() {
					v = append(v, fmt.Sprintf("%s: no %s request", id, r))
				}
				if !hasLim || lim.IsZero() {
					v = append(v, fmt.Sprintf("%s: no %s limit", id, r))
				}
				if hasReq && hasLim && req.Cmp(lim) > 0 {
					v = append(v, fmt.Sprintf("%s: %s request %s above its limit %s", id, r, req.String(), lim.String()))
				}
			}
			sc := c.SecurityContext
			if sc == nil {
				sc = &corev1.SecurityContext{}
			}
			nonRoot := sc.RunAsNonRoot
			if nonRoot == nil {
				nonRoot = psc.RunAsNonRoot
			}
			uid := sc.RunAsUser
			if uid == nil {
				uid = psc.RunAsUser
			}
			switch {
			case nonRoot == nil || !*nonRoot:
				v = append(v, id+": runAsNonRoot is not true")
			case uid != nil && *uid == 0:
				v = append(v, id+": runs as uid 0")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				v = append(v, id+": allowPrivilegeEscalation is not false")
			}
			if sc.Privileged != nil && *sc.Privileged {
				v = append(v, id+": privileged")
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				v = append(v, id+": readOnlyRootFilesystem is not true")
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				v = append(v, id+": capabilities do not drop ALL")
			} else if len(sc.Capabilities.Add) > 0 {
				v = append(v, fmt.Sprintf("%s: adds capabilities %v", id, sc.Capabilities.Add))
			}
			seccomp := sc.SeccompProfile
			if seccomp == nil {
				seccomp = psc.SeccompProfile
			}
			if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
				v = append(v, id+": seccompProfile is not RuntimeDefault")
			}
		}
	}
	return v
}

// checkVolumes: every volume has exactly one source, and every mount names a
// volume (or a StatefulSet's claim template).
func checkVolumes(objs []object) []string {
	var v []string
	for _, w := range workloadsOf(objs) {
		names := map[string]bool{}
		for _, c := range w.Claims {
			names[c] = true
		}
		for _, vol := range w.Template.Spec.Volumes {
			names[vol.Name] = true
			n := 0
			rv := reflect.ValueOf(vol.VolumeSource)
			for i := 0; i < rv.NumField(); i++ {
				if !rv.Field(i).IsNil() {
					n++
				}
			}
			if n != 1 {
				v = append(v, fmt.Sprintf("%s volume %s: %d sources, want exactly 1", w.id(), vol.Name, n))
			}
		}
		for _, c := range w.Template.Spec.Containers {
			for _, m := range c.VolumeMounts {
				if !names[m.Name] {
					v = append(v, fmt.Sprintf("%s container %s: mount %s names no volume", w.id(), c.Name, m.Name))
				}
			}
		}
	}
	return v
}

// checkRefs: every ConfigMap and Secret a workload or Ingress references renders
// in the same overlay, unless it is optional or listed in external.
func checkRefs(objs []object, external map[string]bool) []string {
	have := map[string]bool{}
	for _, o := range objs {
		have[o.Kind+"/"+o.Name] = true
	}
	var v []string
	ref := func(from, kind, name string, optional *bool) {
		key := kind + "/" + name
		if have[key] || external[key] || (optional != nil && *optional) {
			return
		}
		v = append(v, fmt.Sprintf("%s references %s, which neither renders nor is a documented external object", from, key))
	}
	for _, w := range workloadsOf(objs) {
		for _, c := range w.Template.Spec.Containers {
			for _, e := range c.EnvFrom {
				if e.ConfigMapRef != nil {
					ref(w.id(), "ConfigMap", e.ConfigMapRef.Name, e.ConfigMapRef.Optional)
				}
				if e.SecretRef != nil {
					ref(w.id(), "Secret", e.SecretRef.Name, e.SecretRef.Optional)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
					ref(w.id(), "ConfigMap", r.Name, r.Optional)
				}
				if r := e.ValueFrom.SecretKeyRef; r != nil {
					ref(w.id(), "Secret", r.Name, r.Optional)
				}
			}
		}
		for _, vol := range w.Template.Spec.Volumes {
			if vol.ConfigMap != nil {
				ref(w.id(), "ConfigMap", vol.ConfigMap.Name, vol.ConfigMap.Optional)
			}
			if vol.Secret != nil {
				ref(w.id(), "Secret", vol.Secret.SecretName, vol.Secret.Optional)
			}
		}
		if sa := w.Template.Spec.ServiceAccountName; sa != "" {
			ref(w.id(), "ServiceAccount", sa, nil)
		}
	}
	for _, ing := range objectsOf[*networkingv1.Ingress](objs) {
		for _, tls := range ing.Spec.TLS {
			ref("Ingress/"+ing.Name, "Secret", tls.SecretName, nil)
		}
	}
	return v
}

// checkPDBs: every Deployment and StatefulSet has a PodDisruptionBudget whose
// selector matches its pods and no other workload's pods.
func checkPDBs(objs []object) []string {
	pdbs := objectsOf[*policyv1.PodDisruptionBudget](objs)
	wls := workloadsOf(objs)
	var v []string
	for _, w := range wls {
		covered := false
		for _, p := range pdbs {
			if p.Namespace != w.Namespace || !selects(p.Spec.Selector, w.Template.Labels) {
				continue
			}
			covered = true
			for _, other := range wls {
				if other.id() != w.id() && other.Namespace == p.Namespace && selects(p.Spec.Selector, other.Template.Labels) {
					v = append(v, fmt.Sprintf("PodDisruptionBudget/%s selects the pods of both %s and %s", p.Name, w.id(), other.id()))
				}
			}
			if p.Spec.MinAvailable != nil && w.Replicas != nil && p.Spec.MinAvailable.IntValue() >= int(*w.Replicas) {
				v = append(v, fmt.Sprintf("PodDisruptionBudget/%s: minAvailable %s blocks every eviction of %s (%d replicas)", p.Name, p.Spec.MinAvailable.String(), w.id(), *w.Replicas))
			}
		}
		if !covered {
			v = append(v, w.id()+": no PodDisruptionBudget selects its pods")
		}
	}
	for _, p := range pdbs {
		n := 0
		for _, w := range wls {
			if p.Namespace == w.Namespace && selects(p.Spec.Selector, w.Template.Labels) {
				n++
			}
		}
		if n == 0 {
			v = append(v, "PodDisruptionBudget/"+p.Name+": selects no workload's pods")
		}
	}
	return v
}

// checkServices: every Service selects the pods of a workload in its namespace,
// and its target ports are ports of those pods.
func checkServices(objs []object) []string {
	var v []string
	for _, s := range objectsOf[*corev1.Service](objs) {
		if len(s.Spec.Selector) == 0 {
			v = append(v, "Service/"+s.Name+": no selector")
			continue
		}
		var matched []workload
		for _, w := range workloadsOf(objs) {
			if w.Namespace == s.Namespace && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.Template.Labels)) {
				matched = append(matched, w)
			}
		}
		if len(matched) == 0 {
			v = append(v, fmt.Sprintf("Service/%s: selector %v matches no workload's pods", s.Name, s.Spec.Selector))
			continue
		}
		for _, p := range s.Spec.Ports {
			for _, w := range matched {
				if !hasPort(w.Template.Spec, p.TargetPort.String()) {
					v = append(v, fmt.Sprintf("Service/%s port %s: target port %s is not a port of %s", s.Name, p.Name, p.TargetPort.String(), w.id()))
				}
			}
		}
	}
	return v
}

func hasPort(pod corev1.PodSpec, port string) bool {
	for _, c := range pod.Containers {
		for _, p := range c.Ports {
			if p.Name == port || fmt.Sprint(p.ContainerPort) == port {
				return true
			}
		}
	}
	return false
}

// checkIngressBackends: every Ingress backend is a rendered Service and port.
func checkIngressBackends(objs []object) []string {
	svcs := map[string]*corev1.Service{}
	for _, s := range objectsOf[*corev1.Service](objs) {
		svcs[s.Name] = s
	}
	var v []string
	for _, ing := range objectsOf[*networkingv1.Ingress](objs) {
		for _, r := range ing.Spec.Rules {
			if r.HTTP == nil {
				continue
			}
			for _, p := range r.HTTP.Paths {
				b := p.Backend.Service
				if b == nil {
					v = append(v, fmt.Sprintf("Ingress/%s %s: no service backend", ing.Name, p.Path))
					continue
				}
				s, ok := svcs[b.Name]
				if !ok {
					v = append(v, fmt.Sprintf("Ingress/%s %s: backend Service %s does not render", ing.Name, p.Path, b.Name))
					continue
				}
				found := false
				for _, sp := range s.Spec.Ports {
					if (b.Port.Name != "" && sp.Name == b.Port.Name) || (b.Port.Number != 0 && sp.Port == b.Port.Number) {
						found = true
					}
				}
				if !found {
					v = append(v, fmt.Sprintf("Ingress/%s %s: Service %s has no port %s%d", ing.Name, p.Path, b.Name, b.Port.Name, b.Port.Number))
				}
			}
		}
	}
	return v
}

// checkNamespaces: the fedsync Namespace renders and every namespaced object is in it.
func checkNamespaces(objs []object) []string {
	var v []string
	hasNS := false
	for _, o := range objs {
		if o.Kind == "Namespace" {
			hasNS = hasNS || o.Name == namespace
			continue
		}
		if o.Namespace != namespace {
			v = append(v, fmt.Sprintf("%s is in namespace %q, not %q", o.id(), o.Namespace, namespace))
		}
	}
	if !hasNS {
		v = append(v, "the Namespace "+namespace+" does not render")
	}
	return v
}

// checkImages: every image is one the Tiltfile builds (fedsync/<service>, tagged
// with a version when tagged) or a third-party image pinned to a version or digest.
func checkImages(objs []object, built map[string]bool) []string {
	var v []string
	for _, w := range workloadsOf(objs) {
		for _, c := range append(append([]corev1.Container{}, w.Template.Spec.InitContainers...), w.Template.Spec.Containers...) {
			id := w.id() + " container " + c.Name
			tag := imageTag(c.Image)
			if svc := serviceOf(c.Image); svc != "" {
				if !built["fedsync/"+svc] {
					v = append(v, fmt.Sprintf("%s: image %s is not built by the Tiltfile", id, c.Image))
				}
				if tag != "" && !pinnedTag.MatchString(tag) {
					v = append(v, fmt.Sprintf("%s: image %s has tag %q, not a version", id, c.Image, tag))
				}
				continue
			}
			if !pinnedTag.MatchString(tag) {
				v = append(v, fmt.Sprintf("%s: third-party image %s is not pinned to a version", id, c.Image))
			}
		}
	}
	return v
}

// env resolves a container's environment as the kubelet would: envFrom ConfigMaps
// in order, then env (dependent $(VAR) references expanded from earlier entries).
// Unresolvable values (field refs, Secrets) are kept as "<ref>".
func env(objs []object, c corev1.Container) (map[string]string, []string) {
	cms := map[string]*corev1.ConfigMap{}
	for _, cm := range objectsOf[*corev1.ConfigMap](objs) {
		cms[cm.Name] = cm
	}
	out := map[string]string{}
	var problems []string
	for _, e := range c.EnvFrom {
		if e.ConfigMapRef != nil {
			if cm := cms[e.ConfigMapRef.Name]; cm != nil {
				for k, val := range cm.Data {
					out[k] = val
				}
			}
		}
	}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	defined := map[string]bool{}
	for k := range out {
		defined[k] = true
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			out[e.Name] = "<ref>"
			defined[e.Name] = true
			continue
		}
		for _, m := range ref.FindAllStringSubmatch(e.Value, -1) {
			if !defined[m[1]] {
				problems = append(problems, fmt.Sprintf("env %s uses $(%s), which is not defined before it", e.Name, m[1]))
			}
		}
		out[e.Name] = e.Value
		defined[e.Name] = true
	}
	return out, problems
}

func containerPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// mountFor returns the volume mount that holds path, if any.
func mountFor(c corev1.Container, path string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if path == m.MountPath || strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			if best == nil || len(m.MountPath) > len(best.MountPath) {
				best = &c.VolumeMounts[i]
			}
		}
	}
	return best
}

// checkFedsyncWiring: each fedsync container's flags (FEDSYNC_* variables) agree
// with its pod: it listens on its declared ports, advertises its pod IP, names
// itself after its pod, probes the right ports, and finds its files on volumes.
func checkFedsyncWiring(objs []object) []string {
	var v []string
	seen := map[string]bool{}
	for _, w := range workloadsOf(objs) {
		for _, c := range w.Template.Spec.Containers {
			svc := serviceOf(c.Image)
			if svc == "" {
				continue
			}
			seen[svc] = true
			id := w.id() + " container " + c.Name
			if len(c.Command) > 0 || len(c.Args) > 0 {
				v = append(v, id+": sets command or args; the image's entrypoint must run (dev and release images differ)")
			}
			e, problems := env(objs, c)
			for _, p := range problems {
				v = append(v, id+": "+p)
			}
			grpc, http, health := containerPort(c, "grpc"), containerPort(c, "http"), containerPort(c, "grpc-health")
			if grpc == 0 || http == 0 || health == 0 {
				v = append(v, id+": needs container ports named grpc, http and grpc-health")
				continue
			}
			if health == grpc || health == http {
				v = append(v, fmt.Sprintf("%s: grpc-health (%d) must be a port of its own: the gRPC port requires client certificates", id, health))
			}
			want := map[string]string{
				"FEDSYNC_GRPC_ADDR":      fmt.Sprintf("0.0.0.0:%d", grpc),
				"FEDSYNC_HTTP_ADDR":      fmt.Sprintf("0.0.0.0:%d", http),
				"FEDSYNC_HEALTH_ADDR":    fmt.Sprintf("0.0.0.0:%d", health),
				"FEDSYNC_ADVERTISE_ADDR": fmt.Sprintf("$(POD_IP):%d", grpc),
				"FEDSYNC_INSTANCE":       "$(POD_NAME)",
				"FEDSYNC_DISCOVERY":      "consul",
			}
			for k, val := range want {
				if e[k] != val {
					v = append(v, fmt.Sprintf("%s: %s=%q, want %q", id, k, e[k], val))
				}
			}
			if svc != "authn" && e["FEDSYNC_KAFKA_BROKERS"] == "" {
				v = append(v, id+": FEDSYNC_KAFKA_BROKERS is not set")
			}
			if e["FEDSYNC_CONSUL_ADDR"] == "" {
				v = append(v, id+": FEDSYNC_CONSUL_ADDR is not set")
			}
			if regionalServices[svc] {
				if r := w.Template.Labels["fedsync.io/region"]; r == "" || e["FEDSYNC_REGION"] != r || w.Name != svc+"-"+r {
					v = append(v, fmt.Sprintf("%s: regional hub with region label %q, FEDSYNC_REGION %q", id, r, e["FEDSYNC_REGION"]))
				}
			}
			// The kubelet cannot present a client certificate to the mutual-TLS gRPC
			// port: readiness asks the plaintext health port.
			if p := c.ReadinessProbe; p == nil || p.GRPC == nil || p.GRPC.Port != health {
				v = append(v, fmt.Sprintf("%s: readiness must be the gRPC health check (grpc.health.v1) on the health port %d (grpc-health), not the mutual-TLS port %d", id, health, grpc))
			}
			if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || (p.HTTPGet.Port.String() != "http" && p.HTTPGet.Port.IntValue() != int(http)) {
				v = append(v, id+": liveness must be GET /healthz on the http port")
			}
			dataDir := e["FEDSYNC_DATA_DIR"]
			m := mountFor(c, dataDir)
			if dataDir == "" || m == nil {
				v = append(v, fmt.Sprintf("%s: data dir %q is not on a volume (the root filesystem is read-only)", id, dataDir))
			}
			files := map[string]string{}
			switch svc {
			case "authn":
				files["FEDSYNC_CLIENTS_FILE"] = e["FEDSYNC_CLIENTS_FILE"]
			case "validation", "merge":
				files["FEDSYNC_DATATYPES"] = e["FEDSYNC_DATATYPES"]
			}
			for k, path := range files {
				if path == "" || mountFor(c, path) == nil {
					v = append(v, fmt.Sprintf("%s: %s=%q is not on a volume", id, k, path))
				}
			}
			// Their data dir is their durable state (statestore's documents, authn's
			// client registry, signing keys and revocations): it must outlive the pod.
			if statefulServices[svc] != "" && (w.Kind != "StatefulSet" || m == nil || m.ReadOnly || !slices.Contains(w.Claims, m.Name)) {
				v = append(v, fmt.Sprintf("%s: %s must keep its data dir on a writable PersistentVolumeClaim of a StatefulSet (%s)", id, svc, statefulServices[svc]))
			}
		}
	}
	for _, s := range services {
		if !seen[s] {
			v = append(v, "no workload runs "+s)
		}
	}
	return v
}

// checkStatefulSets: each StatefulSet's governing Service renders and is headless.
func checkStatefulSets(objs []object) []string {
	svcs := map[string]*corev1.Service{}
	for _, s := range objectsOf[*corev1.Service](objs) {
		svcs[s.Name] = s
	}
	var v []string
	for _, ss := range objectsOf[*appsv1.StatefulSet](objs) {
		s := svcs[ss.Spec.ServiceName]
		switch {
		case s == nil:
			v = append(v, fmt.Sprintf("StatefulSet/%s: governing Service %q does not render", ss.Name, ss.Spec.ServiceName))
		case s.Spec.ClusterIP != corev1.ClusterIPNone:
			v = append(v, fmt.Sprintf("StatefulSet/%s: governing Service %s is not headless", ss.Name, s.Name))
		}
	}
	return v
}

func selects(sel *metav1.LabelSelector, podLabels map[string]string) bool {
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return !s.Empty() && s.Matches(labels.Set(podLabels))
}

// checkRaftGroup: statestore and authn are Raft groups. An odd number of
// voters, at least three; FEDSYNC_RAFT_PEERS naming exactly the
// StatefulSet's pods by their stable DNS names; a disruption budget that
// keeps a majority.
func checkRaftGroup(objs []object, w workload, svc string) []string {
	ports := raftGroups[svc]
	var v []string
	n := int32(0)
	if w.Replicas != nil {
		n = *w.Replicas
	}
	if n < 3 || n%2 == 0 {
		v = append(v, fmt.Sprintf("%s: a Raft group needs an odd number of replicas, at least 3 (it has %d)", w.id(), n))
	}
	var ss *appsv1.StatefulSet
	for _, x := range objectsOf[*appsv1.StatefulSet](objs) {
		if x.Name == w.Name {
			ss = x
		}
	}
	if ss == nil {
		return append(v, w.id()+": "+svc+" must be a StatefulSet (stable names for its Raft IDs)")
	}
	var want []string
	for i := int32(0); i < n; i++ {
		host := fmt.Sprintf("%s-%d.%s", ss.Name, i, ss.Spec.ServiceName)
		want = append(want, fmt.Sprintf("%s:%d=%s:%d", host, ports[0], host, ports[1]))
	}
	peers := ""
	for _, e := range ss.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "FEDSYNC_RAFT_PEERS" {
			peers = e.Value
		}
	}
	if peers != strings.Join(want, ",") {
		v = append(v, fmt.Sprintf("%s: FEDSYNC_RAFT_PEERS is %q; with %d replicas it must name each pod: %q", w.id(), peers, n, strings.Join(want, ",")))
	}
	majority := n/2 + 1
	for _, pdb := range objectsOf[*policyv1.PodDisruptionBudget](objs) {
		if pdb.Spec.Selector == nil || pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != svc {
			continue
		}
		if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < int(majority) {
			v = append(v, fmt.Sprintf("PodDisruptionBudget/%s: must keep a majority (minAvailable %d) of the %s's Raft group", pdb.Name, majority, svc))
		}
	}
	return v
}

// checkProd: what production adds. Replicas, autoscaled hubs, spreading across
// zones, Kafka replication, TLS on every Ingress.
func checkProd(objs []object) []string {
	var v []string
	hpas := map[string]*autoscalingv2.HorizontalPodAutoscaler{}
	for _, h := range objectsOf[*autoscalingv2.HorizontalPodAutoscaler](objs) {
		hpas[h.Spec.ScaleTargetRef.Kind+"/"+h.Spec.ScaleTargetRef.Name] = h
	}
	wls := workloadsOf(objs)
	byID := map[string]workload{}
	for _, w := range wls {
		byID[w.id()] = w
	}
	for id := range hpas {
		if _, ok := byID[id]; !ok {
			v = append(v, "HorizontalPodAutoscaler targets "+id+", which does not render")
		}
	}
	for _, w := range wls {
		svc := ""
		for _, c := range w.Template.Spec.Containers {
			if s := serviceOf(c.Image); s != "" {
				svc = s
			}
		}
		if svc == "" {
			continue
		}
		h := hpas[w.id()]
		switch {
		case regionalServices[svc]:
			if h == nil || h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 {
				v = append(v, w.id()+": a regional hub needs a HorizontalPodAutoscaler with minReplicas >= 2")
			}
			if w.Replicas != nil {
				v = append(v, w.id()+": sets replicas although a HorizontalPodAutoscaler owns them (every apply would reset them)")
			}
		case raftGroups[svc] != [2]int{}:
			v = append(v, checkRaftGroup(objs, w, svc)...)
		default:
			if w.Replicas == nil || *w.Replicas < 2 {
				v = append(v, w.id()+": fewer than 2 replicas in prod")
			}
		}
		zones := false
		for _, tsc := range w.Template.Spec.TopologySpreadConstraints {
			if tsc.TopologyKey != "topology.kubernetes.io/zone" {
				continue
			}
			zones = true
			sel := tsc.LabelSelector.DeepCopy()
			if sel == nil {
				v = append(v, w.id()+": zone spread without a labelSelector spreads nothing")
				continue
			}
			// matchLabelKeys narrow the selector with the pod's own values.
			for _, k := range tsc.MatchLabelKeys {
				if val, ok := w.Template.Labels[k]; ok {
					if sel.MatchLabels == nil {
						sel.MatchLabels = map[string]string{}
					}
					sel.MatchLabels[k] = val
				}
			}
			if !selects(sel, w.Template.Labels) {
				v = append(v, w.id()+": zone spread selector does not select its own pods")
			}
			for _, other := range wls {
				if other.id() != w.id() && selects(sel, other.Template.Labels) {
					v = append(v, fmt.Sprintf("%s: zone spread selector also counts the pods of %s", w.id(), other.id()))
				}
			}
		}
		if !zones {
			v = append(v, w.id()+": no topology spread across zones")
		}
		for _, c := range w.Template.Spec.Containers {
			if serviceOf(c.Image) == "" {
				continue
			}
			e, _ := env(objs, c)
			if svc != "authn" && e["FEDSYNC_KAFKA_REPLICATION"] != "3" {
				v = append(v, fmt.Sprintf("%s: FEDSYNC_KAFKA_REPLICATION=%q, want 3", w.id(), e["FEDSYNC_KAFKA_REPLICATION"]))
			}
			if imageTag(c.Image) == "" {
				v = append(v, w.id()+": untagged image "+c.Image+" in prod")
			}
		}
	}
	for _, ing := range objectsOf[*networkingv1.Ingress](objs) {
		hosts := map[string]bool{}
		for _, t := range ing.Spec.TLS {
			for _, h := range t.Hosts {
				hosts[h] = true
			}
		}
		for _, r := range ing.Spec.Rules {
			if !hosts[r.Host] {
				v = append(v, fmt.Sprintf("Ingress/%s: host %q has no TLS", ing.Name, r.Host))
			}
		}
	}
	return v
}

// builtImages are the images the Tiltfile builds (docker_build refs).
func builtImages(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, b := range evalTiltfile(t).dockerBuilds {
		out[b.ref] = true
	}
	return out
}

func report(t *testing.T, what string, violations []string) {
	t.Helper()
	for _, v := range violations {
		t.Errorf("%s: %s", what, v)
	}
}

// TestPolicies applies every policy to every overlay.
func TestPolicies(t *testing.T) {
	built := builtImages(t)
	for _, ov := range overlays {
		t.Run(ov[strings.LastIndex(ov, "/")+1:], func(t *testing.T) {
			objs := render(t, ov)
			report(t, "containers", checkContainers(objs))
			report(t, "volumes", checkVolumes(objs))
			report(t, "references", checkRefs(objs, externalRefs[ov]))
			report(t, "disruption budgets", checkPDBs(objs))
			report(t, "services", checkServices(objs))
			report(t, "ingress backends", checkIngressBackends(objs))
			report(t, "namespaces", checkNamespaces(objs))
			report(t, "images", checkImages(objs, built))
			report(t, "fedsync wiring", checkFedsyncWiring(objs))
			report(t, "mutual TLS", checkMutualTLS(objs))
			report(t, "statefulsets", checkStatefulSets(objs))
			if strings.HasSuffix(ov, "/prod") {
				report(t, "prod", checkProd(objs))
			}
		})
	}
}

// TestSigningKey: authn's data dir (authn.db) is a writable PersistentVolumeClaim
// of its StatefulSet, and in prod its first start imports the signing key of the
// authn-signing-key Secret, mounted as <data-dir>/signing-key.json; in dev authn
// creates its own key.
func TestSigningKey(t *testing.T) {
	for ov, wantSecret := range map[string]bool{"deploy/overlays/prod": true, "deploy/overlays/dev": false} {
		objs := render(t, ov)
		d := find[*appsv1.StatefulSet](t, objs, "authn")
		c := d.Spec.Template.Spec.Containers[0]
		e, _ := env(objs, c)
		dataDir := e["FEDSYNC_DATA_DIR"]
		vols := map[string]corev1.Volume{}
		for _, vol := range d.Spec.Template.Spec.Volumes {
			vols[vol.Name] = vol
		}
		claims := map[string]bool{}
		for _, pvc := range d.Spec.VolumeClaimTemplates {
			claims[pvc.Name] = true
		}
		if m := mountFor(c, dataDir); m == nil || m.ReadOnly || !claims[m.Name] {
			t.Errorf("%s: authn's data dir %s must be a writable PersistentVolumeClaim of its StatefulSet, got mount %+v", ov, dataDir, m)
		} else if _, shadowed := vols[m.Name]; shadowed {
			t.Errorf("%s: authn's data dir mount %s names a pod volume, not the claim template", ov, m.Name)
		}
		m := mountFor(c, dataDir+"/signing-key.json")
		fromSecret := m != nil && m.MountPath == dataDir+"/signing-key.json" && m.SubPath == "signing-key.json" &&
			vols[m.Name].Secret != nil && vols[m.Name].Secret.SecretName == "authn-signing-key"
		if fromSecret != wantSecret {
			t.Errorf("%s: signing-key.json from Secret authn-signing-key: %v, want %v", ov, fromSecret, wantSecret)
		}
	}
}

// TestExternalObjectsDocumented: every object an overlay expects to exist already
// is named in deploy/README.md, where the operator learns to create it.
func TestExternalObjectsDocumented(t *testing.T) {
	readme := readFile(t, "deploy/README.md")
	for ov, refs := range externalRefs {
		for ref := range refs {
			name := ref[strings.Index(ref, "/")+1:]
			if !strings.Contains(readme, name) {
				t.Errorf("%s expects %s to exist, but deploy/README.md does not mention %s", ov, ref, name)
			}
		}
	}
}

// TestPoliciesCatchViolations breaks a rendered dev overlay in memory, one way at a
// time, and requires the matching check to report it.
func TestPoliciesCatchViolations(t *testing.T) {
	built := builtImages(t)
	cases := []struct {
		name   string
		check  func([]object) []string
		break_ func(t *testing.T, objs []object)
		want   string
	}{
		{"no readiness probe", checkContainers, func(t *testing.T, objs []object) {
			deployment(t, objs, "merge").Spec.Template.Spec.Containers[0].ReadinessProbe = nil
		}, "no readinessProbe"},
		{"liveness same as readiness", checkContainers, func(t *testing.T, objs []object) {
			c := &deployment(t, objs, "merge").Spec.Template.Spec.Containers[0]
			c.LivenessProbe = c.ReadinessProbe.DeepCopy()
		}, "same check"},
		{"no memory limit", checkContainers, func(t *testing.T, objs []object) {
			delete(statefulSet(t, objs, "authn").Spec.Template.Spec.Containers[0].Resources.Limits, corev1.ResourceMemory)
		}, "no memory limit"},
		{"request above limit", checkContainers, func(t *testing.T, objs []object) {
			statefulSet(t, objs, "authn").Spec.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("8")
		}, "above its limit"},
		{"writable root filesystem", checkContainers, func(t *testing.T, objs []object) {
			deployment(t, objs, "consul").Spec.Template.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem = new(false)
		}, "readOnlyRootFilesystem"},
		{"root user", checkContainers, func(t *testing.T, objs []object) {
			deployment(t, objs, "validation-na").Spec.Template.Spec.Containers[0].SecurityContext.RunAsUser = new(int64(0))
		}, "uid 0"},
		{"privilege escalation", checkContainers, func(t *testing.T, objs []object) {
			deployment(t, objs, "healthmonitor").Spec.Template.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil
		}, "allowPrivilegeEscalation"},
		{"capabilities kept", checkContainers, func(t *testing.T, objs []object) {
			deployment(t, objs, "broadcaster-eu").Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Drop = []corev1.Capability{"NET_RAW"}
		}, "drop ALL"},
		{"PDB selector typo", checkPDBs, func(t *testing.T, objs []object) {
			pdb := find[*policyv1.PodDisruptionBudget](t, objs, "statestore")
			pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"] = "statestor"
		}, "StatefulSet/statestore: no PodDisruptionBudget"},
		{"PDB over two workloads", checkPDBs, func(t *testing.T, objs []object) {
			pdb := find[*policyv1.PodDisruptionBudget](t, objs, "validation-na")
			delete(pdb.Spec.Selector.MatchLabels, "fedsync.io/region")
		}, "selects the pods of both"},
		{"Service selector typo", checkServices, func(t *testing.T, objs []object) {
			find[*corev1.Service](t, objs, "merge").Spec.Selector["app.kubernetes.io/name"] = "merg"
		}, "matches no workload"},
		{"Service target port", checkServices, func(t *testing.T, objs []object) {
			find[*corev1.Service](t, objs, "authn").Spec.Ports[0].TargetPort.StrVal = "grcp"
		}, "is not a port"},
		{"unpinned third-party image", func(o []object) []string { return checkImages(o, built) }, func(t *testing.T, objs []object) {
			deployment(t, objs, "consul").Spec.Template.Spec.Containers[0].Image = "hashicorp/consul:latest"
		}, "not pinned"},
		{"image Tilt does not build", func(o []object) []string { return checkImages(o, built) }, func(t *testing.T, objs []object) {
			deployment(t, objs, "merge").Spec.Template.Spec.Containers[0].Image = "fedsync/merger"
		}, "not built by the Tiltfile"},
		{"missing ConfigMap", func(o []object) []string { return checkRefs(o, externalRefs["deploy/overlays/dev"]) }, func(t *testing.T, objs []object) {
			for i := range objs {
				if objs[i].Kind == "ConfigMap" && strings.HasPrefix(objs[i].Name, "merge-config-") {
					objs[i].Name = "renamed"
				}
			}
		}, "ConfigMap/merge-config-"},
		{"grpc address off the grpc port", checkFedsyncWiring, func(t *testing.T, objs []object) {
			setEnv(deployment(t, objs, "merge"), "FEDSYNC_GRPC_ADDR", "0.0.0.0:9999")
		}, "FEDSYNC_GRPC_ADDR"},
		{"data dir off the volumes", checkFedsyncWiring, func(t *testing.T, objs []object) {
			m := &deployment(t, objs, "healthmonitor").Spec.Template.Spec.Containers[0].VolumeMounts
			*m = slices.DeleteFunc(*m, func(x corev1.VolumeMount) bool { return x.Name == "data" })
		}, "data dir"},
		{"container without mutual TLS", checkMutualTLS, func(t *testing.T, objs []object) {
			delEnv(deployment(t, objs, "merge"), "FEDSYNC_TLS_CA", "FEDSYNC_TLS_CERT", "FEDSYNC_TLS_KEY")
		}, "Deployment/merge container merge: mutual TLS is off"},
		{"TLS key variable missing", checkMutualTLS, func(t *testing.T, objs []object) {
			delEnv(statefulSet(t, objs, "authn"), "FEDSYNC_TLS_KEY")
		}, "mutual TLS is off: FEDSYNC_TLS_KEY"},
		{"TLS file off the Secret volume", checkMutualTLS, func(t *testing.T, objs []object) {
			setEnv(deployment(t, objs, "healthmonitor"), "FEDSYNC_TLS_KEY", "/tmp/tls.key")
		}, "not on a Secret"},
		{"TLS file on no volume", checkMutualTLS, func(t *testing.T, objs []object) {
			setEnv(deployment(t, objs, "healthmonitor"), "FEDSYNC_TLS_CA", "/etc/ssl/ca.crt")
		}, "FEDSYNC_TLS_CA=\"/etc/ssl/ca.crt\" is not on a volume"},
		{"another service's certificate", checkMutualTLS, func(t *testing.T, objs []object) {
			volume(t, deployment(t, objs, "validation-na"), "tls").Secret.SecretName = "fedsync-tls-merge"
		}, "want fedsync-tls-validation"},
		{"TLS Secret mounted with subPath", checkMutualTLS, func(t *testing.T, objs []object) {
			mount(t, deployment(t, objs, "broadcaster-eu"), "tls").SubPath = "tls"
		}, "subPath"},
		{"TLS Secret writable", checkMutualTLS, func(t *testing.T, objs []object) {
			mount(t, deployment(t, objs, "merge"), "tls").ReadOnly = false
		}, "not read-only"},
		{"private key readable by all", checkMutualTLS, func(t *testing.T, objs []object) {
			volume(t, statefulSet(t, objs, "authn"), "tls").Secret.DefaultMode = new(int32(0o644))
		}, "readable by all"},
		{"TLS file under another key", checkMutualTLS, func(t *testing.T, objs []object) {
			setEnv(deployment(t, objs, "merge"), "FEDSYNC_TLS_CA", "/etc/fedsync/tls/ca.pem")
		}, `want "ca.crt"`},
		{"readiness on the mutual-TLS port", checkFedsyncWiring, func(t *testing.T, objs []object) {
			deployment(t, objs, "merge").Spec.Template.Spec.Containers[0].ReadinessProbe.GRPC.Port = 19103
		}, "readiness must be the gRPC health check"},
		{"health address off the health port", checkFedsyncWiring, func(t *testing.T, objs []object) {
			setEnv(statefulSet(t, objs, "authn"), "FEDSYNC_HEALTH_ADDR", "0.0.0.0:19999")
		}, "FEDSYNC_HEALTH_ADDR"},
		{"no health port", checkFedsyncWiring, func(t *testing.T, objs []object) {
			p := &deployment(t, objs, "healthmonitor").Spec.Template.Spec.Containers[0].Ports
			*p = slices.DeleteFunc(*p, func(x corev1.ContainerPort) bool { return x.Name == "grpc-health" })
		}, "grpc-health"},
		{"two volume sources", checkVolumes, func(t *testing.T, objs []object) {
			d := deployment(t, objs, "merge")
			for i := range d.Spec.Template.Spec.Volumes {
				if d.Spec.Template.Spec.Volumes[i].Name == "data" {
					d.Spec.Template.Spec.Volumes[i].Secret = &corev1.SecretVolumeSource{SecretName: "authn-signing-key"}
				}
			}
		}, "2 sources"},
		{"authn data dir back on an emptyDir", checkFedsyncWiring, func(t *testing.T, objs []object) {
			ss := statefulSet(t, objs, "authn")
			ss.Spec.VolumeClaimTemplates = nil
			ss.Spec.Template.Spec.Volumes = append(ss.Spec.Template.Spec.Volumes,
				corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}, "authn must keep its data dir on a writable PersistentVolumeClaim"},
		{"authn as a Deployment", checkFedsyncWiring, func(t *testing.T, objs []object) {
			ss := statefulSet(t, objs, "authn")
			for i := range objs {
				if objs[i].Obj == runtime.Object(ss) {
					objs[i].Kind = "Deployment"
					objs[i].Obj = &appsv1.Deployment{ObjectMeta: ss.ObjectMeta, Spec: appsv1.DeploymentSpec{
						Replicas: ss.Spec.Replicas, Selector: ss.Spec.Selector, Template: ss.Spec.Template}}
				}
			}
		}, "Deployment/authn container authn: authn must keep its data dir"},
		{"one authn replica", checkProd, func(t *testing.T, objs []object) {
			statefulSet(t, objs, "authn").Spec.Replicas = new(int32(1))
		}, "StatefulSet/authn: a Raft group needs an odd number of replicas"},
		{"authn peers name the statestore's port", checkProd, func(t *testing.T, objs []object) {
			c := &statefulSet(t, objs, "authn").Spec.Template.Spec.Containers[0]
			for i, e := range c.Env {
				if e.Name == "FEDSYNC_RAFT_PEERS" {
					c.Env[i].Value = strings.ReplaceAll(e.Value, ":19501", ":19504")
				}
			}
		}, "StatefulSet/authn: FEDSYNC_RAFT_PEERS is"},
		{"authn budget allows losing the majority", checkProd, func(t *testing.T, objs []object) {
			pdb := find[*policyv1.PodDisruptionBudget](t, objs, "authn")
			pdb.Spec.MinAvailable = new(intstr.FromInt32(1))
		}, "of the authn's Raft group"},
		{"two statestore replicas", checkProd, func(t *testing.T, objs []object) {
			statefulSet(t, objs, "statestore").Spec.Replicas = new(int32(2))
		}, "StatefulSet/statestore: a Raft group needs an odd number of replicas"},
		{"five statestore replicas, three peers", checkProd, func(t *testing.T, objs []object) {
			statefulSet(t, objs, "statestore").Spec.Replicas = new(int32(5))
		}, "FEDSYNC_RAFT_PEERS is"},
		{"statestore budget allows losing the majority", checkProd, func(t *testing.T, objs []object) {
			pdb := find[*policyv1.PodDisruptionBudget](t, objs, "statestore")
			pdb.Spec.MinAvailable = new(intstr.FromInt32(1))
		}, "must keep a majority"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			objs := deepCopy(render(t, "deploy/overlays/dev"))
			if before := c.check(objs); slices.ContainsFunc(before, func(s string) bool { return strings.Contains(s, c.want) }) {
				t.Fatalf("the unbroken overlay already reports %q: %v", c.want, before)
			}
			c.break_(t, objs)
			got := c.check(objs)
			if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, c.want) }) {
				t.Fatalf("check did not report %q; it reported %v", c.want, got)
			}
		})
	}
}

func deepCopy(objs []object) []object {
	out := make([]object, len(objs))
	for i, o := range objs {
		o.Obj = o.Obj.DeepCopyObject()
		out[i] = o
	}
	return out
}

func find[T interface {
	runtime.Object
	GetName() string
}](t *testing.T, objs []object, name string) T {
	t.Helper()
	for _, x := range objectsOf[T](objs) {
		if x.GetName() == name {
			return x
		}
	}
	var zero T
	t.Fatalf("no %T named %s", zero, name)
	return zero
}

func deployment(t *testing.T, objs []object, name string) *appsv1.Deployment {
	t.Helper()
	return find[*appsv1.Deployment](t, objs, name)
}

func statefulSet(t *testing.T, objs []object, name string) *appsv1.StatefulSet {
	t.Helper()
	return find[*appsv1.StatefulSet](t, objs, name)
}

// podWorkload is a Deployment or a StatefulSet, for the helpers below.
type podWorkload interface {
	*appsv1.Deployment | *appsv1.StatefulSet
	GetName() string
}

func templateOf[W podWorkload](w W) *corev1.PodTemplateSpec {
	switch x := any(w).(type) {
	case *appsv1.Deployment:
		return &x.Spec.Template
	case *appsv1.StatefulSet:
		return &x.Spec.Template
	}
	panic("unreachable")
}

func delEnv[W podWorkload](d W, names ...string) {
	c := &templateOf(d).Spec.Containers[0]
	c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return slices.Contains(names, e.Name) })
}

func volume[W podWorkload](t *testing.T, d W, name string) *corev1.Volume {
	t.Helper()
	vols := templateOf(d).Spec.Volumes
	for i, v := range vols {
		if v.Name == name {
			return &vols[i]
		}
	}
	t.Fatalf("%s has no volume %s", d.GetName(), name)
	return nil
}

func mount[W podWorkload](t *testing.T, d W, name string) *corev1.VolumeMount {
	t.Helper()
	c := &templateOf(d).Spec.Containers[0]
	for i, m := range c.VolumeMounts {
		if m.Name == name {
			return &c.VolumeMounts[i]
		}
	}
	t.Fatalf("%s has no mount of %s", d.GetName(), name)
	return nil
}

func setEnv[W podWorkload](d W, name, value string) {
	c := &templateOf(d).Spec.Containers[0]
	for i := range c.Env {
		if c.Env[i].Name == name {
			c.Env[i].Value = value
			return
		}
	}
	c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: value})
}
