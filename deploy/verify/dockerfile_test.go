package verify

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// instruction is one parsed Dockerfile line.
type instruction struct {
	cmd   string   // lower case: from, run, copy, user, ...
	args  []string // the words after it
	flags []string // --from=..., --chmod=..., --platform=...
	json  bool     // exec form (ENTRYPOINT ["..."])
	line  int
}

type stage struct {
	name, image string
	insts       []instruction
}

// parseDockerfile parses with BuildKit's parser and splits into stages.
func parseDockerfile(text string) ([]stage, error) {
	res, err := parser.Parse(strings.NewReader(text))
	if err != nil {
		return nil, err
	}
	var stages []stage
	for _, n := range res.AST.Children {
		in := instruction{cmd: strings.ToLower(n.Value), flags: n.Flags, json: n.Attributes["json"], line: n.StartLine}
		for a := n.Next; a != nil; a = a.Next {
			in.args = append(in.args, a.Value)
		}
		if in.cmd == "from" {
			st := stage{}
			if len(in.args) > 0 {
				st.image = in.args[0]
			}
			if len(in.args) == 3 && strings.EqualFold(in.args[1], "as") {
				st.name = in.args[2]
			}
			stages = append(stages, st)
		}
		if len(stages) == 0 {
			continue // ARG before the first FROM
		}
		stages[len(stages)-1].insts = append(stages[len(stages)-1].insts, in)
	}
	if len(stages) == 0 {
		return nil, fmt.Errorf("no FROM")
	}
	return stages, nil
}

// checkDockerfile: every base image is pinned (a version tag or a digest; scratch
// and earlier stages aside), and the final stage runs as a numeric non-root user
// with an exec-form entrypoint.
func checkDockerfile(name, text string) []string {
	stages, err := parseDockerfile(text)
	if err != nil {
		return []string{name + ": " + err.Error()}
	}
	var v []string
	names := map[string]bool{}
	for _, st := range stages {
		img := st.image
		switch {
		case names[img] || img == "scratch":
		case !pinnedTag.MatchString(imageTag(img)):
			v = append(v, fmt.Sprintf("%s: base image %s is not pinned to a version", name, img))
		}
		if st.name != "" {
			names[st.name] = true
		}
	}
	final := stages[len(stages)-1]
	user := ""
	entrypoint := false
	for _, in := range final.insts {
		switch in.cmd {
		case "user":
			user = strings.Join(in.args, " ")
		case "entrypoint":
			entrypoint = in.json
		}
	}
	uid, gid, _ := strings.Cut(user, ":")
	switch n, err := strconv.Atoi(uid); {
	case user == "":
		v = append(v, name+": the final stage sets no USER, so it runs as root")
	case err != nil:
		v = append(v, fmt.Sprintf("%s: final USER %q is not numeric; Kubernetes' runAsNonRoot can only verify a numeric uid", name, user))
	case n == 0:
		v = append(v, name+": the final stage runs as uid 0")
	}
	if g, err := strconv.Atoi(gid); gid != "" && (err != nil || g == 0) {
		v = append(v, fmt.Sprintf("%s: final USER group %q is root or not numeric", name, gid))
	}
	if !entrypoint {
		v = append(v, name+": the final stage needs an exec-form ENTRYPOINT [\"...\"] (signals reach the service)")
	}
	return v
}

func dockerfiles(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, g := range []string{"tilt/Dockerfile*", "services/*/Dockerfile*"} {
		m, err := filepath.Glob(repoPath(g))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m {
			rel, _ := filepath.Rel(repoRoot(), p)
			out = append(out, filepath.ToSlash(rel))
		}
	}
	if len(out) == 0 {
		t.Fatal("no Dockerfile found")
	}
	return out
}

// TestDockerfiles parses every Dockerfile with BuildKit's parser and checks it.
func TestDockerfiles(t *testing.T) {
	for _, df := range dockerfiles(t) {
		for _, v := range checkDockerfile(df, readFile(t, df)) {
			t.Error(v)
		}
	}
}

// TestReleaseDockerfile: tilt/Dockerfile builds any service as a static binary
// into an empty (scratch or distroless) image, and its build context (the
// repository root less .dockerignore) holds the whole Go workspace.
func TestReleaseDockerfile(t *testing.T) {
	stages, err := parseDockerfile(readFile(t, "tilt/Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	final := stages[len(stages)-1]
	if final.image != "scratch" && !strings.HasPrefix(final.image, "gcr.io/distroless/static") {
		t.Errorf("final image is %s, want scratch or distroless static", final.image)
	}
	var build string
	for _, st := range stages {
		for _, in := range st.insts {
			switch in.cmd {
			case "run":
				build += strings.Join(in.args, " ") + "\n"
			case "env": // key value pairs
				for i := 0; i+1 < len(in.args); i += 2 {
					build += in.args[i] + "=" + in.args[i+1] + "\n"
				}
			}
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "go build", "./services/${SERVICE}/cmd/${SERVICE}"} {
		if !strings.Contains(build, want) {
			t.Errorf("the build stage lacks %q", want)
		}
	}

	// The context: what .dockerignore lets through.
	f, err := os.Open(repoPath(".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	ignored := func(p string) bool {
		m, err := pm.MatchesOrParentMatches(p)
		return err == nil && m
	}
	need := []string{"go.work", "go.work.sum"}
	for _, dir := range goWorkUses(t) {
		need = append(need, dir+"/go.mod")
		if _, err := os.Stat(repoPath(dir + "/go.sum")); err == nil {
			need = append(need, dir+"/go.sum")
		}
	}
	for _, svc := range services {
		need = append(need, "services/"+svc+"/cmd/"+svc+"/main.go")
	}
	for _, p := range need {
		if ignored(p) {
			t.Errorf(".dockerignore drops %s, which the build needs", p)
		}
		if _, err := os.Stat(repoPath(p)); err != nil {
			t.Errorf("the build needs %s: %v", p, err)
		}
	}
	for _, p := range []string{".git/HEAD", ".fedsync/bin/authn", "deploy/verify/go.mod", "services/authn/service_test.go"} {
		if !ignored(p) {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}
}

// goWorkUses lists the module directories of go.work.
func goWorkUses(t *testing.T) []string {
	t.Helper()
	text := readFile(t, "go.work")
	var dirs []string
	if m := regexp.MustCompile(`(?s)use\s*\((.*?)\)`).FindStringSubmatch(text); m != nil {
		for _, l := range strings.Split(m[1], "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "//") {
				dirs = append(dirs, strings.TrimPrefix(l, "./"))
			}
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^use\s+(\S+)`).FindAllStringSubmatch(text, -1) {
		if m[1] != "(" {
			dirs = append(dirs, strings.TrimPrefix(m[1], "./"))
		}
	}
	if len(dirs) == 0 {
		t.Fatal("no use directive in go.work")
	}
	return dirs
}

// TestDevDockerfileContext: what tilt/Dockerfile.dev copies is what the Tiltfile's
// compile step writes into that image's context.
func TestDevDockerfileContext(t *testing.T) {
	tl := evalTiltfile(t)
	for _, db := range tl.dockerBuilds {
		stages, err := parseDockerfile(readFile(t, db.dockerfile))
		if err != nil {
			t.Fatal(err)
		}
		var cmd string
		for _, lr := range tl.localResources {
			if strings.Contains(lr.cmd, db.context) {
				cmd += lr.cmd
			}
		}
		for _, st := range stages {
			for _, in := range st.insts {
				if (in.cmd != "copy" && in.cmd != "add") || slices.ContainsFunc(in.flags, func(f string) bool { return strings.HasPrefix(f, "--from") }) {
					continue
				}
				for _, src := range in.args[:len(in.args)-1] {
					if !strings.Contains(cmd, src) {
						t.Errorf("%s (%s): COPY %s, which no local_resource writes into the context %s", db.ref, db.dockerfile, src, db.context)
					}
				}
			}
		}
	}
}

// TestDockerfileChecksFail: the checks reject broken Dockerfiles.
func TestDockerfileChecksFail(t *testing.T) {
	good := "FROM golang:1.26.8 AS build\nRUN go build -o /out/x .\nFROM scratch\nCOPY --from=build /out/x /x\nUSER 65532:65532\nENTRYPOINT [\"/x\"]\n"
	if v := checkDockerfile("good", good); len(v) > 0 {
		t.Fatalf("good Dockerfile rejected: %v", v)
	}
	for name, c := range map[string]struct{ text, want string }{
		"no user":          {strings.Replace(good, "USER 65532:65532\n", "", 1), "no USER"},
		"root user":        {strings.Replace(good, "USER 65532:65532", "USER 0", 1), "uid 0"},
		"root by name":     {strings.Replace(good, "USER 65532:65532", "USER root", 1), "not numeric"},
		"user in build":    {strings.Replace(strings.Replace(good, "USER 65532:65532\n", "", 1), "RUN go", "USER 65532\nRUN go", 1), "no USER"},
		"unpinned base":    {strings.Replace(good, "golang:1.26.8", "golang:latest", 1), "not pinned"},
		"untagged base":    {strings.Replace(good, "golang:1.26.8", "golang", 1), "not pinned"},
		"shell entrypoint": {strings.Replace(good, `ENTRYPOINT ["/x"]`, "ENTRYPOINT /x", 1), "exec-form"},
	} {
		got := checkDockerfile(name, c.text)
		if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, c.want) }) {
			t.Errorf("%s: want a problem containing %q, got %v", name, c.want, got)
		}
	}
}
