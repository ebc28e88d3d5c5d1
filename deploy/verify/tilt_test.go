package verify

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/syntax"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// The Tiltfile is evaluated with go.starlark.net against recorders of Tilt's
// built-ins: each has the parameters of Tilt's API (docs.tilt.dev/api.html), so a
// misspelled keyword or a built-in Tilt does not have fails the evaluation, and
// each records its call for the checks below. kustomize() really renders (with
// the kustomize library) and k8s_yaml() strictly decodes what it is given, so the
// checks see exactly the objects Tilt would deploy.

// blob is Tilt's Blob: text (and, from kustomize or encode_yaml, its objects).
type blob struct {
	text string
	objs []object
}

func (b *blob) String() string        { return b.text }
func (b *blob) Type() string          { return "blob" }
func (b *blob) Freeze()               {}
func (b *blob) Truth() starlark.Bool  { return b.text != "" }
func (b *blob) Hash() (uint32, error) { return starlark.String(b.text).Hash() }

// record is a value a built-in returns for another built-in to take.
type record struct {
	kind string
	args map[string]starlark.Value
}

func (r *record) String() string        { return r.kind + "(...)" }
func (r *record) Type() string          { return r.kind }
func (r *record) Freeze()               {}
func (r *record) Truth() starlark.Bool  { return true }
func (r *record) Hash() (uint32, error) { return 0, errors.New("unhashable: " + r.kind) }

type localResource struct {
	name, cmd                  string
	deps, resourceDeps, labels []string
}

type liveUpdateStep struct {
	kind      string // sync or run
	src, dest string // sync
	cmd       string // run
}

type dockerBuild struct {
	ref, context, dockerfile, target string
	buildArgs                        map[string]string
	liveUpdate                       []liveUpdateStep
}

type portForward struct {
	local, container int
	name             string
}

type k8sResource struct {
	workload, newName     string
	portForwards          []portForward
	resourceDeps, objects []string
	labels                []string
}

// tilt is what evaluating the Tiltfile recorded.
type tilt struct {
	objects        []object // every object passed to k8s_yaml
	kustomizeDirs  []string
	localResources []localResource
	dockerBuilds   []dockerBuild
	k8sResources   []k8sResource
	loads          []string
	locals         []string // commands run with local()
	readFiles      []string
	tlsIssues      []tlsIssue // `fedctl tls issue` runs among the locals
}

// tiltBuiltins returns the recorders. Parameters are Tilt's; a "?" marks an
// optional one, as in starlark.UnpackArgs.
func (tl *tilt) builtins() starlark.StringDict {
	b := func(name string, fn func(args map[string]starlark.Value) (starlark.Value, error), params ...string) *starlark.Builtin {
		return starlark.NewBuiltin(name, func(th *starlark.Thread, _ *starlark.Builtin, pos starlark.Tuple, kw []starlark.Tuple) (starlark.Value, error) {
			vals := make([]starlark.Value, len(params))
			pairs := make([]any, 0, 2*len(params))
			for i, p := range params {
				pairs = append(pairs, p, &vals[i])
			}
			if err := starlark.UnpackArgs(name, pos, kw, pairs...); err != nil {
				return nil, err
			}
			args := map[string]starlark.Value{}
			for i, p := range params {
				if vals[i] != nil {
					args[strings.TrimSuffix(p, "?")] = vals[i]
				}
			}
			v, err := fn(args)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if v == nil {
				v = starlark.None
			}
			return v, nil
		})
	}
	none := func(map[string]starlark.Value) (starlark.Value, error) { return starlark.None, nil }

	return starlark.StringDict{
		"TRIGGER_MODE_AUTO":   starlark.MakeInt(0),
		"TRIGGER_MODE_MANUAL": starlark.MakeInt(1),
		"version_settings":    b("version_settings", none, "check_updates?", "constraint?"),
		"update_settings": b("update_settings", none,
			"max_parallel_updates?", "k8s_upsert_timeout_secs?", "suppress_unused_image_warnings?", "k8s_server_side_apply?"),
		"ci_settings":        b("ci_settings", none, "k8s_grace_period?", "timeout?", "readiness_timeout?"),
		"allow_k8s_contexts": b("allow_k8s_contexts", none, "contexts"),
		"watch_file":         b("watch_file", none, "file_path"),
		"fail": b("fail", func(a map[string]starlark.Value) (starlark.Value, error) {
			return nil, fmt.Errorf("fail(%s)", a["msg"])
		}, "msg"),
		"warn": b("warn", none, "msg"),
		"os": &starlarkstruct.Module{Name: "os", Members: starlark.StringDict{
			"getenv": b("os.getenv", func(a map[string]starlark.Value) (starlark.Value, error) {
				// The evaluation ignores this machine's environment: defaults only.
				if d, ok := a["default"]; ok {
					return d, nil
				}
				return starlark.None, nil
			}, "key", "default?"),
		}},
		"local": b("local", func(a map[string]starlark.Value) (starlark.Value, error) {
			cmd, err := str(a["command"])
			if err != nil {
				return nil, err
			}
			tl.locals = append(tl.locals, cmd)
			// Nothing runs. `fedctl tls issue` is emulated (the files it would
			// write, for read_file below); every other command "prints" what
			// `go env GOARCH` would.
			if out, ok, err := tl.fedctlTLSIssue(cmd); ok {
				return &blob{text: out}, err
			}
			return &blob{text: "amd64\n"}, nil
		}, "command", "quiet?", "command_bat?", "echo_off?", "env?", "dir?", "stdin?"),
		"read_file": b("read_file", func(a map[string]starlark.Value) (starlark.Value, error) {
			p, err := str(a["file_path"])
			if err != nil {
				return nil, err
			}
			tl.readFiles = append(tl.readFiles, p)
			// Files the Tiltfile generates under .fedsync/ are never read from
			// this machine's disk: what an earlier local() would have written.
			if text, ok, err := tl.generatedFile(p); ok {
				if err != nil {
					return nil, err
				}
				return &blob{text: text}, nil
			}
			data, err := os.ReadFile(repoPath(p))
			if err != nil {
				if d, ok := a["default"]; ok && d != starlark.None {
					return d, nil
				}
				return nil, err
			}
			return &blob{text: string(data)}, nil
		}, "file_path", "default?"),
		"encode_yaml": b("encode_yaml", func(a map[string]starlark.Value) (starlark.Value, error) {
			v, err := toGo(a["obj"])
			if err != nil {
				return nil, err
			}
			y, err := yaml.Marshal(v)
			if err != nil {
				return nil, err
			}
			return &blob{text: string(y)}, nil
		}, "obj"),
		"kustomize": b("kustomize", func(a map[string]starlark.Value) (starlark.Value, error) {
			dir, err := str(a["pathToDir"])
			if err != nil {
				return nil, err
			}
			tl.kustomizeDirs = append(tl.kustomizeDirs, dir)
			objs, err := renderDir(filesys.MakeFsOnDisk(), repoPath(dir))
			if err != nil {
				return nil, err
			}
			var sb strings.Builder
			for _, o := range objs {
				sb.WriteString("---\n")
				sb.Write(o.YAML)
			}
			return &blob{text: sb.String(), objs: objs}, nil
		}, "pathToDir", "kustomize_bin?", "flags?"),
		"k8s_yaml": b("k8s_yaml", func(a map[string]starlark.Value) (starlark.Value, error) {
			var objs []object
			switch y := a["yaml"].(type) {
			case *blob:
				if y.objs != nil {
					objs = y.objs
					break
				}
				var err error
				if objs, err = decodeStream(y.text); err != nil {
					return nil, err
				}
			default:
				paths, err := strs(y)
				if err != nil {
					return nil, err
				}
				for _, p := range paths {
					data, err := os.ReadFile(repoPath(p))
					if err != nil {
						return nil, err
					}
					more, err := decodeStream(string(data))
					if err != nil {
						return nil, err
					}
					objs = append(objs, more...)
				}
			}
			for _, o := range objs {
				for _, have := range tl.objects {
					if have.Kind == o.Kind && have.Name == o.Name && have.Namespace == o.Namespace && a["allow_duplicates"] != starlark.True {
						return nil, fmt.Errorf("%s registered twice", o.id())
					}
				}
			}
			tl.objects = append(tl.objects, objs...)
			return starlark.None, nil
		}, "yaml", "allow_duplicates?"),
		"local_resource": b("local_resource", func(a map[string]starlark.Value) (starlark.Value, error) {
			var lr localResource
			var err error
			if lr.name, err = str(a["name"]); err != nil {
				return nil, err
			}
			if c, ok := a["cmd"]; ok {
				if lr.cmd, err = cmdString(c); err != nil {
					return nil, err
				}
			}
			for k, dst := range map[string]*[]string{"deps": &lr.deps, "resource_deps": &lr.resourceDeps, "labels": &lr.labels} {
				if v, ok := a[k]; ok {
					if *dst, err = strs(v); err != nil {
						return nil, fmt.Errorf("%s: %w", k, err)
					}
				}
			}
			if _, ok := a["ignore"]; ok {
				if _, err := strs(a["ignore"]); err != nil {
					return nil, fmt.Errorf("ignore: %w", err)
				}
			}
			tl.localResources = append(tl.localResources, lr)
			return starlark.None, nil
		}, "name", "cmd?", "deps?", "trigger_mode?", "resource_deps?", "ignore?", "auto_init?", "serve_cmd?",
			"cmd_bat?", "serve_cmd_bat?", "allow_parallel?", "links?", "labels?", "env?", "serve_env?",
			"readiness_probe?", "dir?", "serve_dir?"),
		"sync": b("sync", func(a map[string]starlark.Value) (starlark.Value, error) {
			return &record{kind: "sync", args: a}, nil
		}, "local_path", "remote_path"),
		"run": b("run", func(a map[string]starlark.Value) (starlark.Value, error) {
			return &record{kind: "run", args: a}, nil
		}, "cmd", "trigger?", "echo_off?"),
		"fall_back_on": b("fall_back_on", func(a map[string]starlark.Value) (starlark.Value, error) {
			return &record{kind: "fall_back_on", args: a}, nil
		}, "files"),
		"docker_build": b("docker_build", func(a map[string]starlark.Value) (starlark.Value, error) {
			var db dockerBuild
			var err error
			if db.ref, err = str(a["ref"]); err != nil {
				return nil, err
			}
			if db.context, err = str(a["context"]); err != nil {
				return nil, err
			}
			db.dockerfile = "Dockerfile"
			if v, ok := a["dockerfile"]; ok {
				if db.dockerfile, err = str(v); err != nil {
					return nil, err
				}
			}
			if v, ok := a["target"]; ok {
				if db.target, err = str(v); err != nil {
					return nil, err
				}
			}
			db.buildArgs = map[string]string{}
			if v, ok := a["build_args"]; ok {
				d, ok := v.(*starlark.Dict)
				if !ok {
					return nil, errors.New("build_args must be a dict")
				}
				for _, item := range d.Items() {
					k, err1 := str(item[0])
					val, err2 := str(item[1])
					if err := errors.Join(err1, err2); err != nil {
						return nil, fmt.Errorf("build_args: %w", err)
					}
					db.buildArgs[k] = val
				}
			}
			if v, ok := a["live_update"]; ok {
				l, ok := v.(*starlark.List)
				if !ok {
					return nil, errors.New("live_update must be a list")
				}
				for i := 0; i < l.Len(); i++ {
					r, ok := l.Index(i).(*record)
					if !ok {
						return nil, fmt.Errorf("live_update[%d] is a %s, not a step", i, l.Index(i).Type())
					}
					step := liveUpdateStep{kind: r.kind}
					switch r.kind {
					case "sync":
						step.src, _ = str(r.args["local_path"])
						step.dest, _ = str(r.args["remote_path"])
					case "run":
						step.cmd, _ = cmdString(r.args["cmd"])
					}
					db.liveUpdate = append(db.liveUpdate, step)
				}
			}
			tl.dockerBuilds = append(tl.dockerBuilds, db)
			return starlark.None, nil
		}, "ref", "context", "build_args?", "dockerfile?", "dockerfile_contents?", "live_update?", "match_in_env_vars?",
			"ignore?", "only?", "entrypoint?", "target?", "ssh?", "network?", "secret?", "extra_tag?", "container_args?",
			"cache_from?", "pull?", "platform?", "extra_hosts?"),
		"port_forward": b("port_forward", func(a map[string]starlark.Value) (starlark.Value, error) {
			return &record{kind: "port_forward", args: a}, nil
		}, "local_port", "container_port?", "name?", "link_path?", "host?"),
		"link": b("link", func(a map[string]starlark.Value) (starlark.Value, error) {
			return &record{kind: "link", args: a}, nil
		}, "url", "name?"),
		"k8s_resource": b("k8s_resource", func(a map[string]starlark.Value) (starlark.Value, error) {
			var kr k8sResource
			var err error
			if v, ok := a["workload"]; ok {
				if kr.workload, err = str(v); err != nil {
					return nil, err
				}
			}
			if v, ok := a["new_name"]; ok {
				if kr.newName, err = str(v); err != nil {
					return nil, err
				}
			}
			for k, dst := range map[string]*[]string{"resource_deps": &kr.resourceDeps, "objects": &kr.objects, "labels": &kr.labels} {
				if v, ok := a[k]; ok {
					if *dst, err = strs(v); err != nil {
						return nil, fmt.Errorf("%s: %w", k, err)
					}
				}
			}
			if v, ok := a["port_forwards"]; ok {
				if kr.portForwards, err = portForwards(v); err != nil {
					return nil, err
				}
			}
			tl.k8sResources = append(tl.k8sResources, kr)
			return starlark.None, nil
		}, "workload?", "new_name?", "port_forwards?", "extra_pod_selectors?", "trigger_mode?", "resource_deps?",
			"objects?", "auto_init?", "pod_readiness?", "links?", "labels?", "discovery_strategy?"),
	}
}

func str(v starlark.Value) (string, error) {
	switch x := v.(type) {
	case starlark.String:
		return string(x), nil
	case *blob:
		return x.text, nil
	}
	if v == nil {
		return "", errors.New("missing value")
	}
	return "", fmt.Errorf("want a string, got %s", v.Type())
}

// strs accepts a string or a list of strings, as Tilt does for most list params.
func strs(v starlark.Value) ([]string, error) {
	if s, err := str(v); err == nil {
		return []string{s}, nil
	}
	l, ok := v.(*starlark.List)
	if !ok {
		return nil, fmt.Errorf("want a string or a list of strings, got %s", v.Type())
	}
	var out []string
	for i := 0; i < l.Len(); i++ {
		s, err := str(l.Index(i))
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func cmdString(v starlark.Value) (string, error) {
	parts, err := strs(v)
	return strings.Join(parts, " "), err
}

func toInt(v starlark.Value) (int, error) {
	i, ok := v.(starlark.Int)
	if !ok {
		return 0, fmt.Errorf("want an int, got %s", v.Type())
	}
	n, ok := i.Int64()
	if !ok {
		return 0, errors.New("int out of range")
	}
	return int(n), nil
}

// portForwards accepts Tilt's forms: 8000, '8000', '8000:80', port_forward(...),
// or a list of them.
func portForwards(v starlark.Value) ([]portForward, error) {
	var items []starlark.Value
	if l, ok := v.(*starlark.List); ok {
		for i := 0; i < l.Len(); i++ {
			items = append(items, l.Index(i))
		}
	} else {
		items = []starlark.Value{v}
	}
	var out []portForward
	for _, it := range items {
		var pf portForward
		switch x := it.(type) {
		case starlark.Int:
			n, _ := x.Int64()
			pf = portForward{local: int(n), container: int(n)}
		case starlark.String:
			parts := strings.Split(string(x), ":")
			if _, err := fmt.Sscan(parts[len(parts)-1], &pf.container); err != nil {
				return nil, fmt.Errorf("port forward %q: %w", x, err)
			}
			pf.local = pf.container
			if len(parts) > 1 {
				fmt.Sscan(parts[len(parts)-2], &pf.local)
			}
		case *record:
			if x.kind != "port_forward" {
				return nil, fmt.Errorf("port_forwards: a %s is not a port forward", x.kind)
			}
			var err error
			if pf.local, err = toInt(x.args["local_port"]); err != nil {
				return nil, fmt.Errorf("port_forward local_port: %w", err)
			}
			pf.container = pf.local
			if c, ok := x.args["container_port"]; ok && c != starlark.None {
				if pf.container, err = toInt(c); err != nil {
					return nil, fmt.Errorf("port_forward container_port: %w", err)
				}
			}
			if n, ok := x.args["name"]; ok && n != starlark.None {
				pf.name, _ = str(n)
			}
		default:
			return nil, fmt.Errorf("port_forwards: want int, string or port_forward, got %s", it.Type())
		}
		out = append(out, pf)
	}
	return out, nil
}

// toGo converts Starlark data (dict, list, string, int, bool, None) for YAML.
func toGo(v starlark.Value) (any, error) {
	switch x := v.(type) {
	case starlark.NoneType:
		return nil, nil
	case starlark.Bool:
		return bool(x), nil
	case starlark.Int:
		n, _ := x.Int64()
		return n, nil
	case starlark.String:
		return string(x), nil
	case *blob:
		return x.text, nil
	case *starlark.List:
		var out []any
		for i := 0; i < x.Len(); i++ {
			e, err := toGo(x.Index(i))
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		return out, nil
	case *starlark.Dict:
		out := map[string]any{}
		for _, it := range x.Items() {
			k, ok := it[0].(starlark.String)
			if !ok {
				return nil, fmt.Errorf("encode_yaml: dict key %s is not a string", it[0])
			}
			e, err := toGo(it[1])
			if err != nil {
				return nil, err
			}
			out[string(k)] = e
		}
		return out, nil
	}
	return nil, fmt.Errorf("encode_yaml: cannot encode a %s", v.Type())
}

// decodeStream splits a YAML stream and decodes each document strictly.
func decodeStream(text string) ([]object, error) {
	var out []object
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(text, -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		obj, err := decodeStrict([]byte(doc))
		if err != nil {
			return nil, err
		}
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name, Namespace string
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return nil, err
		}
		out = append(out, object{Kind: meta.Kind, Name: meta.Metadata.Name, Namespace: meta.Metadata.Namespace, YAML: []byte(doc), Obj: obj})
	}
	return out, nil
}

// evalTiltfileSource evaluates Tiltfile text (loads resolve from the repository).
func evalTiltfileSource(src string) (*tilt, error) {
	tl := &tilt{}
	predeclared := tl.builtins()
	opts := &syntax.FileOptions{Set: true, While: true, TopLevelControl: true, GlobalReassign: true, Recursion: true}
	cache := map[string]starlark.StringDict{}
	var load func(th *starlark.Thread, module string) (starlark.StringDict, error)
	load = func(th *starlark.Thread, module string) (starlark.StringDict, error) {
		tl.loads = append(tl.loads, module)
		if strings.Contains(module, "://") {
			return nil, fmt.Errorf("load(%q): extensions fetched at load time are not allowed; vendor it into tilt/", module)
		}
		p := path.Clean(module)
		if g, ok := cache[p]; ok {
			return g, nil
		}
		data, err := os.ReadFile(repoPath(p))
		if err != nil {
			return nil, err
		}
		sub := &starlark.Thread{Name: p, Load: load}
		g, err := starlark.ExecFileOptions(opts, sub, p, data, predeclared)
		if err != nil {
			return nil, err
		}
		cache[p] = g
		return g, nil
	}
	th := &starlark.Thread{Name: "Tiltfile", Load: load}
	if _, err := starlark.ExecFileOptions(opts, th, "Tiltfile", src, predeclared); err != nil {
		var ee *starlark.EvalError
		if errors.As(err, &ee) {
			return nil, errors.New(ee.Backtrace())
		}
		return nil, err
	}
	return tl, nil
}

var tiltOnce = sync.OnceValues(func() (*tilt, error) {
	src, err := os.ReadFile(repoPath("Tiltfile"))
	if err != nil {
		return nil, err
	}
	return evalTiltfileSource(string(src))
})

// evalTiltfile evaluates the repository's Tiltfile once per test binary.
func evalTiltfile(t *testing.T) *tilt {
	t.Helper()
	tl, err := tiltOnce()
	if err != nil {
		t.Fatalf("evaluate Tiltfile: %v", err)
	}
	return tl
}

var tiltLabel = regexp.MustCompile(`^[A-Za-z0-9]([-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?$`)

// checkTilt returns what is wrong with an evaluated Tiltfile.
func checkTilt(tl *tilt) []string {
	var v []string
	if !slices.Contains(tl.kustomizeDirs, "deploy/overlays/dev") {
		v = append(v, "the Tiltfile does not deploy kustomize('deploy/overlays/dev')")
	}

	// Workloads and their images.
	workloads := map[string]*corev1.PodTemplateSpec{}
	images := map[string][]string{} // image repo -> workloads
	for _, o := range tl.objects {
		var tmpl *corev1.PodTemplateSpec
		switch x := o.Obj.(type) {
		case *appsv1.Deployment:
			tmpl = &x.Spec.Template
		case *appsv1.StatefulSet:
			tmpl = &x.Spec.Template
		default:
			continue
		}
		workloads[o.Name] = tmpl
		for _, c := range tmpl.Spec.Containers {
			images[imageRepo(c.Image)] = append(images[imageRepo(c.Image)], o.Name)
		}
	}

	// Resource names: local resources, workloads (Tilt names a workload's resource
	// after it) and resources made of objects.
	resources := map[string]bool{}
	var deps [][2]string // from, to
	for _, lr := range tl.localResources {
		if resources[lr.name] {
			v = append(v, "local_resource "+lr.name+" is defined twice")
		}
		resources[lr.name] = true
		for _, d := range lr.resourceDeps {
			deps = append(deps, [2]string{lr.name, d})
		}
		for _, d := range lr.deps {
			if _, err := os.Stat(repoPath(d)); err != nil {
				v = append(v, fmt.Sprintf("local_resource %s: dep %s does not exist", lr.name, d))
			}
		}
		for _, l := range lr.labels {
			if !tiltLabel.MatchString(l) {
				v = append(v, fmt.Sprintf("local_resource %s: invalid label %q", lr.name, l))
			}
		}
	}
	for w := range workloads {
		resources[w] = true
	}
	configured := map[string]k8sResource{}
	for _, kr := range tl.k8sResources {
		name := kr.workload
		switch {
		case kr.workload != "":
			if workloads[kr.workload] == nil {
				v = append(v, "k8s_resource names workload "+kr.workload+", which no manifest defines")
			}
			if kr.newName != "" {
				delete(resources, kr.workload)
				name = kr.newName
			}
			configured[kr.workload] = kr
		case kr.newName != "" && len(kr.objects) > 0:
			name = kr.newName
		default:
			v = append(v, "k8s_resource needs a workload, or objects and a new_name")
			continue
		}
		resources[name] = true
		for _, d := range kr.resourceDeps {
			deps = append(deps, [2]string{name, d})
		}
		for _, sel := range kr.objects {
			if n := matchObjects(tl.objects, sel); n != 1 {
				v = append(v, fmt.Sprintf("k8s_resource %s: object selector %q matches %d objects, want 1", name, sel, n))
			}
		}
		for _, l := range kr.labels {
			if !tiltLabel.MatchString(l) {
				v = append(v, fmt.Sprintf("k8s_resource %s: invalid label %q", name, l))
			}
		}
	}
	for _, d := range deps {
		if !resources[d[1]] {
			v = append(v, fmt.Sprintf("%s: resource_deps names %q, which is no resource", d[0], d[1]))
		}
	}
	if cyc := cycle(deps); cyc != "" {
		v = append(v, "resource_deps form a cycle: "+cyc)
	}
	for w := range workloads {
		if _, ok := configured[w]; !ok {
			v = append(v, "workload "+w+" has no k8s_resource (labels, port-forwards, dependencies)")
		}
	}

	// Images: every docker_build is deployed; its Dockerfile exists; its live
	// update syncs from inside its context.
	built := map[string]dockerBuild{}
	for _, db := range tl.dockerBuilds {
		if _, dup := built[db.ref]; dup {
			v = append(v, "docker_build "+db.ref+" is defined twice")
		}
		built[db.ref] = db
		if len(images[db.ref]) == 0 {
			v = append(v, "docker_build image "+db.ref+" is used by no manifest")
		}
		if _, err := os.Stat(repoPath(db.dockerfile)); err != nil {
			v = append(v, fmt.Sprintf("docker_build %s: dockerfile %s does not exist", db.ref, db.dockerfile))
		}
		for _, s := range db.liveUpdate {
			if s.kind == "sync" && !strings.HasPrefix(path.Clean(s.src)+"/", path.Clean(db.context)+"/") {
				v = append(v, fmt.Sprintf("docker_build %s: live_update syncs %s, outside its context %s", db.ref, s.src, db.context))
			}
			if s.kind == "sync" && !path.IsAbs(s.dest) {
				v = append(v, fmt.Sprintf("docker_build %s: live_update sync target %s is not absolute", db.ref, s.dest))
			}
		}
	}

	// Every service: compiled on the host, built, live-updated, and each of its
	// workloads a resource with port-forwards, after Consul and Kafka.
	ports := map[int]string{}
	for _, svc := range services {
		ref := "fedsync/" + svc
		var compile *localResource
		for i, lr := range tl.localResources {
			if strings.Contains(lr.cmd, "go build") && strings.Contains(lr.cmd, "./services/"+svc+"/cmd/"+svc) {
				compile = &tl.localResources[i]
			}
		}
		if compile == nil {
			v = append(v, "service "+svc+": no local_resource compiles ./services/"+svc+"/cmd/"+svc)
			continue
		}
		if !strings.Contains(compile.cmd, "CGO_ENABLED=0") {
			v = append(v, "service "+svc+": the compile is not static (CGO_ENABLED=0)")
		}
		db, ok := built[ref]
		if !ok {
			v = append(v, "service "+svc+": no docker_build of "+ref)
			continue
		}
		var synced, restarted bool
		for _, s := range db.liveUpdate {
			switch s.kind {
			case "sync":
				if strings.Contains(compile.cmd, "-o "+s.src) {
					synced = true
				}
			case "run":
				restarted = true
			}
		}
		if !synced || !restarted {
			v = append(v, fmt.Sprintf("service %s: live_update must sync the binary %s compiles and restart it (sync: %v, run: %v)", svc, compile.name, synced, restarted))
		}
		if len(images[ref]) == 0 {
			v = append(v, "service "+svc+": no workload runs "+ref)
		}
		for _, w := range images[ref] {
			kr, ok := configured[w]
			if !ok {
				continue // reported above
			}
			for _, need := range []string{"consul", "kafka", compile.name} {
				if !slices.Contains(kr.resourceDeps, need) {
					v = append(v, fmt.Sprintf("k8s_resource %s: resource_deps lacks %s", w, need))
				}
			}
			if len(kr.labels) == 0 {
				v = append(v, "k8s_resource "+w+": no labels")
			}
			forwarded := map[int]bool{}
			for _, pf := range kr.portForwards {
				forwarded[pf.container] = true
			}
			for _, c := range workloads[w].Spec.Containers {
				for _, p := range c.Ports {
					if p.Name == "raft" {
						continue // replica to replica only: nothing on the host speaks it
					}
					if !forwarded[int(p.ContainerPort)] {
						v = append(v, fmt.Sprintf("k8s_resource %s: container port %s (%d) is not forwarded", w, p.Name, p.ContainerPort))
					}
				}
			}
		}
	}
	for _, kr := range tl.k8sResources {
		for _, pf := range kr.portForwards {
			name := kr.workload + kr.newName
			if other, dup := ports[pf.local]; dup {
				v = append(v, fmt.Sprintf("local port %d is forwarded by both %s and %s", pf.local, other, name))
			}
			ports[pf.local] = name
		}
	}
	v = append(v, checkTiltTLS(tl, configured, images)...)
	sort.Strings(v)
	return v
}

// matchObjects counts the objects a Tilt object selector ("name[:kind[:namespace]]") matches.
func matchObjects(objs []object, sel string) int {
	parts := strings.Split(sel, ":")
	n := 0
	for _, o := range objs {
		if o.Name != parts[0] {
			continue
		}
		if len(parts) > 1 && !strings.EqualFold(o.Kind, parts[1]) {
			continue
		}
		if len(parts) > 2 && o.Namespace != parts[2] {
			continue
		}
		n++
	}
	return n
}

func cycle(deps [][2]string) string {
	next := map[string][]string{}
	for _, d := range deps {
		next[d[0]] = append(next[d[0]], d[1])
	}
	state := map[string]int{} // 1 visiting, 2 done
	var stack []string
	var visit func(n string) string
	visit = func(n string) string {
		switch state[n] {
		case 1:
			return strings.Join(append(stack, n), " -> ")
		case 2:
			return ""
		}
		state[n] = 1
		stack = append(stack, n)
		for _, m := range next[n] {
			if c := visit(m); c != "" {
				return c
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = 2
		return ""
	}
	for n := range next {
		if c := visit(n); c != "" {
			return c
		}
	}
	return ""
}

// TestTiltfile evaluates the Tiltfile and checks what it would do.
func TestTiltfile(t *testing.T) {
	tl := evalTiltfile(t)
	for _, v := range checkTilt(tl) {
		t.Error(v)
	}
	// What Tilt deploys is complete: every reference resolves within it.
	report(t, "objects Tilt deploys", checkRefs(tl.objects, nil))
	// ... with mutual TLS on, from the Secrets Tilt generates.
	report(t, "mutual TLS of what Tilt deploys", checkMutualTLS(tl.objects))
	// The data-type registry ConfigMap is config/datatypes.yaml.
	want := readFile(t, "config/datatypes.yaml")
	found := false
	for _, cm := range objectsOf[*corev1.ConfigMap](tl.objects) {
		if cm.Name == "fedsync-datatypes" {
			found = true
			if cm.Data["datatypes.yaml"] != want {
				t.Error("ConfigMap fedsync-datatypes does not hold config/datatypes.yaml")
			}
		}
	}
	if !found {
		t.Error("the Tiltfile deploys no ConfigMap fedsync-datatypes")
	}
	for _, l := range tl.loads {
		t.Logf("load(%q)", l)
	}
	t.Logf("%d objects, %d local_resources, %d docker_builds, %d k8s_resources",
		len(tl.objects), len(tl.localResources), len(tl.dockerBuilds), len(tl.k8sResources))
}

// TestTiltfileChecksFail evaluates broken variants of the real Tiltfile and
// requires each breakage to be reported.
func TestTiltfileChecksFail(t *testing.T) {
	src := readFile(t, "Tiltfile")
	cases := []struct {
		name   string
		mutate func(string) string
		want   string
	}{
		{"unknown built-in", func(s string) string { return s + "\ndocker_biuld('fedsync/x', '.')\n" }, "undefined: docker_biuld"},
		{"misspelled keyword", func(s string) string {
			return s + "\nlocal_resource('x', cmd='true', resource_dep=['kafka'])\n"
		}, "unexpected keyword argument \"resource_dep\""},
		{"network extension", func(s string) string {
			return "load('ext://restart_process', 'docker_build_with_restart')\n" + s
		}, "vendor it into tilt/"},
		{"resource_deps naming no resource", func(s string) string {
			return s + "\nlocal_resource('smoke', cmd='true', resource_deps=['kafak'])\n"
		}, `resource_deps names "kafak"`},
		{"unused docker_build image", func(s string) string {
			return s + "\ndocker_build('fedsync/unused', '.fedsync/tilt/authn', dockerfile='tilt/Dockerfile.dev')\n"
		}, "fedsync/unused is used by no manifest"},
		{"service without a resource", func(s string) string {
			return replaceLine(s, "{'name': 'healthmonitor',", "")
		}, "service healthmonitor: no local_resource"},
		{"workload without k8s_resource", func(s string) string {
			return s + "\nk8s_yaml(encode_yaml({'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': {'name': 'orphan', 'namespace': 'fedsync'}, " +
				"'spec': {'selector': {'matchLabels': {'app': 'orphan'}}, 'template': {'metadata': {'labels': {'app': 'orphan'}}, " +
				"'spec': {'containers': [{'name': 'orphan', 'image': 'fedsync/authn'}]}}}}))\n"
		}, "workload orphan has no k8s_resource"},
		{"dependency cycle", func(s string) string {
			return s + "\nlocal_resource('a', cmd='true', resource_deps=['b'])\nlocal_resource('b', cmd='true', resource_deps=['a'])\n"
		}, "cycle"},
		{"no fedctl tls issue before reading its files", func(s string) string {
			return replaceLine(s, "local('go run ./tools/cmd/fedctl tls issue", "")
		}, "nothing the Tiltfile ran before produces it"},
		{"a service without a certificate", func(s string) string {
			return strings.Replace(s, "' '.join([svc['name'] for svc in SERVICES])", "' '.join([svc['name'] for svc in SERVICES if svc['name'] != 'healthmonitor'])", 1)
		}, "does not produce .fedsync/dev/tls/healthmonitor.pem"},
		{"a Secret with another service's certificate", func(s string) string {
			return strings.Replace(s, "TLS_DIR + '/' + svc['name'] + '.pem'", "TLS_DIR + '/merge.pem'", 1)
		}, "Secret fedsync-tls-authn: tls.crt"},
		{"the CA's key in a Secret", func(s string) string {
			return strings.Replace(s, "TLS_DIR + '/ca.pem'", "TLS_DIR + '/ca-key.pem'", 1)
		}, "the CA's private key"},
		{"a Secret without its CA", func(s string) string {
			return replaceLine(s, "'ca.crt': str(read_file(", "")
		}, "Secret fedsync-tls-merge: ca.crt"},
		{"a workload not waiting for its Secret", func(s string) string {
			return strings.Replace(s, "'consul', 'kafka', 'tls']", "'consul', 'kafka']", 1)
		}, "resource_deps lacks tls"},
		{"TLS Secrets in no resource", func(s string) string {
			return replaceLine(s, "k8s_resource(new_name='tls'", "")
		}, "is in no k8s_resource"},
		{"port-forward collision", func(s string) string {
			return s + "\nk8s_resource('kafka', port_forwards=[port_forward(8500, 9092)])\n"
		}, "local port 8500 is forwarded by both"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mutated := c.mutate(src)
			if mutated == src {
				t.Fatal("the mutation did not change the Tiltfile")
			}
			tl, err := evalTiltfileSource(mutated)
			var problems []string
			if err != nil {
				problems = []string{err.Error()}
			} else {
				problems = checkTilt(tl)
			}
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, c.want) }) {
				t.Fatalf("want a problem containing %q, got %q", c.want, problems)
			}
		})
	}
}

// replaceLine replaces the line that contains marker (which must exist).
func replaceLine(s, marker, with string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.Contains(l, marker) {
			lines[i] = with
			return strings.Join(lines, "\n")
		}
	}
	return s
}

func readFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(repoPath(rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")))
}
