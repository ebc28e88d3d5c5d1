package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestBenchPruneScript runs scripts/bench-prune.sh (make bench-prune) on a
// made-up results directory.
func TestBenchPruneScript(t *testing.T) {
	script, err := filepath.Abs("../../scripts/bench-prune.sh")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(script); err != nil {
		t.Skip("scripts/bench-prune.sh not found")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not found")
	}
	dir := t.TempDir()
	results := filepath.Join(dir, "results")
	files := []string{
		"steady-2026-11-26T090000.json", "steady-2026-11-26T090000.md", "steady-2026-11-26T090000.svg", // old, not cited
		"steady-2026-11-26T100000.json", "steady-2026-11-26T100000.md", // old, cited
		"steady-2026-11-26T100000-perf-fedsync-closed-loop.pprof", "steady-2026-11-26T100000-perf-fedsync-closed-loop.txt",
		"steady-2026-11-27T080000.json", "steady-2026-11-27T080000.md", // latest steady
		"max-2026-11-26T090000.json", "max-2026-11-26T090000-perf-fedsync-130s.pprof", // the only max: latest
		"overload-2026-11-25T120000.json", "overload-2026-11-26T120000.json", // the first is neither
		"README.md", "notes.txt", // not runs: left alone
	}
	for _, f := range files {
		write(t, filepath.Join(results, f), "x\n")
	}
	doc := filepath.Join(dir, "performance.md")
	write(t, doc, "Files: `bench/results/steady-2026-11-26T100000.*` and `max-2026-11-26T090000-perf-fedsync-130s.pprof`; "+
		"an old run that is gone: conflict-2026-01-01T000000.\n")

	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("bash", append([]string{script, "--dir", results, "--cited", doc}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bench-prune %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	left := func() []string {
		es, err := os.ReadDir(results)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.Name())
		}
		sort.Strings(out)
		return out
	}

	out := run()
	if got := left(); len(got) != len(files) {
		t.Fatalf("the dry run deleted files: %v\n%s", got, out)
	}
	for _, want := range []string{
		"would delete steady-2026-11-26T090000: steady-2026-11-26T090000.json steady-2026-11-26T090000.md steady-2026-11-26T090000.svg",
		"would delete overload-2026-11-25T120000",
		"keep   steady-2026-11-26T100000 (cited): 4 files",
		"keep   steady-2026-11-27T080000 (latest steady)",
		"keep   max-2026-11-26T090000 (latest max, cited): 2 files",
		"cites conflict-2026-01-01T000000, which is not in",
		"would keep 4 runs and delete 2 (dry run",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}

	out = run("--delete")
	want := []string{
		"README.md",
		"max-2026-11-26T090000-perf-fedsync-130s.pprof", "max-2026-11-26T090000.json",
		"notes.txt",
		"overload-2026-11-26T120000.json",
		"steady-2026-11-26T100000-perf-fedsync-closed-loop.pprof", "steady-2026-11-26T100000-perf-fedsync-closed-loop.txt",
		"steady-2026-11-26T100000.json", "steady-2026-11-26T100000.md",
		"steady-2026-11-27T080000.json", "steady-2026-11-27T080000.md",
	}
	if got := left(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after --delete:\n%s\nwant:\n%s\noutput:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), out)
	}
	if !strings.Contains(out, "kept 4 runs, deleted 2") {
		t.Errorf("output: %s", out)
	}
	// Nothing left to prune.
	if out := run(); !strings.Contains(out, "delete 0") {
		t.Errorf("second dry run: %s", out)
	}
}
