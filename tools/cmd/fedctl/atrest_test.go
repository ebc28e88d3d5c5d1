package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedsync/fedsync/libs/atrest"
)

// TestAtRestAddKey: a new file gets one active key; a second key is added
// inactive, then a third active; the file always loads as a keyring; a
// duplicate id is a usage error.
func TestAtRestAddKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	steps := []struct {
		args   []string
		active string
		keys   int
	}{
		{[]string{"at-rest", "add-key", path, "--id", "k1"}, "k1", 1},
		{[]string{"at-rest", "add-key", path, "--id", "k2"}, "k1", 2},
		{[]string{"at-rest", "add-key", path, "--id", "k3", "--activate"}, "k3", 3},
	}
	for _, s := range steps {
		code, out := captureStdout(t, func() int { return run(s.args) })
		if code != 0 || !strings.Contains(out, "active key "+s.active) {
			t.Fatalf("%v: exit %d, %q", s.args, code, out)
		}
		v, err := atrest.NewVault(atrest.FileSource(path))
		if err != nil || v.Ring().Active() != s.active || len(v.Ring().IDs()) != s.keys {
			t.Fatalf("%v: the file loads as %v, %v", s.args, v.Ring().IDs(), err)
		}
	}
	if st, _ := os.Stat(path); st.Mode().Perm()&0o077 != 0 {
		t.Errorf("key file mode %v, want private to its owner", st.Mode().Perm())
	}
	if code, _ := captureStdout(t, func() int { return run([]string{"at-rest", "add-key", path, "--id", "k2"}) }); code != exitUsage {
		t.Fatalf("a duplicate id: exit %d, want %d", code, exitUsage)
	}
}
