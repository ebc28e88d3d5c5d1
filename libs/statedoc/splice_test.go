package statedoc

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
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
