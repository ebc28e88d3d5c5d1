package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gitRepo makes a repository with one commit in a temporary directory.
func gitRepo(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not found")
	}
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	run("init", "-q")
	write(t, filepath.Join(dir, "main.go"), "package main\n")
	write(t, filepath.Join(dir, "bench/results/steady-2026-01-01T000000.json"), "{}\n")
	run("add", ".")
	run("commit", "-q", "-m", "first")
	return dir
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestGitStateCleanAndDirty(t *testing.T) {
	dir := gitRepo(t)
	g := readGitState(dir, "bench/results")
	if len(g.Commit) != 40 || g.Dirty || g.ChangeCount != 0 || g.Warning() != "" {
		t.Fatalf("clean tree: %+v", g)
	}
	if !strings.HasSuffix(g.Describe(), "(clean tree)") {
		t.Fatalf("describe = %q", g.Describe())
	}

	// New results (and changes to old ones) do not make the tree dirty.
	write(t, filepath.Join(dir, "bench/results/steady-2026-01-02T000000.json"), "{}\n")
	write(t, filepath.Join(dir, "bench/results/steady-2026-01-01T000000.json"), "{\"x\":1}\n")
	if g := readGitState(dir, "bench/results"); g.Dirty {
		t.Fatalf("results alone made the tree dirty: %+v", g)
	}
	// Without the exclusion they do.
	if g := readGitState(dir); !g.Dirty || g.ChangeCount != 2 {
		t.Fatalf("no exclusion: %+v", g)
	}

	// A modified file, and an untracked one, do.
	write(t, filepath.Join(dir, "main.go"), "package main\n\nfunc main() {}\n")
	write(t, filepath.Join(dir, "new.go"), "package main\n")
	g = readGitState(filepath.Join(dir, "bench"), "bench/results") // from a subdirectory, too
	if !g.Dirty || g.ChangeCount != 2 {
		t.Fatalf("dirty tree: %+v", g)
	}
	joined := strings.Join(g.Changes, "\n")
	if !strings.Contains(joined, "main.go") || !strings.Contains(joined, "new.go") {
		t.Fatalf("changes = %q", g.Changes)
	}
	w := g.Warning()
	if !strings.Contains(w, "WARNING") || !strings.Contains(w, dirtyWarning) || !strings.Contains(w, g.Short()) {
		t.Fatalf("warning = %q", w)
	}
}

func TestGitStateOutsideARepository(t *testing.T) {
	g := readGitState(t.TempDir())
	if g.Commit != "" || g.Dirty || g.Describe() != "unknown (not a git work tree)" {
		t.Fatalf("outside a repository: %+v", g)
	}
}

func TestReportRecordsDirtyTree(t *testing.T) {
	g := GitState{Commit: "0123456789abcdef0123456789abcdef01234567", Dirty: true, ChangeCount: 3,
		Changes: []string{"M services/merge/batch.go", "?? libs/new/"}}
	r := testReport()
	r.Meta = machine("fedbench -scenario steady", g)
	md := r.Markdown("")
	for _, want := range []string{
		"**Measured on a dirty tree**: commit 0123456789ab plus 3 uncommitted changes",
		"`M services/merge/batch.go`", ", and 1 more",
		"Results from a dirty tree must not be committed.",
		"commit 0123456789ab **with uncommitted changes (dirty tree)**",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md[:min(len(md), 1200)])
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Meta struct {
			Commit     string   `json:"commit"`
			Dirty      bool     `json:"dirty"`
			DirtyCount int      `json:"dirty_count"`
			DirtyPaths []string `json:"dirty_paths"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Meta.Commit != g.Commit || !back.Meta.Dirty || back.Meta.DirtyCount != 3 || len(back.Meta.DirtyPaths) != 2 {
		t.Fatalf("JSON meta = %+v", back.Meta)
	}

	clean := testReport()
	clean.Meta = machine("fedbench", GitState{Commit: g.Commit})
	if md := clean.Markdown(""); strings.Contains(md, "dirty") || !strings.Contains(md, "commit 0123456789ab (clean tree)") {
		t.Fatalf("clean report:\n%s", md)
	}
}
