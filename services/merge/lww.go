package merge

import (
	"github.com/fedsync/fedsync/libs/statedoc"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// This file is the pure part of merge: no I/O, only decisions.

// wins reports whether a write stamped (hlc, writer) beats the field's current
// provenance under last-write-wins: the later hybrid-logical-clock stamp wins, and
// the writer id breaks ties. A write equal to the current one (the same delta seen
// again) does not win, which makes re-delivery a no-op.
func wins(hlc int64, writer string, cur *fedsyncv1.FieldMeta) bool {
	if cur == nil {
		return true
	}
	if hlc != cur.GetHlc() {
		return hlc > cur.GetHlc()
	}
	return writer > cur.GetWriter()
}

// planEventual returns the apply request that merges d into cur (nil when the
// document does not exist yet) under per-field last-write-wins, or nil when no
// field of d wins. The request is a compare-and-set on cur's version.
func planEventual(cur *fedsyncv1.State, d *fedsyncv1.Delta, patch statedoc.Object) *fedsyncv1.ApplyRequest {
	winning := statedoc.Object{}
	fields := map[string]*fedsyncv1.FieldMeta{}
	for k, v := range patch {
		if wins(d.GetHlc(), d.GetWriter(), cur.GetFields()[k]) {
			winning[k] = v
			fields[k] = &fedsyncv1.FieldMeta{Hlc: d.GetHlc(), Writer: d.GetWriter()}
		}
	}
	if len(winning) == 0 {
		return nil
	}
	return applyRequest(d, winning, fields, cur.GetVersion())
}

// planStrong returns the compare-and-set request of a strong delta: every field is
// written, at the version the writer based it on, stamped after every stamp the
// document has so later eventual writes order after it.
func planStrong(cur *fedsyncv1.State, d *fedsyncv1.Delta, patch statedoc.Object) *fedsyncv1.ApplyRequest {
	stamp := d.GetHlc()
	for _, f := range cur.GetFields() {
		if f.GetHlc() >= stamp {
			stamp = f.GetHlc() + 1
		}
	}
	fields := map[string]*fedsyncv1.FieldMeta{}
	for k := range patch {
		fields[k] = &fedsyncv1.FieldMeta{Hlc: stamp, Writer: d.GetWriter()}
	}
	return applyRequest(d, patch, fields, d.GetExpectedVersion())
}

func applyRequest(d *fedsyncv1.Delta, patch statedoc.Object, fields map[string]*fedsyncv1.FieldMeta, expected int64) *fedsyncv1.ApplyRequest {
	return &fedsyncv1.ApplyRequest{
		Id:                 d.GetId(),
		DataType:           d.GetDataType(),
		Patch:              patch.Encode(),
		Fields:             fields,
		ExpectedVersion:    expected,
		HasExpectedVersion: true,
		VectorClock:        d.GetVectorClock(),
		MessageId:          d.GetMessageId(),
		Writer:             d.GetWriter(),
		AdmittedAt:         d.GetHlc(),
		Region:             d.GetRegion(),
	}
}
