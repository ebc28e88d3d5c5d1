package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
)

func writeLog(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, "svc", "svc-1", log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	for i := 0; i < n; i++ {
		l.Record(context.Background(), Record{Actor: "ai-001", Action: "state.commit", Data: "doc@" + string(rune('a'+i)), Result: "success"})
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return path
}

func lines(t *testing.T, path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

func TestChainVerifiesAndContinuesAcrossRestarts(t *testing.T) {
	path := writeLog(t, 5)
	l, _ := Open(path, "svc", "svc-1", log.NewNopLogger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	l.Record(ctx, Record{Actor: "admin", Action: "admin.disable", Data: "ai-009", Result: "success"})
	cancel()
	<-done
	if n, err := VerifyFile(path); err != nil || n != 6 {
		t.Fatalf("verify: %d %v", n, err)
	}
}

// TestVerifierCatchesTampering edits, deletes, reorders and truncates records in
// copies of a log; each is caught at the first bad record.
func TestVerifierCatchesTampering(t *testing.T) {
	path := writeLog(t, 6)
	orig := lines(t, path)
	head, _ := os.ReadFile(path + ".head")
	tests := []struct {
		name     string
		tamper   func([]string) []string
		wantLine int
	}{
		{"edit a field", func(l []string) []string {
			l[2] = strings.Replace(l[2], `"result":"success"`, `"result":"failure"`, 1)
			return l
		}, 3},
		{"edit and rehash one record", func(l []string) []string {
			// Recomputing the edited record's own hash still breaks the next link.
			var r Record
			jsonUnmarshal(l[2], &r)
			r.Actor = "mallory"
			r.Hash = digest(r)
			l[2] = jsonMarshal(r)
			return l
		}, 4},
		{"delete a record", func(l []string) []string { return append(l[:3:3], l[4:]...) }, 4},
		{"reorder two records", func(l []string) []string { l[1], l[2] = l[2], l[1]; return l }, 2},
		{"cut off the end", func(l []string) []string { return l[:4] }, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tampered := tt.tamper(append([]string(nil), orig...))
			_, err := Verify(strings.NewReader(strings.Join(tampered, "\n")+"\n"), bytes.NewReader(head))
			var bad *BadRecord
			if !errors.As(err, &bad) || bad.Line != tt.wantLine {
				t.Fatalf("got %v, want the first bad record at line %d", err, tt.wantLine)
			}
		})
	}
}

// TestFullBufferWaitsInsteadOfDropping: with the writer stuck, a record waits
// for room as long as its caller does; it is dropped (and counted) only when
// the caller's context ends, and arrives once the writer moves.
func TestFullBufferWaitsInsteadOfDropping(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(filepath.Join(dir, "a.log"), "s", "i", log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < cap(l.ch); i++ { // nothing drains: the writer is "stuck"
		l.Record(context.Background(), Record{Action: "x"})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	l.Record(ctx, Record{Action: "given up"})
	if l.Dropped() != 1 {
		t.Fatalf("dropped %d, want 1 counted drop for the caller that gave up", l.Dropped())
	}
	queued := make(chan struct{})
	go func() {
		l.Record(context.Background(), Record{Action: "waits"})
		close(queued)
	}()
	select {
	case <-queued:
		t.Fatal("a record was taken past a full buffer")
	case <-time.After(200 * time.Millisecond):
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(rctx) }()
	<-queued
	for l.Written() < int64(cap(l.ch))+1 {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-done
	if n, err := VerifyFile(filepath.Join(dir, "a.log")); err != nil || n != cap(l.ch)+1 {
		t.Fatalf("verify: %d records, %v", n, err)
	}
}

// TestFailedWriteKeepsTheChain: a write that fails (here: the file is closed
// under the writer) neither advances the chain nor loses the records; after
// the disk comes back the log verifies with every record in it.
func TestFailedWriteKeepsTheChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.log")
	l, err := Open(path, "s", "i", log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := l.writeBatch(Record{Action: "one"}); err != nil {
		t.Fatal(err)
	}
	good := l.f
	bad, _ := os.Open(path) // read-only: writes fail
	l.f = bad
	if err := l.writeBatch(Record{Action: "two"}); err == nil {
		t.Fatal("a write to a read-only file succeeded")
	}
	if l.seq != 1 || len(l.retry) != 1 {
		t.Fatalf("after a failed write seq %d, %d kept", l.seq, len(l.retry))
	}
	bad.Close()
	l.f = good
	if err := l.writeBatch(Record{Action: "three"}); err != nil {
		t.Fatal(err)
	}
	good.Close()
	n, err := VerifyFile(path)
	if err != nil || n != 3 {
		t.Fatalf("verify: %d records, %v", n, err)
	}
	raw, _ := os.ReadFile(path)
	if !strings.Contains(string(raw), `"action":"two"`) {
		t.Fatal("the record of the failed write was lost")
	}
}

func jsonUnmarshal(s string, v any) { _ = json.Unmarshal([]byte(s), v) }

func jsonMarshal(v any) string { b, _ := json.Marshal(v); return string(b) }
