// Package e2e starts the whole mesh as OS processes (the same devstack `make run`
// uses) and tests it through its public edges, as agents would use it. With
// FEDSYNC_TEST_KAFKA set the services use that real Kafka broker.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fedsync/fedsync/libs/kafkatest"
	"github.com/fedsync/fedsync/tools/devstack"
)

var binDir, repoRoot string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fedsync-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	repoRoot = root
	args := []string{"build", "-o", dir + "/"}
	for _, s := range []string{"authn", "validation", "merge", "statestore", "broadcaster", "healthmonitor"} {
		args = append(args, "./services/"+s+"/cmd/"+s)
	}
	args = append(args, "./tools/cmd/fedctl")
	cmd := exec.Command("go", args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build services:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// startStack runs a mesh for one test and stops it when the test ends.
func startStack(t *testing.T) *devstack.Stack {
	t.Helper()
	return startStackWith(t, t.TempDir(), func(*devstack.Options) {})
}

// startStackWith runs a mesh with its state in dir, after tune.
func startStackWith(t *testing.T, dir string, tune func(*devstack.Options)) *devstack.Stack {
	t.Helper()
	opts := devstack.Options{
		BinDir: binDir, StateDir: dir, FreePorts: true, DataTypes: filepath.Join(repoRoot, "config", "datatypes.yaml"),
		Edges: map[string]string{"na": freeAddr(t), "eu": freeAddr(t)},
	}
	if kafkatest.Real() {
		opts.KafkaBrokers = strings.Split(os.Getenv(kafkatest.EnvBrokers), ",")
		opts.KafkaTopicPrefix = fmt.Sprintf("e2e-%d-", time.Now().UnixNano())
	}
	tune(&opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := devstack.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range []string{"authn", "authn-2", "authn-3", "validation-na", "merge", "statestore", "broadcaster-na"} {
				b, _ := os.ReadFile(filepath.Join(opts.StateDir, "logs", name+".log"))
				lines := strings.Split(string(b), "\n")
				t.Logf("--- %s log (last 15 lines)\n%s", name, strings.Join(lines[max(0, len(lines)-15):], "\n"))
			}
		}
		s.Stop()
	})
	return s
}
