package verify

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// Mutual TLS between the services (docs/security.md, libs/mtls): every fedsync
// container gets -tls.ca, -tls.cert and -tls.key as files of its own Secret
// fedsync-tls-<service>, mounted read-only as a directory so that a renewed
// certificate reaches the running pod; its gRPC port then requires client
// certificates, so the kubelet's readiness probe and Consul's check ask the
// plaintext health port (-health-addr, checked in checkFedsyncWiring).

// tlsFiles is the Secret layout (deploy/README.md): the variable naming each
// file and the Secret key it must be. The keys are cert-manager's (and
// kubernetes.io/tls's), so a Certificate's Secret is mounted as it is.
var tlsFiles = []struct{ env, key string }{
	{"FEDSYNC_TLS_CA", "ca.crt"},
	{"FEDSYNC_TLS_CERT", "tls.crt"},
	{"FEDSYNC_TLS_KEY", "tls.key"},
}

// tlsSecret is the Secret holding a service's certificate.
func tlsSecret(service string) string { return "fedsync-tls-" + service }

// secretHas reports whether a Secret has key, in data or stringData.
func secretHas(s *corev1.Secret, key string) bool {
	_, inData := s.Data[key]
	_, inString := s.StringData[key]
	return inData || inString
}

// checkMutualTLS: every fedsync container has mutual TLS on, from files of its
// own service's Secret under the documented keys, mounted read-only without
// subPath, the private key not readable by every user.
func checkMutualTLS(objs []object) []string {
	secrets := map[string]*corev1.Secret{}
	for _, s := range objectsOf[*corev1.Secret](objs) {
		secrets[s.Name] = s
	}
	var v []string
	for _, w := range workloadsOf(objs) {
		vols := map[string]corev1.Volume{}
		for _, vol := range w.Template.Spec.Volumes {
			vols[vol.Name] = vol
		}
		for _, c := range w.Template.Spec.Containers {
			svc := serviceOf(c.Image)
			if svc == "" {
				continue
			}
			id := w.id() + " container " + c.Name
			e, _ := env(objs, c)
			var missing []string
			for _, f := range tlsFiles {
				if e[f.env] == "" {
					missing = append(missing, f.env)
				}
			}
			if len(missing) > 0 {
				v = append(v, fmt.Sprintf("%s: mutual TLS is off: %s not set (the gRPC port would accept anyone)", id, strings.Join(missing, ", ")))
				continue
			}
			for _, f := range tlsFiles {
				p := e[f.env]
				if !strings.HasPrefix(p, "/") {
					v = append(v, fmt.Sprintf("%s: %s=%q is not an absolute file path", id, f.env, p))
					continue
				}
				m := mountFor(c, p)
				if m == nil {
					v = append(v, fmt.Sprintf("%s: %s=%q is not on a volume", id, f.env, p))
					continue
				}
				vol := vols[m.Name]
				if vol.Secret == nil {
					v = append(v, fmt.Sprintf("%s: %s=%q is on volume %s, not on a Secret", id, f.env, p, m.Name))
					continue
				}
				if want := tlsSecret(svc); vol.Secret.SecretName != want {
					v = append(v, fmt.Sprintf("%s: %s is on Secret %s, want %s (the service's own certificate)", id, f.env, vol.Secret.SecretName, want))
				}
				if !m.ReadOnly {
					v = append(v, fmt.Sprintf("%s: mount %s of the TLS Secret is not read-only", id, m.Name))
				}
				if m.SubPath != "" || m.SubPathExpr != "" {
					v = append(v, fmt.Sprintf("%s: mount %s of the TLS Secret uses subPath: a renewed certificate would never reach the pod", id, m.Name))
				}
				if vol.Secret.Optional != nil && *vol.Secret.Optional {
					v = append(v, fmt.Sprintf("%s: the TLS Secret %s is optional: the pod would start without its certificate", id, vol.Secret.SecretName))
				}
				mode := int32(0o644) // the API server's default
				if vol.Secret.DefaultMode != nil {
					mode = *vol.Secret.DefaultMode
				}
				rel := strings.TrimPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/")
				key := rel
				if len(vol.Secret.Items) > 0 {
					key = ""
					for _, it := range vol.Secret.Items {
						if it.Path == rel {
							key = it.Key
							if it.Mode != nil {
								mode = *it.Mode
							}
						}
					}
					if key == "" {
						v = append(v, fmt.Sprintf("%s: %s=%q is not one of the items projected from Secret %s", id, f.env, p, vol.Secret.SecretName))
						continue
					}
				}
				if key != f.key {
					v = append(v, fmt.Sprintf("%s: %s reads key %q of Secret %s, want %q (ca.crt, tls.crt, tls.key: deploy/README.md)", id, f.env, key, vol.Secret.SecretName, f.key))
				}
				if f.key == "tls.key" && mode&0o007 != 0 {
					v = append(v, fmt.Sprintf("%s: the private key is readable by all (mode %#o)", id, mode))
				}
				if s := secrets[vol.Secret.SecretName]; s != nil && !secretHas(s, key) {
					v = append(v, fmt.Sprintf("%s: Secret %s has no key %s", id, s.Name, key))
				}
			}
		}
	}
	return v
}

// readmeSection returns the text under the first Markdown heading containing
// title, up to the next heading of the same or a higher level.
func readmeSection(readme, title string) string {
	lines := strings.Split(readme, "\n")
	level := 0
	var out []string
	for _, l := range lines {
		h := len(l) - len(strings.TrimLeft(l, "#"))
		isHeading := h > 0 && strings.HasPrefix(l[h:], " ")
		switch {
		case level == 0 && isHeading && strings.Contains(l, title):
			level = h
		case level > 0 && isHeading && h <= level:
			return strings.Join(out, "\n")
		case level > 0:
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestReadmeMutualTLS: deploy/README.md documents what the manifests do: each
// service's three ports (the table matches the rendered containers), the
// Consul dev agent checking the health port, the Secrets' names and keys, and
// what a production certificate must carry.
func TestReadmeMutualTLS(t *testing.T) {
	readme := readFile(t, "deploy/README.md")
	row := regexp.MustCompile(`(?m)^\| *([a-z]+) *\| *(\d+) *\| *(\d+) *\| *(\d+) *\|`)
	table := map[string][3]string{}
	for _, m := range row.FindAllStringSubmatch(readme, -1) {
		table[m[1]] = [3]string{m[2], m[3], m[4]}
	}
	for _, w := range workloadsOf(render(t, "deploy/overlays/dev")) {
		for _, c := range w.Template.Spec.Containers {
			svc := serviceOf(c.Image)
			if svc == "" {
				continue
			}
			want := [3]string{fmt.Sprint(containerPort(c, "grpc")), fmt.Sprint(containerPort(c, "http")), fmt.Sprint(containerPort(c, "grpc-health"))}
			if table[svc] != want {
				t.Errorf("deploy/README.md's port table has %s as gRPC, HTTP, health %v; %s has %v", svc, table[svc], w.id(), want)
			}
		}
	}

	consul := readmeSection(readme, "Consul dev agent")
	if consul == "" {
		t.Error(`deploy/README.md has no "Consul dev agent" section`)
	}
	for _, want := range []string{"health port", "FEDSYNC_HEALTH_ADDR"} {
		if !strings.Contains(consul, want) {
			t.Errorf("deploy/README.md's Consul dev agent section does not mention %q", want)
		}
	}

	tls := readmeSection(readme, "Mutual TLS")
	if tls == "" {
		t.Fatal(`deploy/README.md has no "Mutual TLS" section`)
	}
	want := []string{"spiffe://fedsync/", "server auth", "client auth", "cert-manager", "fedctl tls issue", "FEDSYNC_HEALTH_ADDR"}
	for _, f := range tlsFiles {
		want = append(want, f.key, f.env)
	}
	for _, s := range services {
		want = append(want, tlsSecret(s))
	}
	for _, w := range want {
		if !strings.Contains(tls, w) {
			t.Errorf("deploy/README.md's Mutual TLS section does not mention %q", w)
		}
	}
}

func TestReadmeSection(t *testing.T) {
	md := "# A\n## Consul dev agent\nx\n### sub\ny\n## Next\nz\n"
	if got := readmeSection(md, "Consul dev agent"); got != "x\n### sub\ny" {
		t.Errorf("got %q", got)
	}
	if got := readmeSection(md, "Missing"); got != "" {
		t.Errorf("got %q", got)
	}
}

// --- the Tiltfile's Secrets: `fedctl tls issue` emulated by the local() recorder ---

// tlsIssue is one `fedctl tls issue DIR SERVICE...` the Tiltfile runs.
type tlsIssue struct {
	dir      string
	services []string
}

var (
	fedctlIssueCmd = regexp.MustCompile(`(?:^|[\s;&|(])(?:go run \./tools/cmd/fedctl|\S*fedctl)\s+tls\s+issue((?:\s+[^\s;&|()]+)*)`)
	// fedctl's own rule for a service name (tools/cmd/fedctl).
	fedctlServiceName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// fedctlTLSIssue emulates `fedctl tls issue DIR SERVICE...` when cmd runs it: it
// records the files fedctl writes (DIR/ca.pem, DIR/ca-key.pem, DIR/<service>.pem,
// DIR/<service>-key.pem: libs/mtls DevCA) and fails as fedctl would on bad
// arguments. ok is false for any other command.
func (tl *tilt) fedctlTLSIssue(cmd string) (out string, ok bool, err error) {
	m := fedctlIssueCmd.FindStringSubmatch(cmd)
	if m == nil {
		return "", false, nil
	}
	args := strings.Fields(m[1])
	if len(args) < 2 {
		return "", true, fmt.Errorf("%q: fedctl tls issue needs DIR and at least one SERVICE (it exits 2)", cmd)
	}
	dir := path.Clean(args[0])
	var b strings.Builder
	for _, s := range args[1:] {
		if !fedctlServiceName.MatchString(s) {
			return "", true, fmt.Errorf("%q: %q is not a service name (fedctl exits 2)", cmd, s)
		}
		fmt.Fprintf(&b, "%s: ca=%s/ca.pem cert=%s/%s.pem key=%s/%s-key.pem uri=spiffe://fedsync/%s\n", s, dir, dir, s, dir, s, s)
	}
	tl.tlsIssues = append(tl.tlsIssues, tlsIssue{dir: dir, services: args[1:]})
	return b.String(), true, nil
}

// issuedContent stands for the content of a file fedctl tls issue writes.
func issuedContent(p string) string { return "<" + path.Clean(p) + ", written by fedctl tls issue>\n" }

// generatedFile answers read_file for paths under .fedsync/ (generated state,
// never read from this machine's disk): the content of a file an earlier
// `fedctl tls issue` wrote, or an error. ok is false for other paths.
func (tl *tilt) generatedFile(p string) (text string, ok bool, err error) {
	p = path.Clean(p)
	if !strings.HasPrefix(p, ".fedsync/") {
		return "", false, nil
	}
	var issuers []string
	for _, is := range tl.tlsIssues {
		if path.Dir(p) != is.dir {
			continue
		}
		issuers = append(issuers, "fedctl tls issue "+is.dir+" "+strings.Join(is.services, " "))
		produced := []string{"ca.pem", "ca-key.pem"}
		for _, s := range is.services {
			produced = append(produced, s+".pem", s+"-key.pem")
		}
		if slices.Contains(produced, path.Base(p)) {
			return issuedContent(p), true, nil
		}
	}
	if len(issuers) > 0 {
		return "", true, fmt.Errorf("read_file(%q): %s does not produce %s", p, strings.Join(issuers, "; "), p)
	}
	return "", true, fmt.Errorf("read_file(%q): nothing the Tiltfile ran before produces it (.fedsync/ is generated, never read from this machine)", p)
}

// secretValues are a Secret's values, data and stringData together.
func secretValues(s *corev1.Secret) map[string]string {
	out := map[string]string{}
	for k, b := range s.Data {
		out[k] = string(b)
	}
	for k, val := range s.StringData {
		out[k] = val
	}
	return out
}

// checkTiltTLS: the Tiltfile issues every service a certificate with fedctl and
// deploys it as the Secret fedsync-tls-<service> the manifests mount (ca.crt =
// the CA's ca.pem, tls.crt = <service>.pem, tls.key = <service>-key.pem; never the
// CA's key), in a resource each of the service's workloads waits for.
func checkTiltTLS(tl *tilt, configured map[string]k8sResource, images map[string][]string) []string {
	var v []string
	issued := map[string]string{} // service -> dir
	for _, is := range tl.tlsIssues {
		for _, s := range is.services {
			issued[s] = is.dir
		}
	}
	secrets := map[string]*corev1.Secret{}
	for _, s := range objectsOf[*corev1.Secret](tl.objects) {
		secrets[s.Name] = s
		for k, val := range secretValues(s) {
			if strings.Contains(val, "/ca-key.pem") {
				v = append(v, fmt.Sprintf("Secret %s: %s holds the CA's private key (ca-key.pem stays on the developer's machine)", s.Name, k))
			}
		}
	}
	holder := map[string]string{} // Secret name -> resource
	for _, kr := range tl.k8sResources {
		for _, sel := range kr.objects {
			if parts := strings.Split(sel, ":"); len(parts) > 1 && strings.EqualFold(parts[1], "secret") {
				holder[parts[0]] = kr.newName + kr.workload
			}
		}
	}
	for _, svc := range services {
		name := tlsSecret(svc)
		dir, ok := issued[svc]
		if !ok {
			v = append(v, "service "+svc+": no `fedctl tls issue` in the Tiltfile issues its certificate")
			continue
		}
		sec := secrets[name]
		if sec == nil {
			v = append(v, "service "+svc+": the Tiltfile deploys no Secret "+name)
			continue
		}
		if sec.Namespace != namespace {
			v = append(v, fmt.Sprintf("Secret %s is in namespace %q, not %q", name, sec.Namespace, namespace))
		}
		files := map[string]string{"ca.crt": dir + "/ca.pem", "tls.crt": dir + "/" + svc + ".pem", "tls.key": dir + "/" + svc + "-key.pem"}
		vals := secretValues(sec)
		for _, f := range tlsFiles {
			if got := vals[f.key]; got != issuedContent(files[f.key]) {
				v = append(v, fmt.Sprintf("Secret %s: %s is %q, want the content of %s", name, f.key, got, files[f.key]))
			}
		}
		for k := range vals {
			if _, ok := files[k]; !ok {
				v = append(v, fmt.Sprintf("Secret %s: unexpected key %s", name, k))
			}
		}
		res := holder[name]
		if res == "" {
			v = append(v, "Secret "+name+" is in no k8s_resource (its workloads cannot wait for it)")
			continue
		}
		for _, w := range images["fedsync/"+svc] {
			if kr, ok := configured[w]; ok && !slices.Contains(kr.resourceDeps, res) {
				v = append(v, fmt.Sprintf("k8s_resource %s: resource_deps lacks %s, the resource of its Secret %s", w, res, name))
			}
		}
	}
	return v
}
