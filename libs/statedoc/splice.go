package statedoc

import (
	"bytes"
	"encoding/json"
	"sort"
)

// This file applies patches to, and reads fields of, a document in its stored
// form (Encode's canonical JSON: compact, keys sorted, strings escaped as
// encoding/json does) without decoding the whole document into a map and
// encoding it again. For a document of 1 MiB changed by a 100-byte patch that
// is one scan and one copy instead of a full decode, sort and re-encode.

// member is one top-level member of an encoded object.
type member struct {
	key        string
	start, end int // the bytes of "key":value
	valueStart int
}

// scanMembers returns the top-level members of the canonical object doc, or
// false when doc is not an object whose keys ascend (then callers decode it).
func scanMembers(doc []byte) ([]member, bool) {
	if len(doc) < 2 || doc[0] != '{' || doc[len(doc)-1] != '}' {
		return nil, false
	}
	var out []member
	i := 1
	if doc[i] == '}' {
		return out, i == len(doc)-1
	}
	for {
		if i >= len(doc) || doc[i] != '"' {
			return nil, false
		}
		start := i
		kend, esc, ok := skipString(doc, i)
		if !ok || kend >= len(doc) || doc[kend] != ':' {
			return nil, false
		}
		key := string(doc[i+1 : kend-1])
		if esc {
			if json.Unmarshal(doc[i:kend], &key) != nil {
				return nil, false
			}
		}
		vstart := kend + 1
		vend, ok := skipValue(doc, vstart)
		if !ok || vend >= len(doc) {
			return nil, false
		}
		if n := len(out); n > 0 && out[n-1].key >= key {
			return nil, false // not in Encode's order
		}
		out = append(out, member{key: key, start: start, end: vend, valueStart: vstart})
		switch doc[vend] {
		case ',':
			i = vend + 1
		case '}':
			return out, vend == len(doc)-1
		default:
			return nil, false
		}
	}
}

// skipString returns the index after the string starting at doc[i] == '"' and
// whether it holds escapes.
func skipString(doc []byte, i int) (int, bool, bool) {
	esc := false
	for j := i + 1; j < len(doc); j++ {
		switch doc[j] {
		case '\\':
			esc = true
			j++
		case '"':
			return j + 1, esc, true
		}
	}
	return 0, false, false
}

// skipValue returns the index after the compact JSON value starting at doc[i].
func skipValue(doc []byte, i int) (int, bool) {
	if i >= len(doc) {
		return 0, false
	}
	switch doc[i] {
	case '"':
		end, _, ok := skipString(doc, i)
		return end, ok
	case '{', '[':
		depth := 0
		for j := i; j < len(doc); j++ {
			switch doc[j] {
			case '"':
				end, _, ok := skipString(doc, j)
				if !ok {
					return 0, false
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	default:
		j := i
		for j < len(doc) && doc[j] != ',' && doc[j] != '}' && doc[j] != ']' {
			j++
		}
		return j, j > i
	}
}

// ApplyEncoded returns the canonical encoding of doc (a canonical encoding
// itself) with patch applied: what DecodeObject, Apply and Encode give, without
// decoding doc. It reports false when doc or a patch value is not in the form
// it expects; the caller then takes the decoding path.
func ApplyEncoded(doc []byte, patch Object) ([]byte, bool) {
	canon, err := patch.Canonical()
	if err != nil {
		return nil, false
	}
	return applyCanonical(doc, canon)
}

// Canonical returns o with every value compacted and escaped as Encode writes
// it (a copy; o is unchanged).
func (o Object) Canonical() (Object, error) {
	out := make(Object, len(o))
	for k, v := range o {
		if IsNull(v) {
			out[k] = v
			continue
		}
		if IsCanonical(v) {
			out[k] = v // already as Encode writes it: no copy, no second pass
			continue
		}
		b, err := json.Marshal(json.RawMessage(v))
		if err != nil {
			return nil, err
		}
		out[k] = b
	}
	return out, nil
}

// IsCanonical reports whether a JSON value (valid JSON, as decoding produced
// it) is already written as encoding/json writes it: no whitespace outside
// strings, and none of the characters it escapes (<, >, &, U+2028, U+2029).
// One table-driven pass over the bytes, so large values (64 KiB strings) are
// not compacted and copied again at every stage.
func IsCanonical(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	inString := false
	for i := 0; i < len(v); i++ {
		if inString {
			for i < len(v) && !stringSpecial[v[i]] {
				i++
			}
			if i == len(v) {
				return false
			}
		}
		switch c := v[i]; {
		case c == '<' || c == '>' || c == '&':
			return false
		case c == 0xE2:
			if i+2 < len(v) && v[i+1] == 0x80 && (v[i+2] == 0xA8 || v[i+2] == 0xA9) {
				return false
			}
		case c == '\\' && inString:
			i++ // the escaped byte
		case c == '"':
			inString = !inString
		case !inString && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return false
		}
	}
	return !inString
}

// stringSpecial marks the bytes inside a string that IsCanonical looks at.
var stringSpecial = func() (t [256]bool) {
	for _, c := range []byte{'"', '\\', '<', '>', '&', 0xE2} {
		t[c] = true
	}
	return t
}()

// encodeCanonical is Encode for an object whose values are canonical already.
func encodeCanonical(o Object) []byte {
	if len(o) == 0 {
		return []byte("{}")
	}
	keys := make([]string, 0, len(o))
	n := 2
	for k, v := range o {
		keys = append(keys, k)
		n += len(k) + len(v) + 4
	}
	sort.Strings(keys)
	buf := make([]byte, 0, n)
	buf = append(buf, '{')
	for i, k := range keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		kb, _ := json.Marshal(k)
		buf = append(append(append(buf, kb...), ':'), o[k]...)
	}
	return append(buf, '}')
}

// applyCanonical is ApplyEncoded for a patch whose values are canonical.
func applyCanonical(doc []byte, patch Object) ([]byte, bool) {
	members, ok := scanMembers(doc)
	if !ok {
		return nil, false
	}
	keys := make([]string, 0, len(patch))
	for k := range patch {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	buf.Grow(len(doc) + patch.Size() + 16*len(patch))
	buf.WriteByte('{')
	first := true
	sep := func() {
		if !first {
			buf.WriteByte(',')
		}
		first = false
	}
	put := func(k string) bool {
		v := patch[k]
		if IsNull(v) {
			return true // deleted
		}
		kb, err := json.Marshal(k)
		if err != nil {
			return false
		}
		sep()
		buf.Write(kb)
		buf.WriteByte(':')
		buf.Write(v)
		return true
	}
	m, p := 0, 0
	for m < len(members) || p < len(keys) {
		switch {
		case p == len(keys) || (m < len(members) && members[m].key < keys[p]):
			sep()
			buf.Write(doc[members[m].start:members[m].end])
			m++
		case m == len(members) || keys[p] < members[m].key:
			if !put(keys[p]) {
				return nil, false
			}
			p++
		default: // the patch replaces or deletes the member
			if !put(keys[p]) {
				return nil, false
			}
			m++
			p++
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), true
}

// Lookup returns the values of the given top-level fields of the encoded
// document doc (absent fields are left out), reading only those. It falls
// back to decoding doc when doc is not in canonical form.
func Lookup(doc []byte, fields []string) (Object, error) {
	if len(doc) == 0 {
		return Object{}, nil
	}
	members, ok := scanMembers(doc)
	if !ok {
		return DecodeObject(doc)
	}
	want := make(map[string]bool, len(fields))
	for _, f := range fields {
		want[f] = true
	}
	out := Object{}
	for _, mb := range members {
		if want[mb.key] {
			out[mb.key] = doc[mb.valueStart:mb.end]
		}
	}
	return out, nil
}
