package flagenv

import (
	"flag"
	"testing"
)

func TestParsePrecedence(t *testing.T) {
	tests := []struct {
		name string
		env  string
		args []string
		want string
	}{
		{"default", "", nil, "def"},
		{"env", "from-env", nil, "from-env"},
		{"flag wins over env", "from-env", []string{"-listen-addr=from-flag"}, "from-flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("FEDSYNC_LISTEN_ADDR", tt.env)
			}
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			got := fs.String("listen-addr", "def", "")
			if err := Parse(fs, "FEDSYNC", tt.args); err != nil {
				t.Fatal(err)
			}
			if *got != tt.want {
				t.Fatalf("got %q, want %q", *got, tt.want)
			}
		})
	}
}

func TestParseBadEnvValue(t *testing.T) {
	t.Setenv("FEDSYNC_WORKERS", "many")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Int("workers", 1, "")
	if err := Parse(fs, "FEDSYNC", nil); err == nil {
		t.Fatal("want an error naming FEDSYNC_WORKERS, got nil")
	}
}

func TestStringList(t *testing.T) {
	var l StringList
	if err := l.Set(" a, b ,,c"); err != nil {
		t.Fatal(err)
	}
	if got := l.String(); got != "a,b,c" {
		t.Fatalf("got %q", got)
	}
}
