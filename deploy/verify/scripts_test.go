package verify

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// --- deploy/rollback.sh ---

// callLog is one ordered log of the calls the rollback makes: the fake kubectl
// appends its arguments, the fake control APIs their requests.
type callLog struct {
	mu   sync.Mutex
	path string
}

func (l *callLog) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.OpenFile(l.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}

func (l *callLog) lines(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(l.path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// fakeKubectl writes a kubectl that appends "kubectl <args>" to the log, lists the
// given workloads for `get ... -o name`, and fails `rollout undo` of $FAKE_FAIL_UNDO.
func fakeKubectl(t *testing.T, dir, log string, workloads []string) {
	t.Helper()
	script := fmt.Sprintf(`#!/bin/sh
echo "kubectl $*" >> %q
case "$*" in
*" get deployments,statefulsets "*) printf '%%s\n' %s ;;
*"rollout undo "*) if [ -n "${FAKE_FAIL_UNDO:-}" ] && [ "${*##*/}" = "$FAKE_FAIL_UNDO" ]; then echo "error: no rollout history" >&2; exit 1; fi ;;
esac
exit 0
`, log, strings.Join(workloads, " "))
	must(t, os.WriteFile(filepath.Join(dir, "kubectl"), []byte(script), 0o755))
}

// fakeControl is one region's edge: it logs each request, with the token it got.
func fakeControl(t *testing.T, region string, log *callLog, fail map[string]bool) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.add(fmt.Sprintf("%s %s %s auth=%q", region, r.Method, r.URL.Path, r.Header.Get("Authorization")))
		if fail[r.URL.Path] {
			http.Error(w, `{"error":{"code":"forbidden"}}`, http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return srv
}

type rollbackRun struct {
	out    string
	err    error
	took   time.Duration
	calls  []string
	served int
}

func runRollback(t *testing.T, env []string, failPaths map[string]bool, args ...string) rollbackRun {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("deploy/rollback.sh needs curl: ", err)
	}
	dir := t.TempDir()
	log := &callLog{path: filepath.Join(dir, "calls.log")}
	bin := filepath.Join(dir, "bin")
	must(t, os.Mkdir(bin, 0o755))
	fakeKubectl(t, bin, log.path, []string{
		"statefulset.apps/authn", "deployment.apps/broadcaster-eu", "deployment.apps/broadcaster-na",
		"deployment.apps/healthmonitor", "deployment.apps/merge", "deployment.apps/validation-eu",
		"deployment.apps/validation-na", "statefulset.apps/statestore",
	})
	na, eu := fakeControl(t, "na", log, failPaths), fakeControl(t, "eu", log, failPaths)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{repoPath("deploy/rollback.sh"),
		"--control-url", na.URL, "--control-url", eu.URL + "/", "--context", "kind-fedsync"}, args...)...)
	cmd.Env = append(append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH")), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	r := rollbackRun{out: out.String(), err: err, took: time.Since(start), calls: log.lines(t)}
	for _, c := range r.calls {
		if strings.HasPrefix(c, "na ") || strings.HasPrefix(c, "eu ") {
			r.served++
		}
	}
	return r
}

const testToken = "l4-token-for-the-test"

// wantRollbackCalls is the runbook, in order: pause every region, undo every
// workload (statestore first, the regional hubs last), wait for each, resume.
func wantRollbackCalls() []string {
	kube := "kubectl --context kind-fedsync --namespace fedsync "
	auth := fmt.Sprintf("auth=%q", "Bearer "+testToken)
	order := []string{"statefulset.apps/statestore", "deployment.apps/merge", "statefulset.apps/authn", "deployment.apps/healthmonitor",
		"deployment.apps/validation-eu", "deployment.apps/validation-na", "deployment.apps/broadcaster-eu", "deployment.apps/broadcaster-na"}
	calls := []string{
		kube + "get deployments,statefulsets -l app.kubernetes.io/part-of=fedsync -o name",
		"na POST /api/v1/control/pause " + auth,
		"eu POST /api/v1/control/pause " + auth,
	}
	for _, w := range order {
		calls = append(calls, kube+"rollout undo "+w)
	}
	for _, w := range order {
		calls = append(calls, kube+"rollout status "+w+" --timeout 5m")
	}
	return append(calls, "na POST /api/v1/control/resume "+auth, "eu POST /api/v1/control/resume "+auth)
}

// TestRollback runs deploy/rollback.sh against a fake kubectl and two fake
// regional control APIs and checks the calls, their order and the drain wait.
func TestRollback(t *testing.T) {
	r := runRollback(t, []string{"FEDSYNC_CONTROL_TOKEN=" + testToken}, nil, "--drain", "1")
	if r.err != nil {
		t.Fatalf("rollback failed: %v\n%s", r.err, r.out)
	}
	want := wantRollbackCalls()
	if strings.Join(r.calls, "\n") != strings.Join(want, "\n") {
		t.Fatalf("calls:\n%s\nwant:\n%s\noutput:\n%s", strings.Join(r.calls, "\n"), strings.Join(want, "\n"), r.out)
	}
	if r.took < time.Second {
		t.Errorf("took %s: the 1 s drain did not happen", r.took)
	}
	if strings.Contains(r.out, testToken) {
		t.Error("the token appears in the output")
	}
}

// TestRollbackDryRun: --dry-run prints the whole runbook and calls nothing.
func TestRollbackDryRun(t *testing.T) {
	r := runRollback(t, nil, nil, "--dry-run") // no token needed, default 30 s drain not waited
	if r.err != nil {
		t.Fatalf("dry run failed: %v\n%s", r.err, r.out)
	}
	if len(r.calls) != 0 {
		t.Fatalf("a dry run called: %q", r.calls)
	}
	if r.took > 20*time.Second {
		t.Errorf("a dry run took %s: did it wait the drain?", r.took)
	}
	for _, want := range []string{
		"get deployments,statefulsets -l app.kubernetes.io/part-of=fedsync",
		"/api/v1/control/pause", "sleep 30", "rollout undo statefulset.apps/statestore",
		"rollout undo deployment.apps/validation-<region>", "rollout status", "/api/v1/control/resume",
		"restore from backup",
	} {
		if !strings.Contains(r.out, want) {
			t.Errorf("the dry run does not say %q:\n%s", want, r.out)
		}
	}
	if strings.Index(r.out, "control/pause") > strings.Index(r.out, "rollout undo") ||
		strings.Index(r.out, "rollout undo") > strings.Index(r.out, "control/resume") {
		t.Errorf("the dry run prints the steps out of order:\n%s", r.out)
	}
}

// TestRollbackRestoresABackup: with --restore-backup, step 4 asks the
// statestore (through the first region's edge) to restore the backup, after
// every rollout and before the resume; a failed restore leaves the
// federation paused.
func TestRollbackRestoresABackup(t *testing.T) {
	const id = "statestore-20261201T000000Z-42"
	path := "/api/v1/admin/backups/" + id + "/restore"
	r := runRollback(t, []string{"FEDSYNC_CONTROL_TOKEN=" + testToken}, nil, "--drain", "0", "--restore-backup", id)
	if r.err != nil {
		t.Fatalf("rollback failed: %v\n%s", r.err, r.out)
	}
	want := wantRollbackCalls()
	restore := fmt.Sprintf("na POST %s auth=%q", path, "Bearer "+testToken)
	want = append(want[:len(want)-2:len(want)-2], restore, want[len(want)-2], want[len(want)-1])
	if strings.Join(r.calls, "\n") != strings.Join(want, "\n") {
		t.Fatalf("calls:\n%s\nwant:\n%s", strings.Join(r.calls, "\n"), strings.Join(want, "\n"))
	}
	failed := runRollback(t, []string{"FEDSYNC_CONTROL_TOKEN=" + testToken}, map[string]bool{path: true}, "--drain", "0", "--restore-backup", id)
	if failed.err == nil || strings.Contains(strings.Join(failed.calls, "\n"), "resume") || !strings.Contains(failed.out, "stays paused") {
		t.Fatalf("a failed restore: err=%v calls=%q\n%s", failed.err, failed.calls, failed.out)
	}
	if bad := runRollback(t, []string{"FEDSYNC_CONTROL_TOKEN=" + testToken}, nil, "--restore-backup", "../etc"); bad.err == nil || len(bad.calls) != 0 {
		t.Fatalf("a bad backup id: err=%v calls=%q", bad.err, bad.calls)
	}
}

// TestRollbackStopsOnFailure: a failed pause rolls nothing back; a failed undo
// leaves the federation paused; no token, no calls.
func TestRollbackStopsOnFailure(t *testing.T) {
	t.Run("pause fails", func(t *testing.T) {
		r := runRollback(t, []string{"FEDSYNC_CONTROL_TOKEN=" + testToken}, map[string]bool{"/api/v1/control/pause": true}, "--drain", "0")
		if r.err == nil {
			t.Fatal("exit status 0 after a failed pause")
		}
		for _, c := range r.calls {
			if strings.Contains(c, "rollout") || strings.Contains(c, "resume") {
				t.Errorf("called %q after the pause failed", c)
			}
		}
	})
	t.Run("undo fails", func(t *testing.T) {
		r := runRollback(t, []string{"FEDSYNC_CONTROL_TOKEN=" + testToken, "FAKE_FAIL_UNDO=merge"}, nil, "--drain", "0")
		if r.err == nil {
			t.Fatal("exit status 0 after a failed undo")
		}
		joined := strings.Join(r.calls, "\n")
		if !strings.Contains(joined, "rollout undo statefulset.apps/statestore") || strings.Contains(joined, "rollout undo statefulset.apps/authn") {
			t.Errorf("want statestore undone and nothing after merge's failure:\n%s", joined)
		}
		if strings.Contains(joined, "resume") {
			t.Errorf("resumed after a failed undo:\n%s", joined)
		}
		if !strings.Contains(r.out, "stays paused") {
			t.Errorf("the output does not say the federation stays paused:\n%s", r.out)
		}
	})
	t.Run("no token", func(t *testing.T) {
		r := runRollback(t, []string{"FEDSYNC_CONTROL_TOKEN="}, nil, "--drain", "0")
		if r.err == nil || len(r.calls) != 0 {
			t.Fatalf("want a failure before any call, got err=%v calls=%q", r.err, r.calls)
		}
	})
}

// --- tilt/live-entrypoint.sh ---

// TestLiveEntrypoint runs the dev image's entrypoint with stand-in services: it
// starts the image's binary, restarts with the synced binary when .restart
// appears, passes SIGTERM on, and exits with a crashed service's status.
func TestLiveEntrypoint(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "service.log")
	live := filepath.Join(dir, "live")
	must(t, os.Mkdir(live, 0o755))
	service := func(version, body string) string {
		return fmt.Sprintf(`#!/bin/sh
echo "%[1]s start $*" >> %[2]q
trap 'echo "%[1]s term" >> %[2]q; exit 0' TERM
%[3]s
while :; do sleep 0.05; done
`, version, log, body)
	}
	imageBin := filepath.Join(dir, "image-service")
	must(t, os.WriteFile(imageBin, []byte(service("v1", "")), 0o755))

	cmd := exec.Command("sh", repoPath("tilt/live-entrypoint.sh"), "-flag=x")
	cmd.Env = append(os.Environ(), "FEDSYNC_IMAGE_BIN="+imageBin, "FEDSYNC_LIVE_DIR="+live, "FEDSYNC_LIVE_POLL=0.1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	must(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	waitLog := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			b, _ := os.ReadFile(log)
			if strings.Contains(string(b), want) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		b, _ := os.ReadFile(log)
		t.Fatalf("the service log never showed %q:\n%s\nentrypoint output:\n%s", want, b, out.String())
	}
	waitLog("v1 start -flag=x")

	// Tilt's live_update: sync the new binary, then touch .restart.
	must(t, os.WriteFile(filepath.Join(live, "fedsync-service"), []byte(service("v2", "")), 0o755))
	must(t, os.WriteFile(filepath.Join(live, ".restart"), nil, 0o644))
	waitLog("v1 term")
	waitLog("v2 start -flag=x")

	// Kubernetes stops the pod: the service gets SIGTERM and the entrypoint exits 0.
	must(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("entrypoint exited with %v after SIGTERM\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the entrypoint did not stop on SIGTERM")
	}
	waitLog("v2 term")

	// A crashing service ends the container with its status (Kubernetes restarts
	// it; the newest binary survives in the emptyDir).
	must(t, os.WriteFile(filepath.Join(live, "fedsync-service"), []byte(service("v3", "exit 3")), 0o755))
	crash := exec.Command("sh", repoPath("tilt/live-entrypoint.sh"))
	crash.Env = cmd.Env
	err := crash.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("want exit status 3 from a crashing service, got %v", err)
	}
	waitLog("v3 start")
}
