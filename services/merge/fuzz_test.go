package merge

import (
	"testing"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/statedoc"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// FuzzPlan decodes arbitrary patch and document bytes and merges them: decoding
// must fail cleanly, the merge must succeed or refuse the delta with
// invalid_argument, never panic, and a value it
// produces must be a JSON object.
func FuzzPlan(f *testing.F) {
	f.Add([]byte(`{"a":1}`), []byte(`{"a":"x","tags":["a"]}`), int64(5), int64(3))
	f.Add([]byte(`{"tags":[1,{"k":null}],"count":1e308}`), []byte(`{"count":1e308}`), int64(1), int64(9))
	f.Add([]byte(`{"a":null}`), []byte(`{}`), int64(0), int64(0))
	reg := testRegistry(f).Get()
	kg, _ := reg.Lookup("kg")
	e := &Engine{Resolvers: NewResolvers()}
	f.Fuzz(func(t *testing.T, patch, stored []byte, hlc, storedHLC int64) {
		p, err := statedoc.DecodeObject(patch)
		if err != nil {
			return
		}
		if _, err := statedoc.DecodeObject(stored); err != nil {
			return
		}
		cur := &fedsyncv1.State{Id: "doc", DataType: "kg", Value: stored, Version: 1, Fields: map[string]*fedsyncv1.FieldMeta{}}
		sv, _ := statedoc.DecodeObject(stored)
		for k := range sv {
			cur.Fields[k] = &fedsyncv1.FieldMeta{Hlc: storedHLC, Writer: "ai-001", Version: 1}
		}
		d := &fedsyncv1.Delta{Id: "doc", DataType: "kg", Patch: patch, Writer: "ai-002", Hlc: hlc, MessageId: "m"}
		plan, err := e.Plan(cur, d, p, kg, false)
		if e := apierr.As(err); err != nil && e.Code == apierr.InvalidArgument {
			return // refused for a reason the writer is told (a sum beyond a double)
		}
		if err != nil {
			t.Fatalf("plan: %v", err)
		}
		sv.Apply(plan.Patch)
		if _, err := statedoc.DecodeObject(sv.Encode()); err != nil {
			t.Fatalf("merged value is not an object: %s", sv.Encode())
		}
	})
}
