// Package backuptest starts a real S3-compatible server for tests: s3proxy
// (fetched by scripts/s3proxy.sh) on loopback over a temporary directory.
package backuptest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/fedsync/fedsync/libs/backup"
)

// Credentials of the test server.
const (
	AccessKey = "fedsync-test"
	SecretKey = "fedsync-test-secret"
)

// jar finds the s3proxy jar: $FEDSYNC_S3PROXY_JAR, or what scripts/s3proxy.sh
// fetched into .fedsync/s3proxy of the repository.
func jar() string {
	if j := os.Getenv("FEDSYNC_S3PROXY_JAR"); j != "" {
		return j
	}
	_, file, _, _ := runtime.Caller(0)
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(file), "..", "..", "..", ".fedsync", "s3proxy", "s3proxy-*-jar-with-dependencies.jar"))
	if len(matches) > 0 {
		return matches[len(matches)-1]
	}
	return ""
}

// StartS3 starts s3proxy on a free loopback port and returns the options
// that reach it; it stops with the test. Without the jar (or Java) the test
// is skipped, or fails when FEDSYNC_REQUIRE_S3PROXY=1 (CI).
func StartS3(t testing.TB) backup.S3Options {
	t.Helper()
	j := jar()
	_, javaErr := exec.LookPath("java")
	if j == "" || javaErr != nil {
		msg := "s3proxy is not here (run scripts/s3proxy.sh fetch; needs Java 17 and Maven)"
		if os.Getenv("FEDSYNC_REQUIRE_S3PROXY") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "s3proxy.conf")
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	props := fmt.Sprintf("s3proxy.endpoint=http://%s\ns3proxy.authorization=aws-v2-or-v4\ns3proxy.identity=%s\ns3proxy.credential=%s\njclouds.provider=filesystem\njclouds.filesystem.basedir=%s\n",
		addr, AccessKey, SecretKey, data)
	if err := os.WriteFile(conf, []byte(props), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "s3proxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("java", "-Xmx256m", "-jar", j, "--properties", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		logf.Close()
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-exited:
			out, _ := os.ReadFile(logf.Name())
			t.Fatalf("s3proxy exited: %v\n%s", err, out)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("s3proxy did not answer within 60 s")
		}
	}
	return backup.S3Options{Endpoint: addr, Insecure: true, AccessKey: AccessKey, SecretKey: SecretKey, Region: "us-east-1"}
}
