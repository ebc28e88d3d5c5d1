// Package statedoc holds the rules of a state document shared by the services that
// admit, store and publish it: id syntax, JSON object patches, and the contract's
// JSON view of a stored state.
package statedoc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/fedsync/fedsync/libs/apierr"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$`)

// ValidID reports whether id has the contract's syntax.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// IDRule describes the id syntax for error messages.
const IDRule = "must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$"

// Object is a JSON object with its field values kept as raw JSON.
type Object map[string]json.RawMessage

// DecodeObject decodes b, which must be one JSON object.
func DecodeObject(b []byte) (Object, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return nil, errors.New("must be a JSON object")
	}
	var o Object
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, fmt.Errorf("must be a JSON object: %w", err)
	}
	return o, nil
}

// IsNull reports whether a raw JSON value is null.
func IsNull(v json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(v), []byte("null")) }

// Apply sets each field of patch on o, deleting fields whose patch value is null.
func (o Object) Apply(patch Object) {
	for k, v := range patch {
		if IsNull(v) {
			delete(o, k)
		} else {
			o[k] = v
		}
	}
}

// Encode returns o as JSON; an empty object is {}.
func (o Object) Encode() []byte {
	if len(o) == 0 {
		return []byte("{}")
	}
	b, _ := json.Marshal(map[string]json.RawMessage(o))
	return b
}

// View is the contract's JSON shape of a state (GET /api/v1/sync/state/{id}).
type View struct {
	ID          string                      `json:"id"`
	DataType    string                      `json:"data_type"`
	Value       json.RawMessage             `json:"value"`
	Version     int64                       `json:"version"`
	VectorClock map[string]int64            `json:"vector_clock"`
	UpdatedAt   string                      `json:"updated_at"`
	UpdatedBy   string                      `json:"updated_by"`
	Provenance  map[string]*FieldProvenance `json:"provenance,omitempty"`
}

// FieldProvenance says which writer and version set a field.
type FieldProvenance struct {
	Writer  string `json:"writer"`
	Version int64  `json:"version"`
	HLC     int64  `json:"hlc"`
	Deleted bool   `json:"deleted,omitempty"`
}

// ViewOf returns the contract view of s; provenance is included when asked.
func ViewOf(s *fedsyncv1.State, provenance bool) View {
	v := View{
		ID:          s.GetId(),
		DataType:    s.GetDataType(),
		Value:       json.RawMessage(s.GetValue()),
		Version:     s.GetVersion(),
		VectorClock: s.GetVectorClock(),
		UpdatedAt:   time.Unix(0, s.GetUpdatedAt()).UTC().Format(time.RFC3339Nano),
		UpdatedBy:   s.GetUpdatedBy(),
	}
	if len(v.Value) == 0 {
		v.Value = json.RawMessage("{}")
	}
	if v.VectorClock == nil {
		v.VectorClock = map[string]int64{}
	}
	if provenance {
		v.Provenance = map[string]*FieldProvenance{}
		for k, f := range s.GetFields() {
			v.Provenance[k] = &FieldProvenance{Writer: f.GetWriter(), Version: f.GetVersion(), HLC: f.GetHlc(), Deleted: f.GetDeleted()}
		}
	}
	return v
}

// splitCanonical returns what a patch with canonical values does: the fields
// it sets, as a JSON object in Encode's form (nil when none), and the fields it
// removes (a null value), in name order.
func (o Object) splitCanonical() (set []byte, removed []string) {
	sets := Object{}
	for k, v := range o {
		if IsNull(v) {
			removed = append(removed, k)
		} else {
			sets[k] = v
		}
	}
	sort.Strings(removed)
	if len(sets) > 0 {
		set = encodeCanonical(sets)
	}
	return set, removed
}

// Commit is what applying a patch to a document gives: the next version and
// what the patch set and removed.
type Commit struct {
	State   *fedsyncv1.State
	Set     []byte
	Removed []string
}

// NextCommit is NextState that also returns what the patch set and removed,
// putting the patch's values into canonical form once for both.
func NextCommit(cur *fedsyncv1.State, req *fedsyncv1.ApplyRequest, patch Object, now int64) (Commit, error) {
	canon, err := patch.Canonical()
	if err != nil {
		return Commit{}, err
	}
	next, err := nextState(cur, req, canon, now, true)
	if err != nil {
		return Commit{}, err
	}
	set, removed := canon.splitCanonical()
	return Commit{State: next, Set: set, Removed: removed}, nil
}

// NextState returns the version of a document after req (with its decoded
// patch) is applied to cur (an empty State when the document does not exist),
// committed at time now (nanoseconds). It is the one rule statestore commits by
// and merge predicts commits by. next takes over cur's field provenance map:
// cur must not be used afterwards.
func NextState(cur *fedsyncv1.State, req *fedsyncv1.ApplyRequest, patch Object, now int64) (*fedsyncv1.State, error) {
	return nextState(cur, req, patch, now, false)
}

func nextState(cur *fedsyncv1.State, req *fedsyncv1.ApplyRequest, patch Object, now int64, canonical bool) (*fedsyncv1.State, error) {
	stored := cur.GetValue()
	if len(stored) == 0 {
		stored = []byte("{}")
	}
	encoded, err := patched(stored, patch, canonical)
	if err != nil {
		return nil, err
	}
	next := &fedsyncv1.State{
		Id:          req.GetId(),
		DataType:    req.GetDataType(),
		Value:       encoded,
		Version:     cur.GetVersion() + 1,
		VectorClock: MergeClocks(cur.GetVectorClock(), req.GetVectorClock()),
		UpdatedAt:   now,
		UpdatedBy:   req.GetWriter(),
		Fields:      cur.GetFields(),
	}
	if next.Fields == nil {
		next.Fields = map[string]*fedsyncv1.FieldMeta{}
	}
	for k, v := range patch {
		meta := &fedsyncv1.FieldMeta{Writer: req.GetWriter(), Version: next.Version, Deleted: IsNull(v)}
		if m := req.GetFields()[k]; m != nil {
			meta.Hlc, meta.Writer, meta.Resolution = m.GetHlc(), m.GetWriter(), m.GetResolution()
		}
		next.Fields[k] = meta
	}
	return next, nil
}

// Patched returns the stored document doc (empty: none yet) with patch applied,
// in Encode's form: spliced without decoding doc when doc is in that form, else
// decoded, applied and encoded.
func Patched(doc []byte, patch Object) ([]byte, error) {
	if len(doc) == 0 {
		doc = []byte("{}")
	}
	return patched(doc, patch, false)
}

func patched(doc []byte, patch Object, canonical bool) ([]byte, error) {
	var encoded []byte
	var ok bool
	if canonical {
		encoded, ok = applyCanonical(doc, patch)
	} else {
		encoded, ok = ApplyEncoded(doc, patch)
	}
	if ok {
		return encoded, nil
	}
	value, err := DecodeObject(doc) // not in Encode's form (written by an older version)
	if err != nil {
		return nil, err
	}
	value.Apply(patch)
	return value.Encode(), nil
}

// MergeClocks returns the element-wise maximum of two vector clocks.
func MergeClocks(a, b map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if v > out[k] {
			out[k] = v
		}
	}
	return out
}

// FromFields returns the object of a patch carried as its top-level fields
// (raw JSON values), sharing their bytes: no JSON is parsed.
func FromFields(fields map[string][]byte) Object {
	o := make(Object, len(fields))
	for k, v := range fields {
		o[k] = v
	}
	return o
}

// Fields returns o as top-level fields (raw JSON values) sharing its bytes, the
// form patches travel in between services.
func (o Object) Fields() map[string][]byte {
	f := make(map[string][]byte, len(o))
	for k, v := range o {
		f[k] = v
	}
	return f
}

// Size is the bytes of o's names and values.
func (o Object) Size() int {
	n := 0
	for k, v := range o {
		n += len(k) + len(v)
	}
	return n
}

// PatchOf returns a patch as it travels between services: its decoded fields,
// or (from a sender that predates fields, or a caller that sends JSON) its JSON
// object, decoded. A bad JSON object is invalid_argument.
func PatchOf(fields map[string][]byte, jsonPatch []byte) (Object, error) {
	if len(fields) > 0 || len(jsonPatch) == 0 {
		return FromFields(fields), nil
	}
	patch, err := DecodeObject(jsonPatch)
	if err != nil {
		return nil, apierr.New(apierr.InvalidArgument, "Field patch %v.", err)
	}
	return patch, nil
}
