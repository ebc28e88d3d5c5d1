package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestUsageAndMissingFile(t *testing.T) {
	if code := run(nil); code != 2 {
		t.Fatalf("no arguments: exit %d, want 2", code)
	}
	if code := run([]string{"audit", "verify", filepath.Join(t.TempDir(), "none.log")}); code != 1 {
		t.Fatalf("missing file: exit %d, want 1", code)
	}
	empty := filepath.Join(t.TempDir(), "empty.log")
	os.WriteFile(empty, nil, 0o600)
	if code := run([]string{"audit", "verify", empty}); code != 0 {
		t.Fatalf("empty log: exit %d, want 0", code)
	}
}
