package broadcaster

import (
	"slices"

	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// subIndex finds the subscriptions a change matches without looking at all of
// them: subscriptions are grouped by id prefix, and a change with id x looks up
// x[:n] for each prefix length n in use (a handful: "", "ai-042:", ...).
type subIndex struct {
	buckets map[string]*[]*Subscription
	// lengths counts the buckets per prefix length; sorted lists those
	// lengths in increasing order.
	lengths map[int]int
	sorted  []int
}

func newSubIndex() *subIndex {
	return &subIndex{buckets: map[string]*[]*Subscription{}, lengths: map[int]int{}}
}

func (x *subIndex) add(sub *Subscription) {
	p := sub.Filter.IDPrefix
	b := x.buckets[p]
	if b == nil {
		b = new([]*Subscription)
		x.buckets[p] = b
		if x.lengths[len(p)]++; x.lengths[len(p)] == 1 {
			x.sorted = append(x.sorted, len(p))
			slices.Sort(x.sorted)
		}
	}
	sub.indexPos = len(*b)
	*b = append(*b, sub)
}

func (x *subIndex) remove(sub *Subscription) {
	p := sub.Filter.IDPrefix
	b := x.buckets[p]
	if b == nil || sub.indexPos >= len(*b) || (*b)[sub.indexPos] != sub {
		return
	}
	last := len(*b) - 1
	moved := (*b)[last]
	(*b)[sub.indexPos] = moved
	moved.indexPos = sub.indexPos
	(*b)[last] = nil
	*b = (*b)[:last]
	if last == 0 {
		delete(x.buckets, p)
		if x.lengths[len(p)]--; x.lengths[len(p)] == 0 {
			delete(x.lengths, len(p))
			x.sorted = slices.DeleteFunc(x.sorted, func(n int) bool { return n == len(p) })
		}
	} else if cap(*b) > 64 && last < cap(*b)/4 {
		*b = slices.Clone(*b) // a smaller array; Clip would keep the large one
	}
}

// match appends to out the subscriptions whose filter matches st.
func (x *subIndex) match(st *fedsyncv1.State, out []*Subscription) []*Subscription {
	id := st.GetId()
	for _, n := range x.sorted {
		if n > len(id) {
			break
		}
		if b := x.buckets[id[:n]]; b != nil {
			for _, sub := range *b {
				if sub.Filter.match(st) {
					out = append(out, sub)
				}
			}
		}
	}
	return out
}
