package merge

import (
	"testing"

	"github.com/fedsync/fedsync/libs/statedoc"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

func stored(value string, version int64, fields map[string]*fedsyncv1.FieldMeta) *fedsyncv1.State {
	return &fedsyncv1.State{Id: "doc", DataType: "kg", Value: []byte(value), Version: version, Fields: fields}
}

func meta(hlc int64, writer string, version int64) *fedsyncv1.FieldMeta {
	return &fedsyncv1.FieldMeta{Hlc: hlc, Writer: writer, Version: version}
}

// TestPlanConflictTypes covers each of the seed's conflict types and each
// resolution path of the three-way merge.
func TestPlanConflictTypes(t *testing.T) {
	reg := testRegistry(t).Get()
	kg, _ := reg.Lookup("kg")
	e := &Engine{Resolvers: NewResolvers()}
	cur := stored(`{"title":"a","count":5,"tags":["x"],"size":3}`, 4, map[string]*fedsyncv1.FieldMeta{
		"title": meta(100, "ai-001", 3), "count": meta(100, "ai-001", 3), "tags": meta(100, "ai-001", 3), "size": meta(100, "ai-001", 3),
	})
	tests := []struct {
		name          string
		delta         *fedsyncv1.Delta
		wantPatch     string
		wantConflicts []string // type/resolution per conflict, in field order
	}{
		{"newer write replaces", &fedsyncv1.Delta{Writer: "ai-002", Hlc: 200, Patch: []byte(`{"title":"b"}`)}, `{"title":"b"}`, nil},
		{"older concurrent write loses (lww)", &fedsyncv1.Delta{Writer: "ai-002", Hlc: 50, Patch: []byte(`{"title":"b"}`)}, `{}`, []string{"write_write/lww"}},
		{"three-way: base older than local is concurrent", &fedsyncv1.Delta{Writer: "ai-002", Hlc: 200, HasBaseVersion: true, BaseVersion: 2, Patch: []byte(`{"title":"b"}`)}, `{"title":"b"}`, []string{"write_write/lww"}},
		{"three-way: writer saw local, wins despite clock", &fedsyncv1.Delta{Writer: "ai-002", Hlc: 50, HasBaseVersion: true, BaseVersion: 3, Patch: []byte(`{"title":"b"}`)}, `{"title":"b"}`, nil},
		{"commutative sum merges concurrent writes", &fedsyncv1.Delta{Writer: "ai-002", Hlc: 50, Patch: []byte(`{"count":2}`)}, `{"count":7}`, []string{"write_write/sum"}},
		{"union merges", &fedsyncv1.Delta{Writer: "ai-002", Hlc: 200, Patch: []byte(`{"tags":["y"]}`)}, `{"tags":["x","y"]}`, nil},
		{"type mismatch keeps local, goes to review", &fedsyncv1.Delta{Writer: "ai-002", Hlc: 200, Patch: []byte(`{"size":"big"}`)}, `{}`, []string{"type_mismatch/review"}},
		{"resolver type mismatch goes to review", &fedsyncv1.Delta{Writer: "ai-002", Hlc: 200, Patch: []byte(`{"count":"many"}`)}, `{}`, []string{"type_mismatch/review"}},
		{"older concurrent delete loses", &fedsyncv1.Delta{Writer: "ai-002", Hlc: 50, Patch: []byte(`{"title":null}`)}, `{}`, []string{"write_write/lww"}},
		{"newer delete wins", &fedsyncv1.Delta{Writer: "ai-002", Hlc: 200, Patch: []byte(`{"title":null}`)}, `{"title":null}`, nil},
		{"the same write again changes nothing", &fedsyncv1.Delta{Writer: "ai-001", Hlc: 100, Patch: []byte(`{"count":5}`)}, `{}`, nil},
		{"the same writer's older write arriving late changes nothing", &fedsyncv1.Delta{Writer: "ai-001", Hlc: 90, Patch: []byte(`{"title":"c"}`)}, `{}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.delta.Id, tt.delta.DataType, tt.delta.MessageId = "doc", "kg", "m"
			patch, _ := statedoc.DecodeObject(tt.delta.Patch)
			p, err := e.Plan(cur, tt.delta, patch, kg, false)
			if err != nil {
				t.Fatal(err)
			}
			raw := map[string]string{}
			for k, v := range p.Patch {
				raw[k] = string(v)
			}
			if got := string(p.Patch.Encode()); got != tt.wantPatch {
				t.Errorf("patch %s, want %s", got, tt.wantPatch)
			}
			var got []string
			for _, c := range p.Conflicts {
				got = append(got, c.Type+"/"+c.Resolution)
				if c.Type == TypeMismatch && c.Status != "pending" {
					t.Errorf("type mismatch not queued for review: %+v", c)
				}
			}
			if len(got) != len(tt.wantConflicts) || (len(got) > 0 && got[0] != tt.wantConflicts[0]) {
				t.Errorf("conflicts %v, want %v", got, tt.wantConflicts)
			}
		})
	}
}

func TestConflictIDIsStable(t *testing.T) {
	first, again := ConflictID("m1", "a"), ConflictID("m1", "a") // computed twice, as for a re-delivered delta
	if first != again || first == ConflictID("m1", "b") || first == ConflictID("m2", "a") {
		t.Fatal("conflict ids must be the same for a re-delivered delta and differ per field")
	}
}
