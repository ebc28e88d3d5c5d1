package merge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"

	"github.com/fedsync/fedsync/libs/apierr"
)

// Side is one side of a field merge: a JSON value and who wrote it when.
type Side struct {
	Value   json.RawMessage
	HLC     int64
	Writer  string
	Present bool
}

// Resolver merges the stored (local) and incoming (remote) values of one field
// into the value to store. It is pure and must be deterministic. Returning
// errTypeMismatch sends the conflict to the review queue.
type Resolver func(local, remote Side) (json.RawMessage, error)

// errTypeMismatch says a resolver cannot combine the values' JSON types.
var errTypeMismatch = errors.New("values of incompatible JSON types")

// Resolvers is the set of named resolvers: the built-ins, plus custom ones
// registered in Go.
type Resolvers struct {
	mu sync.RWMutex
	m  map[string]Resolver
	// commutative resolvers combine both values on every write; the others
	// choose one value and only a concurrent write is a conflict.
	commutative map[string]bool
}

// NewResolvers returns the built-in resolvers: lww, max, min, sum, union,
// append_unique.
func NewResolvers() *Resolvers {
	r := &Resolvers{m: map[string]Resolver{}, commutative: map[string]bool{}}
	r.Register("lww", resolveLWW, false)
	r.Register("max", numeric(func(a, b float64) float64 { return max(a, b) }), true)
	r.Register("min", numeric(func(a, b float64) float64 { return min(a, b) }), true)
	r.Register("sum", resolveSum, true)
	r.Register("union", resolveUnion, true)
	r.Register("append_unique", resolveAppendUnique, true)
	return r
}

// Register adds a named resolver. A commutative resolver is applied to every
// write of its fields (like sum); otherwise it only decides write-write conflicts
// and a write that is not concurrent simply replaces the value.
func (r *Resolvers) Register(name string, fn Resolver, commutative bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[name] = fn
	r.commutative[name] = commutative
}

// Known reports whether name is registered.
func (r *Resolvers) Known(name string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.m[name]
	return ok
}

func (r *Resolvers) get(name string) (Resolver, bool, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	fn, ok := r.m[name]
	if !ok {
		return nil, false, fmt.Errorf("unknown resolver %q", name)
	}
	return fn, r.commutative[name], nil
}

// later reports whether a is the later write under last-write-wins: the higher
// hybrid-logical-clock stamp, then the higher writer id.
func later(a, b Side) bool {
	if a.HLC != b.HLC {
		return a.HLC > b.HLC
	}
	return a.Writer > b.Writer
}

func resolveLWW(local, remote Side) (json.RawMessage, error) {
	stamped := local.HLC != 0 || local.Writer != "" // a deleted field keeps its stamp
	if (!local.Present && !stamped) || later(remote, local) {
		return remote.Value, nil
	}
	return local.Value, nil
}

// Kind returns the JSON type of a raw value: null, boolean, number, string,
// array or object.
func Kind(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return "null"
	}
	switch v[0] {
	case 'n':
		return "null"
	case 't', 'f':
		return "boolean"
	case '"':
		return "string"
	case '[':
		return "array"
	case '{':
		return "object"
	}
	return "number"
}

func number(v json.RawMessage) (float64, error) {
	if Kind(v) != "number" {
		return 0, errTypeMismatch
	}
	var f float64
	if err := json.Unmarshal(v, &f); err != nil {
		return 0, errTypeMismatch
	}
	return f, nil
}

func encodeNumber(f float64) json.RawMessage {
	b, _ := json.Marshal(f)
	return b
}

func numeric(op func(a, b float64) float64) Resolver {
	return func(local, remote Side) (json.RawMessage, error) {
		r, err := number(remote.Value)
		if err != nil {
			return nil, err
		}
		if !local.Present {
			return remote.Value, nil
		}
		l, err := number(local.Value)
		if err != nil {
			return nil, err
		}
		v := op(l, r)
		if math.IsInf(v, 0) || math.IsNaN(v) {
			// Refused, not saturated: a counter that silently stops counting
			// is worse than a delta the writer is told about.
			return nil, apierr.New(apierr.InvalidArgument, "The result %g %s %g is outside the range of an IEEE-754 double; the delta is refused and the stored value kept.", l, "combined with", r)
		}
		return encodeNumber(v), nil
	}
}

// resolveSum treats the incoming value as an increment of a counter.
func resolveSum(local, remote Side) (json.RawMessage, error) {
	return numeric(func(a, b float64) float64 { return a + b })(local, remote)
}

func array(v json.RawMessage) ([]json.RawMessage, error) {
	if Kind(v) != "array" {
		return nil, errTypeMismatch
	}
	var items []json.RawMessage
	if err := json.Unmarshal(v, &items); err != nil {
		return nil, errTypeMismatch
	}
	return items, nil
}

// canonical returns a comparable form of a JSON value (object keys sorted).
func canonical(v json.RawMessage) string {
	var x any
	if err := json.Unmarshal(v, &x); err != nil {
		return string(v)
	}
	b, _ := json.Marshal(x)
	return string(b)
}

// resolveUnion merges two arrays as sets. The result is sorted by the items'
// canonical JSON, so every replica converges to the same array whatever the
// order of writes.
func resolveUnion(local, remote Side) (json.RawMessage, error) {
	r, err := array(remote.Value)
	if err != nil {
		return nil, err
	}
	var l []json.RawMessage
	if local.Present {
		if l, err = array(local.Value); err != nil {
			return nil, err
		}
	}
	seen := map[string]json.RawMessage{}
	for _, it := range append(l, r...) {
		seen[canonical(it)] = json.RawMessage(canonical(it))
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]json.RawMessage, len(keys))
	for i, k := range keys {
		out[i] = seen[k]
	}
	b, _ := json.Marshal(out)
	return b, nil
}

// resolveAppendUnique appends the incoming items not already in the list, in
// their order. The list keeps arrival order, so replicas agree on its items but
// may differ in their order when writes race.
func resolveAppendUnique(local, remote Side) (json.RawMessage, error) {
	r, err := array(remote.Value)
	if err != nil {
		return nil, err
	}
	var l []json.RawMessage
	if local.Present {
		if l, err = array(local.Value); err != nil {
			return nil, err
		}
	}
	seen := map[string]bool{}
	for _, it := range l {
		seen[canonical(it)] = true
	}
	for _, it := range r {
		if c := canonical(it); !seen[c] {
			seen[c] = true
			l = append(l, it)
		}
	}
	if l == nil {
		l = []json.RawMessage{}
	}
	b, _ := json.Marshal(l)
	return b, nil
}
