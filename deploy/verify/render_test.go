package verify

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// overlays are every kustomize overlay the project ships.
var overlays = []string{"deploy/overlays/dev", "deploy/overlays/prod"}

// object is one rendered Kubernetes object: its YAML and its strictly decoded
// typed form.
type object struct {
	Kind, Name, Namespace string
	YAML                  []byte
	Obj                   runtime.Object
}

func (o object) id() string { return o.Kind + "/" + o.Name }

// repoRoot is the repository root (where go.work is), found from the test's
// working directory.
var repoRoot = sync.OnceValue(func() string {
	dir, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			panic("no go.work above " + dir)
		}
	}
})

func repoPath(rel string) string { return filepath.Join(repoRoot(), filepath.FromSlash(rel)) }

// strictCodec decodes YAML into the client-go scheme's typed objects and fails
// on unknown or duplicated fields, like `kubectl apply --validate=strict`.
var strictCodec = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

// decodeStrict decodes one object's YAML strictly.
func decodeStrict(y []byte) (runtime.Object, error) {
	obj, _, err := strictCodec.Decode(y, nil, nil)
	return obj, err
}

// renderDir builds a kustomization on fs with krusty (the kustomize library) and
// decodes every object strictly. The first error is returned.
func renderDir(fs filesys.FileSystem, dir string) ([]object, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(fs, dir)
	if err != nil {
		return nil, err
	}
	var out []object
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		obj, err := decodeStrict(y)
		if err != nil {
			return nil, &decodeError{id: r.GetKind() + "/" + r.GetName(), err: err}
		}
		out = append(out, object{Kind: r.GetKind(), Name: r.GetName(), Namespace: r.GetNamespace(), YAML: y, Obj: obj})
	}
	return out, nil
}

type decodeError struct {
	id  string
	err error
}

func (e *decodeError) Error() string { return e.id + ": " + e.err.Error() }

var renders sync.Map // overlay -> renderResult

type renderResult struct {
	objs []object
	err  error
}

// render renders an overlay of the repository once per test binary.
func render(t *testing.T, overlay string) []object {
	t.Helper()
	v, ok := renders.Load(overlay)
	if !ok {
		objs, err := renderDir(filesys.MakeFsOnDisk(), repoPath(overlay))
		v, _ = renders.LoadOrStore(overlay, renderResult{objs, err})
	}
	res := v.(renderResult)
	if res.err != nil {
		t.Fatalf("render %s: %v", overlay, res.err)
	}
	return res.objs
}

// TestOverlaysRenderStrictly renders every overlay with the kustomize library and
// decodes every object with the client-go scheme, strictly: a misspelled or
// unknown field, a wrong type or an unknown kind fails here.
func TestOverlaysRenderStrictly(t *testing.T) {
	for _, ov := range overlays {
		t.Run(filepath.Base(ov), func(t *testing.T) {
			objs := render(t, ov)
			kinds := map[string]int{}
			for _, o := range objs {
				kinds[o.Kind]++
			}
			for _, k := range []string{"Namespace", "Deployment", "StatefulSet", "Service", "ServiceAccount", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy", "Ingress"} {
				if kinds[k] == 0 {
					t.Errorf("%s renders no %s", ov, k)
				}
			}
			t.Logf("%s: %d objects %v", ov, len(objs), kinds)
		})
	}
}

// TestStrictDecodeRejectsBrokenManifests proves the check above can fail: broken
// manifests, built in memory with the same kustomize and decoder, are rejected
// with the offending field named.
func TestStrictDecodeRejectsBrokenManifests(t *testing.T) {
	const good = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo
spec:
  selector:
    matchLabels: {app: demo}
  template:
    metadata:
      labels: {app: demo}
    spec:
      containers:
        - name: demo
          image: fedsync/demo
          securityContext:
            readOnlyRootFilesystem: true
`
	cases := []struct {
		name, manifest, want string
	}{
		{"misspelled nested field", strings.Replace(good, "readOnlyRootFilesystem", "readOnlyRootFileSystem", 1), "readOnlyRootFileSystem"},
		{"unknown top-level spec field", strings.Replace(good, "spec:\n  selector", "spec:\n  replica: 2\n  selector", 1), "replica"},
		{"wrong type", strings.Replace(good, "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: \"yes\"", 1), "readOnlyRootFilesystem"},
		{"duplicate field", strings.Replace(good, "name: demo\nspec", "name: demo\n  name: demo2\nspec", 1), "name"},
		{"unknown kind", strings.Replace(good, "kind: Deployment", "kind: Deploymnet", 1), "Deploymnet"},
	}
	// The unbroken manifest passes, so each failure below is the breakage's.
	if _, err := renderInMemory(t, good); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.manifest == good {
				t.Fatal("the test case did not change the manifest")
			}
			_, err := renderInMemory(t, c.manifest)
			if err == nil {
				t.Fatal("a broken manifest rendered and decoded without error")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error does not name %q: %v", c.want, err)
			}
			t.Logf("rejected: %v", err)
		})
	}
}

func renderInMemory(t *testing.T, manifest string) ([]object, error) {
	t.Helper()
	fs := filesys.MakeFsInMemory()
	must(t, fs.WriteFile("/app/kustomization.yaml", []byte("resources:\n  - deployment.yaml\n")))
	must(t, fs.WriteFile("/app/deployment.yaml", []byte(manifest)))
	return renderDir(fs, "/app")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
