package broadcaster

import (
	"github.com/fedsync/fedsync/libs/digest"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// regionView is the hub's view of the committed state: for every document,
// the latest version the hub fanned out and the hash of its value, grouped by
// id prefix with each prefix's digest kept current (O(1) per change). It is
// what consistency verification compares with statestore (consistency.go).
// The fan-out lock guards it.
type regionView struct {
	prefixes map[string]*viewPrefix
	docs     int64
	// loaded is set once a verification has filled the view with the
	// documents committed before the hub started.
	loaded bool
}

type viewPrefix struct {
	sum  digest.Sum
	docs map[string]viewDoc
}

// viewDoc is one document in the view. seq is the log position the hub
// learned it at.
type viewDoc struct {
	version int64
	hash    uint64
	seq     uint64
	// sum is the document's leaf hash, kept to take it out of the prefix's
	// digest when the document changes.
	sum uint64
}

func newRegionView() *regionView { return &regionView{prefixes: map[string]*viewPrefix{}} }

// observe records a committed change: the document's newer version replaces
// the one held (an older or equal one, replayed, is ignored).
func (v *regionView) observe(c *fedsyncv1.Change) {
	st := c.GetState()
	d := viewDoc{version: st.GetVersion(), hash: c.GetValueHash(), seq: c.GetSeq()}
	if !c.GetValueOmitted() {
		// The value came along: hash what this hub holds, not what it was told.
		d.hash = digest.ValueHash(st.GetValue())
	}
	if cur, ok := v.get(st.GetId()); ok && cur.version >= d.version {
		return
	}
	v.set(st.GetId(), d)
}

func (v *regionView) get(id string) (viewDoc, bool) {
	p := v.prefixes[digest.Prefix(id)]
	if p == nil {
		return viewDoc{}, false
	}
	d, ok := p.docs[id]
	return d, ok
}

// set puts d as id's entry.
func (v *regionView) set(id string, d viewDoc) {
	d.sum = digest.Leaf(id, d.version, d.hash)
	name := digest.Prefix(id)
	p := v.prefixes[name]
	if p == nil {
		p = &viewPrefix{docs: map[string]viewDoc{}}
		v.prefixes[name] = p
	}
	if cur, ok := p.docs[id]; ok {
		p.sum.Remove(cur.sum)
	} else {
		v.docs++
	}
	p.docs[id] = d
	p.sum.Add(d.sum)
}

// remove drops id's entry.
func (v *regionView) remove(id string) {
	name := digest.Prefix(id)
	p := v.prefixes[name]
	if p == nil {
		return
	}
	if cur, ok := p.docs[id]; ok {
		p.sum.Remove(cur.sum)
		delete(p.docs, id)
		v.docs--
	}
	if len(p.docs) == 0 {
		delete(v.prefixes, name)
	}
}

// reset forgets everything (statestore's log restarted).
func (v *regionView) reset() {
	v.prefixes, v.docs, v.loaded = map[string]*viewPrefix{}, 0, false
}

// children returns the view's children of the nodes, as statestore's
// GetDigests does, leaving out the changed ids.
func (v *regionView) children(nodes []*fedsyncv1.DigestNode, changed map[string]bool) (map[nodeKey]digest.Sum, map[string]*fedsyncv1.Leaf) {
	sums := map[nodeKey]digest.Sum{}
	leaves := map[string]*fedsyncv1.Leaf{}
	if len(nodes) == 0 {
		for name, p := range v.prefixes {
			sums[nodeKey{name, -1}] = p.sum
		}
		for id := range changed {
			if d, ok := v.get(id); ok {
				k := nodeKey{digest.Prefix(id), -1}
				s := sums[k]
				s.Remove(d.sum)
				sums[k] = s
			}
		}
		for k, s := range sums {
			if s.Count == 0 {
				delete(sums, k)
			}
		}
		return sums, leaves
	}
	for _, n := range nodes {
		p := v.prefixes[n.GetPrefix()]
		if p == nil {
			continue
		}
		for id, d := range p.docs {
			if changed[id] {
				continue
			}
			b := digest.Bucket(id)
			switch {
			case n.GetBucket() < 0:
				k := nodeKey{n.GetPrefix(), b}
				s := sums[k]
				s.Add(d.sum)
				sums[k] = s
			case b == n.GetBucket():
				leaves[id] = &fedsyncv1.Leaf{Id: id, Version: d.version, ValueHash: d.hash}
			}
		}
	}
	return sums, leaves
}

// nodeKey names a digest tree node (bucket -1: the prefix).
type nodeKey struct {
	prefix string
	bucket int32
}
