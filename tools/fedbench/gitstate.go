package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// GitState is what fedbench records about the code it measured: the commit
// (git rev-parse HEAD) and whether the working tree differed from it (git
// status --porcelain, untracked files included, non-empty = dirty). Results
// from a dirty tree describe code that no commit holds, so they must not be
// committed.
type GitState struct {
	Commit string // full hash; "" outside a git work tree
	Dirty  bool
	// Changes are the first porcelain lines ("M services/merge/batch.go"), and
	// ChangeCount all of them.
	Changes     []string
	ChangeCount int
}

const maxDirtyPaths = 20

// dirtyWarning is printed (and written into the results) when the tree is dirty.
const dirtyWarning = "results from a dirty tree must not be committed"

// readGitState reads the state of the git work tree containing dir. Paths in
// exclude (relative to the work tree's top, e.g. bench/results) do not make the
// tree dirty: fedbench writes its results there, and earlier runs' results do
// not change the code measured.
func readGitState(dir string, exclude ...string) GitState {
	var g GitState
	out, err := gitCmd(dir, "rev-parse", "HEAD")
	if err != nil {
		return g
	}
	g.Commit = strings.TrimSpace(out)
	args := []string{"status", "--porcelain", "--", "."}
	for _, e := range exclude {
		e = filepath.ToSlash(filepath.Clean(e))
		if e == "." || e == "" || strings.HasPrefix(e, "../") || filepath.IsAbs(e) {
			continue
		}
		args = append(args, ":(top,exclude)"+e)
	}
	// Run from the top of the work tree so that "." means all of it.
	top, err := gitCmd(dir, "rev-parse", "--show-toplevel")
	if err != nil {
		return g
	}
	out, err = gitCmd(strings.TrimSpace(top), args...)
	if err != nil {
		// Cannot tell: say so rather than claim a clean tree.
		g.Dirty, g.ChangeCount, g.Changes = true, 1, []string{"git status failed: " + err.Error()}
		return g
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		g.ChangeCount++
		if len(g.Changes) < maxDirtyPaths {
			g.Changes = append(g.Changes, strings.TrimSpace(l))
		}
	}
	g.Dirty = g.ChangeCount > 0
	return g
}

func gitCmd(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
			return "", fmt.Errorf("git %s: %s", args[0], strings.TrimSpace(string(ee.Stderr)))
		}
		return "", err
	}
	return string(out), nil
}

// Short is the abbreviated commit for tables and titles.
func (g GitState) Short() string {
	if g.Commit == "" {
		return "unknown"
	}
	return g.Commit[:min(12, len(g.Commit))]
}

// Describe is the commit with the state of the tree, for reports.
func (g GitState) Describe() string {
	switch {
	case g.Commit == "":
		return "unknown (not a git work tree)"
	case g.Dirty:
		return fmt.Sprintf("%s with uncommitted changes (%d paths)", g.Short(), g.ChangeCount)
	default:
		return g.Short() + " (clean tree)"
	}
}

// Warning is the loud console warning for a dirty tree; "" when clean.
func (g GitState) Warning() string {
	if !g.Dirty {
		return ""
	}
	shown := g.Changes[:min(5, len(g.Changes))]
	more := ""
	if g.ChangeCount > len(shown) {
		more = fmt.Sprintf(", and %d more", g.ChangeCount-len(shown))
	}
	return fmt.Sprintf("WARNING: the working tree has uncommitted changes: %s. Measured: commit %s plus %d changed paths (%s%s)",
		dirtyWarning, g.Short(), g.ChangeCount, strings.Join(shown, "; "), more)
}
