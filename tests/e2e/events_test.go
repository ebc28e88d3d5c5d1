package e2e

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestDeltaEventsThroughTheMesh subscribes twice to one prefix, once with
// whole-document events (contract v1) and once with "events":"delta", and
// checks what each receives: every version in order, the delta subscriber only
// what each commit set and removed, including for a document too large to
// travel whole on fedsync.committed (the full subscriber still gets it whole),
// and after a resume from a cursor.
func TestDeltaEventsThroughTheMesh(t *testing.T) {
	s := startStack(t)
	a := newAgent(t, s, "ai-004", "na")
	full, _ := a.subscribe(map[string]any{"id_prefix": "ai-004:"})
	delta, _ := a.subscribe(map[string]any{"id_prefix": "ai-004:", "events": "delta"})
	big := strings.Repeat("x", 300<<10)
	for _, body := range []string{
		`{"id":"ai-004:g","data_type":"note","patch":{"a":1,"b":"x"}}`,
		`{"id":"ai-004:g","data_type":"note","patch":{"b":null,"c":2}}`,
		`{"id":"ai-004:g","data_type":"note","patch":{"big":"` + big + `"}}`,
		`{"id":"ai-004:g","data_type":"note","patch":{"d":4}}`,
	} {
		if code, out := a.push(body); code != 202 {
			t.Fatalf("push: %d %v", code, out)
		}
	}
	want := []struct {
		set     string
		removed string
		keys    string
	}{
		{`{"a":1,"b":"x"}`, "", "a,b"},
		{`{"c":2}`, "b", "a,c"},
		{"", "", "a,big,c"}, // set holds the 300 KiB field: checked by size
		{`{"d":4}`, "", "a,big,c,d"},
	}
	var cursor any
	for v, w := range want {
		f := full.next(30 * time.Second)
		d := delta.next(30 * time.Second)
		if f["version"] != float64(v+1) || d["version"] != float64(v+1) {
			t.Fatalf("version %d: full got %v, delta got %v", v+1, f["version"], d["version"])
		}
		if _, ok := d["value"]; ok {
			t.Errorf("version %d: a delta event carries the whole value", v+1)
		}
		value, _ := f["value"].(map[string]any)
		if keys := sortedKeys(value); keys != w.keys {
			t.Errorf("version %d: full value has fields %s, want %s", v+1, keys, w.keys)
		}
		set, _ := json.Marshal(d["set"])
		if w.set != "" && string(set) != w.set {
			t.Errorf("version %d: set %s, want %s", v+1, set, w.set)
		}
		if w.set == "" && (len(set) < 300<<10 || len(set) > 301<<10) {
			t.Errorf("version %d: set of %d bytes, want the 300 KiB field", v+1, len(set))
		}
		removed, _ := d["removed"].([]any)
		if got := fmt.Sprint(removed); (w.removed == "" && len(removed) != 0) || (w.removed != "" && got != "["+w.removed+"]") {
			t.Errorf("version %d: removed %v, want [%s]", v+1, removed, w.removed)
		}
		if v == 0 {
			cursor = d["cursor"]
		}
	}
	// Resume a delta subscription from the first change: the same events again.
	resumed, _ := a.subscribe(map[string]any{"id_prefix": "ai-004:", "events": "delta", "from_cursor": cursor})
	for v := 2; v <= 4; v++ {
		d := resumed.next(30 * time.Second)
		if d["version"] != float64(v) || d["value"] != nil {
			t.Fatalf("resumed delta stream: %v (want version %d without value)", d["version"], v)
		}
		if v == 4 {
			if set, _ := json.Marshal(d["set"]); string(set) != `{"d":4}` {
				t.Fatalf("resumed version 4: set %s", set)
			}
		}
	}
}

func sortedKeys(m map[string]any) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}
