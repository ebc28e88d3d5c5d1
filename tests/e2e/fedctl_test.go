package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedsync/fedsync/tools/devstack"
)

// fedctl runs the fedctl binary against the stack's na edge with its own
// token cache, feeding stdin; it returns the exit status and both outputs.
type fedctlRunner struct {
	t     *testing.T
	env   []string
	stack *devstack.Stack
}

func newFedctl(t *testing.T, s *devstack.Stack) *fedctlRunner {
	return &fedctlRunner{t: t, stack: s, env: []string{
		"FEDCTL_CREDENTIALS=" + filepath.Join(t.TempDir(), "credentials.json"),
		"FEDSYNC_EDGE=" + s.EdgeURL("na"), "HOME=" + t.TempDir(), "PATH=/usr/bin:/bin",
	}}
}

func (f *fedctlRunner) run(stdin string, args ...string) (int, string, string) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "fedctl"), args...)
	cmd.Env = f.env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		f.t.Fatalf("fedctl %v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

// must runs fedctl and wants exit status want.
func (f *fedctlRunner) must(want int, stdin string, args ...string) string {
	f.t.Helper()
	code, out, errs := f.run(stdin, args...)
	if code != want {
		f.t.Fatalf("fedctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out, errs)
	}
	return out + errs
}

func (f *fedctlRunner) login(client string) {
	f.t.Helper()
	f.must(0, clientSecret(f.t, f.stack, client)+"\n", "login", "--client-id", client, "--secret-stdin")
}

// TestFedctlThroughTheMesh runs every fedctl command against the real mesh as a
// person would, with the documented exit statuses: 0 done, 1 failed, 2 usage,
// 3 not logged in, 4 permission denied, 5 not found, 6 version conflict,
// 7 unavailable.
func TestFedctlThroughTheMesh(t *testing.T) {
	s := startStack(t)
	f := newFedctl(t, s)

	// Health needs no login; the table names every service.
	var h struct {
		Services map[string]any `json:"services"`
	}
	code, out, _ := f.run("", "health", "-o", "json")
	if code != 0 && code != 1 {
		t.Fatalf("health: exit %d: %s", code, out)
	}
	if err := json.Unmarshal([]byte(out), &h); err != nil || len(h.Services) != 6 {
		t.Fatalf("health -o json: %v, %d services: %s", err, len(h.Services), out)
	}
	if out := f.must(code, "", "health"); !strings.Contains(out, "broadcaster") || !strings.Contains(out, "federation") {
		t.Fatalf("health table: %s", out)
	}

	// Not logged in, wrong secret, usage.
	if out := f.must(3, "", "get", "ai-007:x"); !strings.Contains(out, "fedctl login") {
		t.Fatalf("not logged in says what to do? %s", out)
	}
	f.must(3, "not-the-secret\n", "login", "--client-id", "ai-007", "--secret-stdin")
	f.must(2, "", "login")
	f.must(2, "", "frobnicate")
	f.must(2, "", "get")
	f.must(2, "", "clients")

	// An agent writes, reads, queries and watches its own documents.
	f.login("ai-007")
	f.must(2, "", "put", "ai-007:cli", "--type", "note", "--patch", "{not json")
	f.must(2, "", "put", "ai-007:cli", "--type", "note", "--patch", "[1]")
	if out := f.must(0, "", "put", "ai-007:cli", "--type", "note", "--patch", `{"a":1}`); !strings.Contains(out, "accepted") {
		t.Fatalf("put: %s", out)
	}
	var st struct {
		Version int64          `json:"version"`
		Value   map[string]any `json:"value"`
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out, _ := f.run("", "get", "ai-007:cli", "-o", "json")
		if code == 0 {
			json.Unmarshal([]byte(out), &st)
			break
		}
		if code != 5 || time.Now().After(deadline) {
			t.Fatalf("get: exit %d %s", code, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.Version != 1 || st.Value["a"] != float64(1) {
		t.Fatalf("get: %+v", st)
	}
	f.must(5, "", "get", "ai-007:nothing-here")
	f.must(4, "", "put", "ai-008:not-mine", "--type", "note", "--patch", `{"a":1}`)
	f.must(6, "", "put", "ai-007:cli", "--type", "note", "--patch", `{"a":2}`, "--consistency", "strong", "--expected-version", "7")
	if out := f.must(0, "", "put", "ai-007:cli", "--type", "note", "--patch", `{"a":2}`, "--consistency", "strong", "--expected-version", "1"); !strings.Contains(out, "committed at version 2") {
		t.Fatalf("strong put: %s", out)
	}
	var items []map[string]any
	if err := json.Unmarshal([]byte(f.must(0, "", "query", "--prefix", "ai-007:", "--all", "-o", "json")), &items); err != nil {
		t.Fatal(err)
	}
	if len(items) == 0 || items[0]["id"] != "ai-007:cli" {
		t.Fatalf("query: %v", items)
	}

	// watch: live changes as JSON lines, stopping after --count.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	watch := exec.CommandContext(ctx, filepath.Join(binDir, "fedctl"), "watch", "--prefix", "ai-007:w", "--count", "2", "-o", "json")
	watch.Env = f.env
	stdout, _ := watch.StdoutPipe()
	var werr bytes.Buffer
	watch.Stderr = &werr
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(werr.String(), "watching") && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	for i := 1; i <= 2; i++ {
		f.must(0, "", "put", "ai-007:w1", "--type", "note", "--patch", `{"n":`+string(rune('0'+i))+`}`)
	}
	var versions []float64
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("watch printed %q", sc.Text())
		}
		versions = append(versions, ev["version"].(float64))
	}
	if err := watch.Wait(); err != nil {
		t.Fatalf("watch: %v (%s)", err, werr.String())
	}
	if len(versions) != 2 || versions[0] != 1 || versions[1] != 2 {
		t.Fatalf("watch saw versions %v", versions)
	}

	// The review queue needs L3.
	f.must(4, "", "conflicts", "list")
	f.login("coordinator")
	f.must(0, "", "conflicts", "list")
	f.must(2, "", "conflicts", "resolve", "c-x", "--choice", "neither")
	if code, out, errs := f.run("", "conflicts", "resolve", "no-such-conflict", "--choice", "local"); code != 5 && code != 1 {
		t.Fatalf("resolve unknown: exit %d %s %s", code, out, errs)
	}
	f.must(4, "", "clients", "list")

	// Clients and keys need L4.
	f.login("admin")
	var created struct {
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal([]byte(f.must(0, "", "clients", "create", "ai-900", "--region", "na", "-o", "json")), &created); err != nil || created.ClientSecret == "" {
		t.Fatalf("clients create: %v %+v", err, created)
	}
	if out := f.must(0, "", "clients", "list"); !strings.Contains(out, "ai-900") {
		t.Fatalf("clients list: %s", out)
	}
	f.must(0, "", "clients", "disable", "ai-900")
	other := newFedctl(t, s)
	other.must(3, created.ClientSecret+"\n", "login", "--client-id", "ai-900", "--secret-stdin")
	f.must(0, "", "clients", "enable", "ai-900")
	other.must(0, created.ClientSecret+"\n", "login", "--client-id", "ai-900", "--secret-stdin")
	var rotated struct {
		ClientSecret string `json:"client_secret"`
	}
	json.Unmarshal([]byte(f.must(0, "", "clients", "rotate", "ai-900", "-o", "json")), &rotated)
	if rotated.ClientSecret == "" || rotated.ClientSecret == created.ClientSecret {
		t.Fatalf("rotate gave %q", rotated.ClientSecret)
	}
	other.must(3, created.ClientSecret+"\n", "login", "--client-id", "ai-900", "--secret-stdin")
	other.must(0, rotated.ClientSecret+"\n", "login", "--client-id", "ai-900", "--secret-stdin")
	f.must(0, "", "keys", "list")
	f.must(0, "", "keys", "rotate")

	// Pause: writes get 503 (exit 7) until resume.
	f.must(0, "", "pause", "--reason", "fedctl test")
	deadline = time.Now().Add(20 * time.Second)
	for {
		code, _, _ := other.run("", "put", "ai-900:p", "--type", "note", "--patch", `{"a":1}`)
		if code == 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("put while paused: exit %d", code)
		}
		time.Sleep(200 * time.Millisecond)
	}
	f.must(0, "", "resume")
	deadline = time.Now().Add(20 * time.Second)
	for {
		code, _, _ := other.run("", "put", "ai-900:p", "--type", "note", "--patch", `{"a":1}`)
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("put after resume: exit %d", code)
		}
		time.Sleep(200 * time.Millisecond)
	}

	if out := f.must(0, "", "completion", "bash"); !strings.Contains(out, "bash completion") {
		t.Fatalf("completion bash: %.200s", out)
	}
}
