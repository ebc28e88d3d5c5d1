package statedoc

import (
	"strings"
	"testing"
)

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"ai-042:beliefs", true},
		{"a", true},
		{"A.b_c-d:e", true},
		{"", false},
		{"-leading-dash", false},
		{":x", false},
		{"has space", false},
		{"slash/inside", false},
		{strings.Repeat("a", 256), true},
		{strings.Repeat("a", 257), false},
	}
	for _, tt := range tests {
		if got := ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestDecodeObject(t *testing.T) {
	for _, bad := range []string{"", "[]", "3", `"s"`, "null", "{", `{"a":}`} {
		if _, err := DecodeObject([]byte(bad)); err == nil {
			t.Errorf("DecodeObject(%q): want error", bad)
		}
	}
	o, err := DecodeObject([]byte(` {"a":1,"b":null} `))
	if err != nil || len(o) != 2 {
		t.Fatalf("got %v, %v", o, err)
	}
}

func TestApplyDeletesOnNull(t *testing.T) {
	o := Object{"a": []byte("1"), "b": []byte(`"x"`)}
	o.Apply(Object{"a": []byte("null"), "c": []byte("true")})
	if got := string(o.Encode()); got != `{"b":"x","c":true}` {
		t.Fatalf("got %s", got)
	}
	if got := string(Object{}.Encode()); got != "{}" {
		t.Fatalf("empty object encodes as %s", got)
	}
}
