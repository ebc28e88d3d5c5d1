package verify

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// flagenv ignores a FEDSYNC_* variable that names no flag, so a misspelled
// setting would silently keep the default. These checks read the flags each
// service registers from its Go source and require every FEDSYNC_* variable of
// the manifests to name one.

var flagVar = regexp.MustCompile(`^(String|Int|Int64|Uint|Uint64|Float64|Bool|Duration|Text|Func|BoolFunc)?Var$|^(String|Int|Int64|Uint|Uint64|Float64|Bool|Duration)$`)

// flagsIn returns the flag names registered (fs.XxxVar(&v, "name", ...) or
// fs.Xxx("name", ...)) in the non-test Go files of a directory.
func flagsIn(dir string) (map[string]bool, error) {
	out := map[string]bool{}
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			return nil, err
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !flagVar.MatchString(sel.Sel.Name) {
				return true
			}
			i := 1 // XxxVar(&v, "name", ...)
			if !strings.HasSuffix(sel.Sel.Name, "Var") {
				i = 0 // Xxx("name", ...)
			}
			if len(call.Args) <= i {
				return true
			}
			if lit, ok := call.Args[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if name, err := strconv.Unquote(lit.Value); err == nil {
					out[name] = true
				}
			}
			return true
		})
	}
	return out, nil
}

func envName(flag string) string {
	return "FEDSYNC_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flag))
}

// serviceEnv maps each service to the FEDSYNC_* variables its flags read.
var serviceEnv = sync.OnceValues(func() (map[string]map[string]bool, error) {
	common := map[string]bool{}
	// svcrun registers discovery's, telemetry's and mtls's flags for every service.
	for _, d := range []string{"libs/svcrun", "libs/discovery", "libs/telemetry", "libs/mtls"} {
		f, err := flagsIn(repoPath(d))
		if err != nil {
			return nil, err
		}
		for k := range f {
			common[k] = true
		}
	}
	// Flags of libraries a service registers itself: by the call that does.
	optional := map[string]map[string]bool{}
	for marker, d := range map[string]string{"Kafka.RegisterFlags(": "libs/kafkabus", "Raft.RegisterFlags(": "libs/raftgroup", "AtRest.RegisterFlags(": "libs/atrest", "Backup.RegisterFlags(": "libs/backup"} {
		f, err := flagsIn(repoPath(d))
		if err != nil {
			return nil, err
		}
		optional[marker] = f
	}
	out := map[string]map[string]bool{}
	for _, svc := range services {
		dir := repoPath("services/" + svc)
		own, err := flagsIn(dir)
		if err != nil {
			return nil, err
		}
		sets := []map[string]bool{common, own}
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for marker, f := range optional {
			for _, name := range files {
				if b, _ := os.ReadFile(name); strings.Contains(string(b), marker) {
					sets = append(sets, f)
					break
				}
			}
		}
		env := map[string]bool{}
		for _, set := range sets {
			for k := range set {
				env[envName(k)] = true
			}
		}
		out[svc] = env
	}
	return out, nil
})

// checkFlags: the shared ConfigMap fedsync-common sets only variables some service
// reads; a service's own ConfigMaps and env set only variables it reads.
func checkFlags(objs []object, known map[string]map[string]bool) []string {
	anyService := map[string]bool{}
	for _, env := range known {
		for k := range env {
			anyService[k] = true
		}
	}
	cms := map[string]*corev1.ConfigMap{}
	for _, cm := range objectsOf[*corev1.ConfigMap](objs) {
		cms[cm.Name] = cm
	}
	var v []string
	for _, w := range workloadsOf(objs) {
		for _, c := range w.Template.Spec.Containers {
			svc := serviceOf(c.Image)
			if svc == "" {
				continue
			}
			check := func(key, from string, shared bool) {
				if !strings.HasPrefix(key, "FEDSYNC_") {
					return
				}
				if shared && !anyService[key] || !shared && !known[svc][key] {
					v = append(v, w.id()+": "+key+" (from "+from+") is not a flag of "+svc+"; `"+svc+" -h` lists them")
				}
			}
			for _, e := range c.EnvFrom {
				if e.ConfigMapRef == nil || cms[e.ConfigMapRef.Name] == nil {
					continue
				}
				name := e.ConfigMapRef.Name
				for k := range cms[name].Data {
					check(k, "ConfigMap "+name, strings.HasPrefix(name, "fedsync-common"))
				}
			}
			for _, e := range c.Env {
				check(e.Name, "env", false)
			}
		}
	}
	return v
}

// TestFlags applies checkFlags to every overlay, and proves it fails on a typo.
func TestFlags(t *testing.T) {
	known, err := serviceEnv()
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range services {
		for _, k := range []string{"FEDSYNC_GRPC_ADDR", "FEDSYNC_INSTANCE", "FEDSYNC_DISCOVERY", "FEDSYNC_CONSUL_ADDR", "FEDSYNC_HEALTH_ADDR", "FEDSYNC_TLS_CA", "FEDSYNC_TLS_CERT", "FEDSYNC_TLS_KEY"} {
			if !known[svc][k] {
				t.Fatalf("read no %s flag for %s: has the flag code moved? (found %d)", k, svc, len(known[svc]))
			}
		}
	}
	for _, ov := range overlays {
		report(t, ov, checkFlags(render(t, ov), known))
	}
	objs := deepCopy(render(t, "deploy/overlays/dev"))
	setEnv(deployment(t, objs, "merge"), "FEDSYNC_CONSUMER", "4")
	if got := checkFlags(objs, known); len(got) != 1 || !strings.Contains(got[0], "FEDSYNC_CONSUMER ") {
		t.Errorf("a misspelled variable gave %v", got)
	}
}
