package broadcaster

import (
	"bytes"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/statedoc"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// frame is one committed change as subscribers receive it. The hub builds one
// per change for all the subscriptions it matches and encodes it at most once
// per form (whole document or delta) and wire format (JSON for WebSocket and
// webhooks, protobuf for gRPC); every subscription gets the same bytes. The
// per-subscription part of a message (its subscription_id) is a prefix the
// transport writes before them (see jsonChangePrefix and protoChangePrefix).
type frame struct {
	change *fedsyncv1.Change
	// value is the whole document, for full subscriptions; valueErr says why
	// it could not be had (value left out of the record and not readable).
	value    []byte
	valueErr error
	// changeErr is set when not even the change could be had (a
	// change_omitted record whose log entry could not be read): valueErr
	// then ends delta subscriptions too.
	changeErr bool
	// set and removed are the delta, for delta subscriptions.
	set     []byte
	removed []string
	// sc is the span of the change's fan-out when it is traced: each
	// subscriber's frame is a span under it.
	sc trace.SpanContext

	enc [4]struct {
		once sync.Once
		b    []byte
	}
}

const (
	encJSONFull = iota
	encJSONDelta
	encProtoFull
	encProtoDelta
)

// frameOverhead approximates the bytes of a change message besides its
// document or delta, for the subscriber byte bound.
const frameOverhead = 192

// size is what the frame counts against a subscriber's byte bound in the given
// form: roughly the size of the message the subscriber receives.
func (f *frame) size(delta bool) int64 {
	n := frameOverhead + len(f.change.GetState().GetId())
	if delta {
		n += len(f.set)
		for _, r := range f.removed {
			n += len(r) + 3
		}
	} else {
		n += len(f.value)
	}
	return int64(n)
}

// fullBody and deltaBody are the shared part of a WebSocket change message, in
// the order the fields have always been written.
type fullBody struct {
	ID        string          `json:"id"`
	DataType  string          `json:"data_type"`
	Version   int64           `json:"version"`
	Value     json.RawMessage `json:"value"`
	UpdatedBy string          `json:"updated_by"`
	UpdatedAt string          `json:"updated_at"`
	Cursor    string          `json:"cursor"`
}

type deltaBody struct {
	ID        string          `json:"id"`
	DataType  string          `json:"data_type"`
	Version   int64           `json:"version"`
	Set       json.RawMessage `json:"set"`
	Removed   []string        `json:"removed"`
	UpdatedBy string          `json:"updated_by"`
	UpdatedAt string          `json:"updated_at"`
	Cursor    string          `json:"cursor"`
}

// objectOrEmpty returns b, or {} when b is empty.
func objectOrEmpty(b []byte) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("{}")
	}
	return b
}

// json returns the change's JSON message without its opening brace and the
// fields before "id": what follows jsonChangePrefix. Encoded once per form.
func (f *frame) json(delta bool) []byte {
	i := encJSONFull
	if delta {
		i = encJSONDelta
	}
	e := &f.enc[i]
	e.once.Do(func() {
		st := f.change.GetState()
		at := time.Unix(0, st.GetUpdatedAt()).UTC().Format(time.RFC3339Nano)
		cursor := FormatCursor(f.change.GetSeq())
		// The document (or set) is spliced in as it is when it is canonical
		// already, as statestore writes it: encoding/json would validate,
		// compact and copy it again, which for large documents was most of
		// the hub's CPU.
		build := func(doc json.RawMessage) any {
			if delta {
				return deltaBody{ID: st.GetId(), DataType: st.GetDataType(), Version: st.GetVersion(), Set: doc,
					Removed: nonNil(f.removed), UpdatedBy: st.GetUpdatedBy(), UpdatedAt: at, Cursor: cursor}
			}
			return fullBody{ID: st.GetId(), DataType: st.GetDataType(), Version: st.GetVersion(), Value: doc,
				UpdatedBy: st.GetUpdatedBy(), UpdatedAt: at, Cursor: cursor}
		}
		doc, key, next := objectOrEmpty(f.value), `,"value":`, `,"updated_by":`
		if delta {
			doc, key, next = objectOrEmpty(f.set), `,"set":`, `,"removed":`
		}
		var b []byte
		var err error
		// statestore writes documents and sets canonical (encoding/json's
		// form), and the hub rebuilds them with the same code: trusted as
		// they are, not checked byte by byte again.
		if len(doc) > 64 && doc[0] == '{' && doc[len(doc)-1] == '}' {
			b, err = json.Marshal(build(json.RawMessage("0")))
			// Strings in the message are escaped, so the first unescaped
			// `,"value":0,"updated_by":` is the field itself.
			if i := bytes.Index(b, []byte(key+"0"+next)); err == nil && i >= 0 {
				at := i + len(key)
				b = append(append(append(make([]byte, 0, len(b)+len(doc)), b[:at]...), doc...), b[at+1:]...)
			} else {
				b, err = json.Marshal(build(doc))
			}
		} else {
			b, err = json.Marshal(build(doc))
		}
		if err != nil {
			// Only a document that is not JSON gets here; statestore stores
			// JSON objects only. Deliver the change without it.
			if delta {
				b, _ = json.Marshal(deltaBody{ID: st.GetId(), DataType: st.GetDataType(), Version: st.GetVersion(), Set: json.RawMessage("{}"),
					Removed: []string{}, UpdatedBy: st.GetUpdatedBy(), UpdatedAt: at, Cursor: cursor})
			} else {
				b, _ = json.Marshal(fullBody{ID: st.GetId(), DataType: st.GetDataType(), Version: st.GetVersion(), Value: json.RawMessage("{}"),
					UpdatedBy: st.GetUpdatedBy(), UpdatedAt: at, Cursor: cursor})
			}
		}
		e.b = b[1:]
	})
	return e.b
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// jsonChangePrefix starts a change message of one subscription; the frame's
// json follows it. An empty id leaves subscription_id out.
func jsonChangePrefix(subID string) []byte {
	if subID == "" {
		return []byte(`{"type":"change",`)
	}
	id, _ := json.Marshal(subID)
	return []byte(`{"type":"change","subscription_id":` + string(id) + `,`)
}

// proto returns the change's SubscribeResponse in protobuf wire form without
// subscription_id. Encoded once per form.
func (f *frame) proto(delta bool) []byte {
	i := encProtoFull
	if delta {
		i = encProtoDelta
	}
	e := &f.enc[i]
	e.once.Do(func() {
		st := f.change.GetState()
		m := &fedsyncv1.SubscribeResponse{Type: "change", Id: st.GetId(), DataType: st.GetDataType(), Version: st.GetVersion(),
			UpdatedBy: st.GetUpdatedBy(), Cursor: FormatCursor(f.change.GetSeq())}
		if delta {
			m.Set, m.Removed = objectOrEmpty(f.set), f.removed
		} else {
			m.Value = objectOrEmpty(f.value)
		}
		e.b, _ = proto.Marshal(m)
	})
	return e.b
}

// protoChangePrefix is a subscription's own field of a SubscribeResponse in wire
// form. Protobuf messages concatenate: this followed by a frame's proto bytes is
// the whole response.
func protoChangePrefix(subID string) []byte {
	b, _ := proto.Marshal(&fedsyncv1.SubscribeResponse{SubscriptionId: subID})
	return b
}

// applyChange returns the document prev with a change's set and removed
// applied, encoded the way statestore encodes documents (statedoc), so the
// bytes equal the stored version's.
func applyChange(prev, set []byte, removed []string) ([]byte, error) {
	patch := statedoc.Object{}
	if len(set) > 0 {
		var err error
		if patch, err = statedoc.DecodeObject(set); err != nil {
			return nil, err
		}
	}
	for _, k := range removed {
		patch[k] = json.RawMessage("null")
	}
	return statedoc.Patched(prev, patch)
}

// diffDocs returns what turns document prev into cur: the fields cur sets to a
// new value, as a JSON object, and the fields it no longer has, in name order.
func diffDocs(prev, cur []byte) (set []byte, removed []string, err error) {
	a, err := decodeOrEmpty(prev)
	if err != nil {
		return nil, nil, err
	}
	b, err := decodeOrEmpty(cur)
	if err != nil {
		return nil, nil, err
	}
	changed := statedoc.Object{}
	for k, v := range b {
		if old, ok := a[k]; !ok || string(old) != string(v) {
			changed[k] = v
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			removed = append(removed, k)
		}
	}
	slices.Sort(removed)
	return changed.Encode(), removed, nil
}

func decodeOrEmpty(b []byte) (statedoc.Object, error) {
	if len(b) == 0 {
		return statedoc.Object{}, nil
	}
	return statedoc.DecodeObject(b)
}
