package datatypes

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/statedoc"
)

func repoRegistry(t *testing.T) *Registry {
	_, file, _, _ := runtime.Caller(0)
	r, err := Load(filepath.Join(filepath.Dir(file), "..", "..", "config", "datatypes.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestShippedRegistryLoads(t *testing.T) {
	r := repoRegistry(t)
	for _, name := range []string{"note", "knowledge_graph", "task", "belief"} {
		if _, ok := r.Lookup(name); !ok {
			t.Errorf("data type %s missing", name)
		}
	}
	modes := map[string]bool{}
	resolvers := map[string]bool{}
	for _, name := range r.Names() {
		ty, _ := r.Lookup(name)
		modes[ty.Consistency] = true
		for _, res := range ty.Fields {
			resolvers[res] = true
		}
	}
	for _, m := range []string{Eventual, Causal, Strong} {
		if !modes[m] {
			t.Errorf("no dev data type defaults to %s", m)
		}
	}
	for _, res := range []string{"max", "min", "sum", "union", "append_unique"} {
		if !resolvers[res] {
			t.Errorf("no dev data type uses resolver %s", res)
		}
	}
}

func TestValidatePatch(t *testing.T) {
	r := repoRegistry(t)
	tests := []struct {
		dataType, patch string
		wantField       string // "" = valid
	}{
		{"note", `{"anything":[1,{"x":null}]}`, ""},
		{"knowledge_graph", `{"confidence":0.5,"entities":["a"]}`, ""},
		{"knowledge_graph", `{"confidence":1.5}`, "confidence"},
		{"knowledge_graph", `{"entities":"a"}`, "entities"},
		{"knowledge_graph", `{"entities":["a",3]}`, "entities.1"},
		{"task", `{"status":"open"}`, ""}, // partial: title not needed in a patch
		{"task", `{"status":"sleeping"}`, "status"},
		{"task", `{"colour":"red"}`, "patch"},
		{"task", `{"title":null}`, "title"}, // required: cannot be deleted
		{"task", `{"assignee":null}`, ""},
	}
	for _, tt := range tests {
		ty, _ := r.Lookup(tt.dataType)
		patch, _ := statedoc.DecodeObject([]byte(tt.patch))
		err := ty.ValidatePatch(patch)
		if tt.wantField == "" {
			if err != nil {
				t.Errorf("%s %s: %v", tt.dataType, tt.patch, err)
			}
			continue
		}
		e := apierr.As(err)
		if err == nil || e.Code != apierr.InvalidArgument || !strings.Contains(e.Message, tt.wantField) {
			t.Errorf("%s %s: got %v, want invalid_argument naming %s", tt.dataType, tt.patch, err, tt.wantField)
		}
	}
}

func TestModes(t *testing.T) {
	r := repoRegistry(t)
	task, _ := r.Lookup("task")
	if m, err := task.Mode(""); err != nil || m != Strong {
		t.Fatalf("task default: %s %v", m, err)
	}
	if _, err := task.Mode(Causal); apierr.As(err).Code != apierr.InvalidArgument {
		t.Fatalf("task causal: %v", err)
	}
	if _, err := r.Type("nope"); apierr.As(err).Code != apierr.InvalidArgument {
		t.Fatalf("unknown type: %v", err)
	}
}

func TestParseRejectsBadRegistries(t *testing.T) {
	known := func(s string) bool { return s == "lww" || s == "max" }
	for name, doc := range map[string]string{
		"empty":            `data_types: {}`,
		"unknown key":      `data_types: {a: {consistensy: eventual}}`,
		"bad mode":         `data_types: {a: {consistency: quantum}}`,
		"default not in":   `data_types: {a: {consistency: strong, modes: [eventual]}}`,
		"unknown resolver": `data_types: {a: {fields: {x: median}}}`,
		"bad schema":       `data_types: {a: {schema: {type: 7}}}`,
	} {
		if _, err := Parse([]byte(doc), known); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}

func TestWatcherReloadsAndKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dt.yaml")
	os.WriteFile(path, []byte("data_types: {a: {}}\n"), 0o600)
	w, err := NewWatcher(path, nil, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx, 10*time.Millisecond)
	os.WriteFile(path, []byte("data_types: {a: {}, b: {}}\n"), 0o600)
	waitFor(t, func() bool { _, ok := w.Get().Lookup("b"); return ok })
	os.WriteFile(path, []byte("data_types: {broken"), 0o600)
	time.Sleep(100 * time.Millisecond)
	if _, ok := w.Get().Lookup("b"); !ok {
		t.Fatal("a broken file replaced the registry in force")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met in 5s")
}

// TestPatchNumbersMustFitADouble: hostile-input finding F4; 1e400 and a
// 5,000-digit integer are refused naming the field, ordinary numbers pass.
func TestPatchNumbersMustFitADouble(t *testing.T) {
	r, err := Parse([]byte("data_types:\n  note: {modes: [eventual]}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ty, _ := r.Lookup("note")
	for _, tc := range []struct {
		patch, field string
	}{
		{`{"x":1e400}`, "x"},
		{`{"x":{"y":[1,-1e999]}}`, "x.y[1]"},
		{`{"x":` + strings.Repeat("9", 5000) + `}`, "x"},
	} {
		patch, _ := statedoc.DecodeObject([]byte(tc.patch))
		err := ty.ValidatePatch(patch)
		if e := apierr.As(err); err == nil || e.Code != apierr.InvalidArgument || e.Details["field"] != tc.field {
			t.Errorf("%.40s: %v", tc.patch, err)
		}
	}
	ok, _ := statedoc.DecodeObject([]byte(`{"a":1.7e308,"b":-5e-324,"c":123456789012345678901234567890,"d":[0.1,{"e":2}]}`))
	if err := ty.ValidatePatch(ok); err != nil {
		t.Fatalf("finite numbers refused: %v", err)
	}
}
