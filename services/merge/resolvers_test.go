package merge

import (
	"encoding/json"
	"errors"
	"testing"
)

func side(v string, hlc int64, writer string) Side {
	return Side{Value: json.RawMessage(v), HLC: hlc, Writer: writer, Present: v != ""}
}

func TestResolvers(t *testing.T) {
	r := NewResolvers()
	tests := []struct {
		resolver      string
		local, remote Side
		want          string
		wantErr       error
	}{
		{"lww", side(`1`, 5, "a"), side(`2`, 6, "b"), `2`, nil},
		{"lww", side(`1`, 7, "a"), side(`2`, 6, "b"), `1`, nil},
		{"lww", side(`1`, 6, "a"), side(`2`, 6, "b"), `2`, nil}, // tie: higher writer id
		{"lww", side(``, 0, ""), side(`2`, 1, "b"), `2`, nil},
		{"max", side(`3`, 9, "a"), side(`7.5`, 1, "b"), `7.5`, nil},
		{"max", side(`9`, 1, "a"), side(`7`, 9, "b"), `9`, nil},
		{"min", side(`3`, 1, "a"), side(`7`, 9, "b"), `3`, nil},
		{"sum", side(`10`, 1, "a"), side(`5`, 2, "b"), `15`, nil},
		{"sum", side(``, 0, ""), side(`5`, 2, "b"), `5`, nil},
		{"sum", side(`"ten"`, 1, "a"), side(`5`, 2, "b"), ``, errTypeMismatch},
		{"union", side(`["b","a"]`, 1, "x"), side(`["c","a"]`, 2, "y"), `["a","b","c"]`, nil},
		{"union", side(``, 0, ""), side(`[2,1,2]`, 2, "y"), `[1,2]`, nil},
		{"union", side(`{"a":1}`, 1, "x"), side(`[1]`, 2, "y"), ``, errTypeMismatch},
		{"append_unique", side(`["b","a"]`, 1, "x"), side(`["c","a","d"]`, 2, "y"), `["b","a","c","d"]`, nil},
		{"append_unique", side(`[{"k":1,"j":2}]`, 1, "x"), side(`[{"j":2,"k":1}]`, 2, "y"), `[{"k":1,"j":2}]`, nil},
	}
	for _, tt := range tests {
		fn, _, err := r.get(tt.resolver)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fn(tt.local, tt.remote)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("%s(%s, %s): error %v, want %v", tt.resolver, tt.local.Value, tt.remote.Value, err, tt.wantErr)
			continue
		}
		if err == nil && string(got) != tt.want {
			t.Errorf("%s(%s, %s) = %s, want %s", tt.resolver, tt.local.Value, tt.remote.Value, got, tt.want)
		}
	}
}

func TestCustomResolver(t *testing.T) {
	r := NewResolvers()
	r.Register("longest", func(l, rm Side) (json.RawMessage, error) {
		if len(l.Value) >= len(rm.Value) {
			return l.Value, nil
		}
		return rm.Value, nil
	}, false)
	if !r.Known("longest") || r.Known("median") {
		t.Fatal("Known is wrong")
	}
	fn, commutative, _ := r.get("longest")
	got, _ := fn(side(`"abc"`, 9, "a"), side(`"z"`, 10, "b"))
	if string(got) != `"abc"` || commutative {
		t.Fatalf("got %s", got)
	}
}

func TestKind(t *testing.T) {
	for v, want := range map[string]string{`null`: "null", `true`: "boolean", `-1.5e3`: "number", `"s"`: "string", ` [1]`: "array", `{}`: "object"} {
		if got := Kind(json.RawMessage(v)); got != want {
			t.Errorf("Kind(%s) = %s, want %s", v, got, want)
		}
	}
}
