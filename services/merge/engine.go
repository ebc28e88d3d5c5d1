package merge

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sort"

	"github.com/fedsync/fedsync/libs/datatypes"
	"github.com/fedsync/fedsync/libs/statedoc"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// This file is the pure part of merge (seed 3.3): given the stored document and
// an incoming delta, decide every field and every conflict. No I/O.

// Conflict types (seed 3.3).
const (
	WriteWrite   = "write_write"
	TypeMismatch = "type_mismatch"
	Ordering     = "ordering"
)

// Plan is what a merge decided.
type Plan struct {
	// Patch holds the final value of every field that changes (null deletes).
	Patch statedoc.Object
	// Fields is the provenance of each changed field.
	Fields map[string]*fedsyncv1.FieldMeta
	// Conflicts found, resolved or queued for review.
	Conflicts []*fedsyncv1.Conflict
}

// Engine plans merges with a set of resolvers.
type Engine struct {
	Resolvers *Resolvers
	// Now stamps conflicts (nanoseconds); it does not influence decisions.
	Now func() int64
}

// ConflictID is the id of the conflict a delta had on a field: the same on every
// re-delivery, so a conflict is recorded once.
func ConflictID(messageID, field string) string {
	sum := sha256.Sum256([]byte(messageID + "\x00" + field))
	return "cf-" + hex.EncodeToString(sum[:12])
}

// Plan merges delta d (with decoded patch) into cur (nil when the document does
// not exist). With strong the delta is known to follow the stored version (its
// compare-and-set succeeded), so nothing in it is concurrent.
//
// Per field, with L the stored value and R the incoming one:
//   - the same write seen again changes nothing (idempotence);
//   - R is concurrent with L when L was written by another writer and either the
//     delta's base_version is older than L's version (three-way: both changed
//     since the base) or, without a base, R's HLC stamp is older than L's;
//   - commutative resolvers (sum, max, min, union, append_unique) combine L and R
//     on every write; concurrency is only counted;
//   - otherwise a write that is not concurrent replaces L when it is later (the
//     same writer's older write arriving late does not), and a concurrent one is
//     a write-write conflict decided by the field's resolver (last-write-wins by
//     default);
//   - R of another JSON type than L is a type-mismatch conflict: L is kept and the
//     conflict waits in the review queue.
func (e *Engine) Plan(cur *fedsyncv1.State, d *fedsyncv1.Delta, patch statedoc.Object, ty *datatypes.Type, strong bool) (Plan, error) {
	p := Plan{Patch: statedoc.Object{}, Fields: map[string]*fedsyncv1.FieldMeta{}}
	fields := make([]string, 0, len(patch))
	for k := range patch {
		fields = append(fields, k)
	}
	sort.Strings(fields)
	// Only the patched fields of the stored document matter: read those
	// without decoding the whole document.
	value, err := statedoc.Lookup(cur.GetValue(), fields)
	if err != nil {
		return p, err
	}
	for _, k := range fields {
		rv := patch[k]
		meta := cur.GetFields()[k]
		lv, present := value[k]
		local := Side{Value: lv, Present: present, HLC: meta.GetHlc(), Writer: meta.GetWriter()}
		remote := Side{Value: rv, Present: true, HLC: d.GetHlc(), Writer: d.GetWriter()}
		if meta != nil && meta.GetHlc() == d.GetHlc() && meta.GetWriter() == d.GetWriter() {
			continue // this very write, seen again
		}
		// causallyAfter: the writer saw the stored value (strong compare-and-set,
		// or a base_version at or after it), so its write follows it.
		causallyAfter := strong || (meta != nil && d.GetHasBaseVersion() && meta.GetVersion() <= d.GetBaseVersion())
		concurrent := !causallyAfter && meta != nil && meta.GetWriter() != d.GetWriter() &&
			((d.GetHasBaseVersion() && meta.GetVersion() > d.GetBaseVersion()) ||
				(!d.GetHasBaseVersion() && d.GetHlc() < meta.GetHlc()))
		wins := meta == nil || causallyAfter || later(remote, local)
		// A write that follows what it replaces is stamped after it, so later
		// last-write-wins comparisons agree with the order it was made in.
		stamp := d.GetHlc()
		if causallyAfter && meta != nil && stamp <= meta.GetHlc() {
			stamp = meta.GetHlc() + 1
		}
		conflict := func(kind, resolution string, resolved json.RawMessage) *fedsyncv1.Conflict {
			c := &fedsyncv1.Conflict{
				Id: ConflictID(d.GetMessageId(), k), StateId: d.GetId(), DataType: d.GetDataType(), Field: k,
				Type: kind, Resolution: resolution, Local: lv, Remote: rv, Resolved: resolved,
				LocalWriter: meta.GetWriter(), RemoteWriter: d.GetWriter(), LocalVersion: cur.GetVersion(),
				MessageId: d.GetMessageId(), Status: "resolved",
			}
			if e.Now != nil {
				c.DetectedAt = e.Now()
			}
			p.Conflicts = append(p.Conflicts, c)
			return c
		}
		set := func(v json.RawMessage, resolution string, hlc int64) {
			p.Patch[k] = v
			p.Fields[k] = &fedsyncv1.FieldMeta{Hlc: hlc, Writer: d.GetWriter(), Resolution: resolution}
		}

		if statedoc.IsNull(rv) { // deletion: last write wins
			if wins {
				set(rv, "lww", stamp)
			}
			if concurrent {
				conflict(WriteWrite, "lww", p.Patch[k])
			}
			continue
		}
		if present && !statedoc.IsNull(lv) && Kind(lv) != Kind(rv) {
			c := conflict(TypeMismatch, "review", lv)
			c.Status = "pending"
			c.Detail = "The stored value is a JSON " + Kind(lv) + ", the incoming one a JSON " + Kind(rv) + "; the stored value is kept until someone resolves this."
			continue
		}
		name := ty.Resolver(k)
		fn, commutative, err := e.Resolvers.get(name)
		if err != nil {
			return p, err
		}
		switch {
		case commutative:
			merged, err := fn(local, remote)
			if errors.Is(err, errTypeMismatch) {
				c := conflict(TypeMismatch, "review", lv)
				c.Status = "pending"
				c.Detail = "Resolver " + name + " cannot combine these values; the stored value is kept until someone resolves this."
				continue
			}
			if err != nil {
				return p, err
			}
			set(merged, name, max(stamp, meta.GetHlc()))
			if concurrent {
				conflict(WriteWrite, name, merged)
			}
		case !concurrent:
			if wins {
				set(rv, name, stamp)
			}
		default:
			resolved, err := fn(local, remote)
			if err != nil {
				return p, err
			}
			conflict(WriteWrite, name, resolved)
			if string(resolved) != string(lv) {
				set(resolved, name, max(d.GetHlc(), meta.GetHlc()))
			}
		}
	}
	return p, nil
}
