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
	"time"

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
