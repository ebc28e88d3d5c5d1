package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
)

// writeSegmented appends n records to the log at path in batches of 10
// (each batch one write), rotating past maxBytes.
func writeSegmented(t *testing.T, path string, n int, seg Segments) {
	t.Helper()
	l, err := OpenSegmented(path, "svc", "svc-1", log.NewNopLogger(), seg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		r := Record{Actor: "ai-001", Action: "state.commit", Data: fmt.Sprintf("doc-%d@1", i), Result: "success"}
		r.Time = time.Now().UTC().Format(time.RFC3339Nano)
		if err := l.writeBatch(r); err != nil {
			t.Fatal(err)
		}
	}
	l.f.Close()
}

func segmentFiles(t *testing.T, path string) []string {
	t.Helper()
	segs, err := segments(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range segs {
		out = append(out, s.path)
	}
	return out
}

// TestSegmentsRotateAndVerifyAsOneChain: the log rotates into segments once
// the active file passes MaxBytes; the chain continues across them and
// across a restart; VerifyFile checks every segment and the active file as
// one chain and names the file of a tampered record or the gap of a
// missing segment.
func TestSegmentsRotateAndVerifyAsOneChain(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	writeSegmented(t, path, 40, Segments{MaxBytes: 2000})
	writeSegmented(t, path, 25, Segments{MaxBytes: 2000}) // a restart goes on with the chain
	segs := segmentFiles(t, path)
	if len(segs) < 3 {
		t.Fatalf("%d segments after 65 records of ~250 bytes rotating at 2000", len(segs))
	}
	n, files, err := VerifyLog(path)
	if err != nil || n != 65 || files != len(segs)+1 {
		t.Fatalf("verify: %d records in %d files, %v", n, files, err)
	}

	// An edited record in a middle segment is found there.
	mid := segs[len(segs)/2]
	orig, _ := os.ReadFile(mid)
	os.WriteFile(mid, []byte(strings.Replace(string(orig), "doc-", "DOC-", 1)), 0o640)
	var se *SegmentError
	if _, err := VerifyFile(path); !errors.As(err, &se) || se.File != mid {
		t.Fatalf("an edited segment: %v", err)
	}
	// A missing segment is a gap.
	os.Remove(mid)
	if _, err := VerifyFile(path); err == nil {
		t.Fatal("a log missing a segment verifies")
	}
	os.WriteFile(mid, orig, 0o640)
	// Records cut off the end of the active file: the head catches it.
	active, _ := os.ReadFile(path)
	lines := strings.SplitAfter(strings.TrimRight(string(active), "\n"), "\n")
	os.WriteFile(path, []byte(strings.Join(lines[:len(lines)-1], "")), 0o640)
	if _, err := VerifyFile(path); err == nil {
		t.Fatal("a log cut at the end verifies")
	}
	os.WriteFile(path, active, 0o640)
	// The oldest segment removed by hand (not by retention): the chain does
	// not start at 1 and no base says why.
	first, _ := os.ReadFile(segs[0])
	os.Remove(segs[0])
	if _, err := VerifyFile(path); err == nil {
		t.Fatal("a log missing its first segment verifies")
	}
	os.WriteFile(segs[0], first, 0o640)
	if _, err := VerifyFile(path); err != nil {
		t.Fatalf("restored: %v", err)
	}
}

// TestSegmentsPastRetentionAreDeleted: segments older than the retention go
// at the next rotation, the newest always stays, and the chain verifies
// from the base they leave.
func TestSegmentsPastRetentionAreDeleted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	writeSegmented(t, path, 40, Segments{MaxBytes: 2000})
	before := segmentFiles(t, path)
	old := time.Now().Add(-48 * time.Hour)
	for _, s := range before {
		os.Chtimes(s, old, old)
	}
	writeSegmented(t, path, 12, Segments{MaxBytes: 2000, Retention: 24 * time.Hour})
	after := segmentFiles(t, path)
	if len(after) == 0 || after[0] == before[0] {
		t.Fatalf("segments before %d, after %d: nothing was deleted", len(before), len(after))
	}
	n, _, err := VerifyLog(path)
	if err != nil || n >= 52 || n == 0 {
		t.Fatalf("verify after retention: %d records, %v", n, err)
	}
	if _, err := os.Stat(path + ".base"); err != nil {
		t.Fatalf("no base: %v", err)
	}
}
