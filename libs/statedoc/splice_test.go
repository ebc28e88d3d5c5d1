package statedoc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestApplyEncodedMatchesDecodeApplyEncode: on random documents and patches
// (keys and strings with escapes, HTML characters and non-ASCII, nested values,
// deletions, whitespace in patch values) the splice gives exactly the bytes of
// DecodeObject, Apply and Encode.
func TestApplyEncodedMatchesDecodeApplyEncode(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	keys := []string{"a", "b", "c", "é", "k<1>", "q\"x", "z\\y", "n&m", "", "ab", "B", "\u2028"}
	values := []string{`1`, `-2.5e3`, `"s"`, `"<a & b>"`, `"\u00e9\n"`, `true`, `null`, `[1, {"x": [2,"]"]}]`, `{ "k" : "v}" }`, `""`, `"\\"`, `{}`, `[]`}
	for n := 0; n < 5000; n++ {
		doc := Object{}
		for i := r.IntN(8); i > 0; i-- {
			v := values[r.IntN(len(values))]
			if v == "null" {
				continue
			}
			doc[keys[r.IntN(len(keys))]] = json.RawMessage(v)
		}
		patch := Object{}
		for i := r.IntN(5); i > 0; i-- {
			patch[keys[r.IntN(len(keys))]] = json.RawMessage(values[r.IntN(len(values))])
		}
		enc := doc.Encode()
		got, ok := ApplyEncoded(enc, patch)
		if !ok {
			t.Fatalf("splice refused canonical %s", enc)
		}
		want, _ := DecodeObject(enc)
		want.Apply(patch)
		if string(got) != string(want.Encode()) {
			t.Fatalf("doc %s patch %v:\n got  %s\n want %s", enc, patch, got, want.Encode())
		}
		fields := []string{keys[r.IntN(len(keys))], keys[r.IntN(len(keys))]}
		look, err := Lookup(enc, fields)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fields {
			if fmt.Sprint(look[f]) != fmt.Sprint(canonical(t, want0(doc, f))) && string(look[f]) != string(canonical(t, want0(doc, f))) {
				t.Fatalf("lookup %q in %s = %s", f, enc, look[f])
			}
		}
	}
}

func want0(doc Object, f string) json.RawMessage { return doc[f] }

func canonical(t *testing.T, v json.RawMessage) []byte {
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestApplyEncodedRefusesOtherForms(t *testing.T) {
	for _, doc := range []string{``, `[]`, `{"b":1,"a":2}`, `{ "a":1}`, `{"a":1`, `{"a"}`} {
		if _, ok := ApplyEncoded([]byte(doc), Object{"x": json.RawMessage(`1`)}); ok {
			t.Errorf("spliced %q", doc)
		}
	}
}

func BenchmarkApplyToLargeDocument(b *testing.B) {
	doc := Object{}
	for i := 0; i < 1000; i++ {
		doc[fmt.Sprintf("field-%04d", i)] = json.RawMessage(fmt.Sprintf(`{"text":"%01000d","n":%d}`, i, i))
	}
	enc := doc.Encode()
	patch := Object{"field-0500": json.RawMessage(`{"text":"changed","n":-1}`)}
	b.Run("decode-apply-encode", func(b *testing.B) {
		b.SetBytes(int64(len(enc)))
		for i := 0; i < b.N; i++ {
			o, _ := DecodeObject(enc)
			o.Apply(patch)
			_ = o.Encode()
		}
	})
	b.Run("splice", func(b *testing.B) {
		b.SetBytes(int64(len(enc)))
		for i := 0; i < b.N; i++ {
			if _, ok := ApplyEncoded(enc, patch); !ok {
				b.Fatal("refused")
			}
		}
	})
}

// TestIsCanonicalMatchesEncodingJSON: where IsCanonical says a value is
// canonical, encoding/json writes exactly its bytes; where it says not, the
// slow path runs. Both give what json.Marshal gives.
func TestIsCanonicalMatchesEncodingJSON(t *testing.T) {
	values := []string{
		`1`, `-1.5e3`, `true`, `null`, `"plain"`, `"with space"`, `"tab\tescaped"`, `"quote \" inside"`,
		`"backslash \\ end\\"`, `"<b>"`, `"a & b"`, "\"line\u2028sep\"", `{"a":1,"b":[1,2,{"c":"d e"}]}`,
		`{ "a" : 1 }`, "[1,\n2]", `["x","y"]`, `{"k":"v"}`, `"\u00e9t\u00e9"`, `"été"`, `{"a":"}"}`, `"\\"`,
		`"` + strings.Repeat("x", 70000) + `"`,
	}
	for _, v := range values {
		want, err := json.Marshal(json.RawMessage(v))
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		got, err := Object{"k": json.RawMessage(v)}.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got["k"], want) {
			t.Errorf("%.60q: canonical %.60q, encoding/json %.60q", v, got["k"], want)
		}
		if IsCanonical([]byte(v)) != bytes.Equal([]byte(v), want) {
			t.Errorf("%.60q: IsCanonical %v, but encoding/json writes %.60q", v, IsCanonical([]byte(v)), want)
		}
	}
}

// BenchmarkCanonical64KiB: a 64 KiB string value made canonical, the check
// against encoding/json's compaction it replaces.
func BenchmarkCanonical64KiB(b *testing.B) {
	v := json.RawMessage(`"` + strings.Repeat("lorem ipsum ", 64<<10/12) + `"`)
	b.Run("IsCanonical", func(b *testing.B) {
		b.SetBytes(int64(len(v)))
		for b.Loop() {
			if !IsCanonical(v) {
				b.Fatal("not canonical")
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(v)))
		for b.Loop() {
			if _, err := json.Marshal(v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
