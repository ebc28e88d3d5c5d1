package main

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// The correctness accounting. Every delta a writer sends carries its writer
// (agent index) and that writer's sequence number n in its value, so whatever a
// subscriber receives can be traced back to one delta. The tracker checks, per
// subscriber:
//
//   - every acknowledged delta whose id matches the subscriber's prefix is seen
//     exactly once (lost = never seen, duplicate = seen again as another change);
//   - the versions of each id arrive in increasing order (out of order = lower
//     than one seen before, a repeated version is a duplicate delivery), and with
//     no gap where the system numbers versions 1, 2, 3, ... per id (gap = a
//     committed version that never arrived);
//   - at the end the last version seen per id is the system's final version
//     (convergence).
//
// Deltas that are acknowledged but legitimately produce no change of their own
// (fedsync's "superseded" outcome when several writers race on one id) are
// excused by the caller: Verify takes what the system says became of each
// delta no subscriber saw, and excuses the ones in Excusable.

// deltaKey identifies one delta: writer index and the writer's sequence number.
type deltaKey uint64

func keyOf(writer int, n int64) deltaKey { return deltaKey(uint64(writer)<<40 | uint64(n)&(1<<40-1)) }

func (k deltaKey) writer() int { return int(uint64(k) >> 40) }
func (k deltaKey) seq() int64  { return int64(uint64(k) & (1<<40 - 1)) }

// ack is one acknowledged delta.
type ack struct {
	n  int64
	id int32 // index into Tracker.ids
}

// idState is what a subscriber knows about one id.
type idState struct {
	last int64 // last version seen
}

// subState is one subscriber's view. Only its own goroutine writes it while the
// run lasts; the mutex makes the reads of the progress line and of Verify safe.
type subState struct {
	mu     sync.Mutex
	prefix string
	seen   map[deltaKey]uint16
	ids    map[string]*idState
	// counters
	observations int64 // change messages handled
	dupVersion   int64 // the same version of an id delivered again
	dupDelta     int64 // one delta delivered as two different changes
	outOfOrder   int64
	gaps         int64
	foreign      int64 // values that are not fedbench's (no writer/seq)
}

// Tracker accounts for one run (one system, one scenario step).
type Tracker struct {
	// contiguous: the system numbers versions 1, 2, 3, ... per id, so a jump is a
	// lost committed version (fedsync, etcd); NATS KV revisions are stream
	// sequence numbers and only increase.
	contiguous bool

	ids     []string
	idIndex map[string]int32
	// matches[id index] are the subscribers whose prefix matches the id.
	matches [][]int

	acks    [][]ack // per writer, appended only by that writer's goroutine
	unacked []int64 // per writer: deltas sent without an acknowledgement

	subs []*subState

	// firstSeen counts first observations of a delta by a subscriber, for the
	// drain: the run is drained once it reaches the expected count.
	firstSeen atomic.Int64
	expected  atomic.Int64
}

// NewTracker prepares accounting for writers writing ids, and subscribers on
// prefixes (a subscriber sees every id that starts with its prefix).
func NewTracker(writers int, ids []string, prefixes []string, contiguous bool) *Tracker {
	t := &Tracker{contiguous: contiguous, ids: ids, idIndex: map[string]int32{}, acks: make([][]ack, writers), unacked: make([]int64, writers)}
	for i, id := range ids {
		t.idIndex[id] = int32(i)
	}
	t.matches = make([][]int, len(ids))
	for j, p := range prefixes {
		t.subs = append(t.subs, &subState{prefix: p, seen: map[deltaKey]uint16{}, ids: map[string]*idState{}})
		for i, id := range ids {
			if strings.HasPrefix(id, p) {
				t.matches[i] = append(t.matches[i], j)
			}
		}
	}
	return t
}

// Acked records that writer's delta n to id was acknowledged. Each writer calls
// it from its own goroutine only.
func (t *Tracker) Acked(writer int, n int64, id string) {
	idx, ok := t.idIndex[id]
	if !ok {
		return
	}
	t.acks[writer] = append(t.acks[writer], ack{n: n, id: idx})
	t.expected.Add(int64(len(t.matches[idx])))
}

// Unacked records that a delta was sent but not acknowledged (an error or a
// timeout): it may or may not have been committed, so seeing it is no error and
// not seeing it is no loss.
func (t *Tracker) Unacked(writer int) { t.unacked[writer]++ }

// Observation is what a subscriber received: one change of one id.
type Observation struct {
	ID      string
	Version int64
	Writer  int
	Seq     int64 // 0: not a fedbench value
}

// Observe accounts for one change received by subscriber sub. It returns true
// the first time this subscriber sees this delta (the moment that counts for
// propagation latency).
func (t *Tracker) Observe(sub int, o Observation) (first bool) {
	s := t.subs[sub]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.observations++
	st := s.ids[o.ID]
	switch {
	case st == nil:
		st = &idState{}
		s.ids[o.ID] = st
	case o.Version == st.last:
		s.dupVersion++
		return false
	case o.Version < st.last:
		s.outOfOrder++
	case t.contiguous && o.Version > st.last+1:
		s.gaps += o.Version - st.last - 1
	}
	if o.Version > st.last {
		st.last = o.Version
	}
	if o.Seq <= 0 {
		s.foreign++
		return false
	}
	k := keyOf(o.Writer, o.Seq)
	c := s.seen[k]
	s.seen[k] = c + 1
	if c > 0 {
		s.dupDelta++
		return false
	}
	t.firstSeen.Add(1)
	return true
}

// Progress returns first observations and the number expected so far (each
// acknowledged delta times the subscribers that should see it).
func (t *Tracker) Progress() (seen, expected int64) { return t.firstSeen.Load(), t.expected.Load() }

// LastSeen returns, for subscriber sub, the last version it saw of each id.
func (t *Tracker) LastSeen(sub int) map[string]int64 {
	s := t.subs[sub]
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.ids))
	for id, st := range s.ids {
		out[id] = st.last
	}
	return out
}

// Correctness is the verdict of a run.
type Correctness struct {
	Acked        int64 `json:"acked"`
	Unacked      int64 `json:"unacked"`
	Expected     int64 `json:"expected_deliveries"`
	Observations int64 `json:"observations"`
	// Lost: acknowledged deltas a matching subscriber never saw (per subscriber).
	Lost int64 `json:"lost"`
	// Duplicates: a version delivered twice, or one delta delivered as two changes.
	Duplicates        int64 `json:"duplicates"`
	DuplicateVersions int64 `json:"duplicate_versions"`
	DuplicateDeltas   int64 `json:"duplicate_deltas"`
	OutOfOrder        int64 `json:"out_of_order"`
	// Gaps: versions skipped on a subscriber (systems with contiguous versions).
	Gaps int64 `json:"gaps"`
	// Excused: acknowledged deltas that no subscriber saw because the system
	// reports they produced no change of their own (fedsync: superseded).
	Excused map[string]int64 `json:"excused,omitempty"`
	// MissingOutcomes: what the system said became of unseen deltas it does not
	// account for (counted as lost): e.g. "committed", "outcome 404".
	MissingOutcomes map[string]int64 `json:"missing_outcomes,omitempty"`
	// Converged: every subscriber's last version of every id it watches equals
	// the system's final version. Diverged counts (subscriber, id) pairs that differ.
	Converged    bool     `json:"converged"`
	Diverged     int64    `json:"diverged"`
	Foreign      int64    `json:"foreign_values,omitempty"`
	LostExamples []string `json:"lost_examples,omitempty"`
	Checked      bool     `json:"convergence_checked"`
}

// Failed reports whether the run broke a correctness rule.
func (c Correctness) Failed() bool {
	return c.Lost > 0 || c.Duplicates > 0 || c.OutOfOrder > 0 || c.Gaps > 0 || (c.Checked && !c.Converged)
}

// Missing returns the acknowledged deltas that no matching subscriber saw at all,
// for the caller to look up (fedsync outcomes), with their ids.
func (t *Tracker) Missing() map[deltaKey]string {
	out := map[deltaKey]string{}
	for w, as := range t.acks {
		for _, a := range as {
			k := keyOf(w, a.n)
			subs := t.matches[a.id]
			if len(subs) == 0 {
				continue
			}
			any := false
			for _, j := range subs {
				s := t.subs[j]
				s.mu.Lock()
				c := s.seen[k]
				s.mu.Unlock()
				if c > 0 {
					any = true
					break
				}
			}
			if !any {
				out[k] = t.ids[a.id]
			}
		}
	}
	return out
}

// Excusable are the outcomes that account for an acknowledged delta no
// subscriber saw: it produced no change of its own.
var Excusable = map[string]bool{"superseded": true, "duplicate": true}

// Verify computes the verdict. outcomes says what the system reports became of
// deltas that no subscriber saw (excusable ones are not losses; the others are
// counted by status in MissingOutcomes); final gives the system's final version
// per id (nil skips the convergence check).
func (t *Tracker) Verify(outcomes map[deltaKey]string, final map[string]int64) Correctness {
	c := Correctness{Converged: true, Excused: map[string]int64{}, MissingOutcomes: map[string]int64{}}
	for _, u := range t.unacked {
		c.Unacked += u
	}
	for w, as := range t.acks {
		c.Acked += int64(len(as))
		for _, a := range as {
			k := keyOf(w, a.n)
			if status, ok := outcomes[k]; ok {
				if Excusable[status] {
					c.Excused[status]++
					continue
				}
				c.MissingOutcomes[status]++
			}
			for _, j := range t.matches[a.id] {
				c.Expected++
				s := t.subs[j]
				s.mu.Lock()
				seen := s.seen[k]
				s.mu.Unlock()
				if seen == 0 {
					c.Lost++
					if len(c.LostExamples) < 5 {
						c.LostExamples = append(c.LostExamples, lostName(t.ids[a.id], w, a.n, j))
					}
				}
			}
		}
	}
	for _, s := range t.subs {
		s.mu.Lock()
		c.Observations += s.observations
		c.Duplicates += s.dupVersion + s.dupDelta
		c.DuplicateVersions += s.dupVersion
		c.DuplicateDeltas += s.dupDelta
		c.OutOfOrder += s.outOfOrder
		c.Gaps += s.gaps
		c.Foreign += s.foreign
		s.mu.Unlock()
	}
	if final != nil {
		c.Checked = true
		ids := make([]string, 0, len(final))
		for id := range final {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			idx, ok := t.idIndex[id]
			if !ok {
				continue
			}
			for _, j := range t.matches[idx] {
				s := t.subs[j]
				s.mu.Lock()
				var last int64
				if st := s.ids[id]; st != nil {
					last = st.last
				}
				s.mu.Unlock()
				if last != final[id] {
					c.Diverged++
					c.Converged = false
				}
			}
		}
	}
	if len(c.Excused) == 0 {
		c.Excused = nil
	}
	if len(c.MissingOutcomes) == 0 {
		c.MissingOutcomes = nil
	}
	return c
}

func lostName(id string, writer int, n int64, sub int) string {
	return fmt.Sprintf("%s (writer %d, seq %d) at subscriber %d", id, writer, n, sub)
}
