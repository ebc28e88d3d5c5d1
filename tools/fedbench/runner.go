package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Scenario is the shape of one workload.
type Scenario struct {
	Name        string        `json:"name"`
	Agents      int           `json:"agents"`
	Subscribers int           `json:"subscribers"`
	Rate        float64       `json:"target_rate"` // aggregate deltas/s; 0 = as fast as acknowledgements allow
	Warmup      time.Duration `json:"-"`
	Duration    time.Duration `json:"-"`
	Drain       time.Duration `json:"-"`
	// KeysPerAgent: each agent writes its own ids <agent>:k0 .. k<n-1> in turn.
	KeysPerAgent int `json:"keys_per_agent"`
	// WritersPerAgent > 1: each agent writes over that many connections at
	// once (one synchronous writer each, with the agent's token), writer s of
	// an agent taking its ids k with k % WritersPerAgent == s, so that every id
	// still has one writer. More writes in flight than one per agent is what
	// it takes to offer more than acknowledgements allow one writer per agent
	// (the overload preset).
	WritersPerAgent int `json:"writers_per_agent,omitempty"`
	// SharedIDs > 0: every agent writes ids shared-bench:doc-0 .. doc-<n-1> at
	// random instead (the conflict preset).
	SharedIDs int `json:"shared_ids,omitempty"`
	// ValueSize pads each value to about this many bytes.
	ValueSize int `json:"value_bytes"`
	// SubscribeMode: "all" = every subscriber watches every id of the workload;
	// "agent" = subscriber j watches agent j%agents's prefix.
	SubscribeMode string `json:"subscribe_mode"`
	// BaseVersion: writers send the version they last saw (fedsync's base_version,
	// the base of its three-way merge); the baselines have no such field.
	BaseVersion bool `json:"base_version,omitempty"`
	// MaxP99 > 0: the max preset's step search keeps the highest rate whose p99
	// stays under it.
	MaxP99   time.Duration `json:"-"`
	MaxSteps int           `json:"-"`
	// DirectSubscribe: fedsync's WebSocket subscribers connect straight to the
	// regional broadcasters rather than through the dev edge. The edge is one Go
	// reverse proxy holding two sockets per subscriber; 10,000 subscribers need
	// more than the 20,000 open files a process may have on these machines. (In
	// Kubernetes the Ingress is that hop.)
	DirectSubscribe bool `json:"direct_subscribe,omitempty"`
	// Events is what fedsync's subscribers ask for: "full" (every change carries
	// the whole document; the default), "delta" (what the change set and
	// removed), or "both" (even-numbered subscribers full, odd ones delta). The
	// baselines have no partial update and always deliver the whole value.
	Events string `json:"events,omitempty"`
	// DocBytes > 0 (the growing preset): every id is first written as a
	// document of about DocBytes made of fields of about 1 KiB (fedsync: in
	// deltas of 64 fields, under the 1 MiB request limit), before the warm-up;
	// then each fedsync delta sets one field of about ValueSize bytes, while the
	// baselines, which have no partial update, put the whole value of about
	// DocBytes each time.
	DocBytes int `json:"doc_bytes,omitempty"`
	// Overload: the overload preset (runOverload): the offered load is Rate, or
	// twice what fedsync committed per second in a probe of ProbeWarmup +
	// ProbeDuration written as fast as acknowledgements allow.
	Overload bool `json:"overload,omitempty"`
	// Members > 1: etcd and NATS run as clusters of that many on loopback,
	// with NATS's KV bucket replicated on all (the ha preset); fedsync's
	// statestore is a Raft group of three anyway.
	Members       int           `json:"members,omitempty"`
	ProbeWarmup   time.Duration `json:"-"`
	ProbeDuration time.Duration `json:"-"`
}

// subscriberEvents returns what each subscriber asks for: "full" or "delta".
func (sc Scenario) subscriberEvents() []string {
	out := make([]string, sc.Subscribers)
	for j := range out {
		switch {
		case sc.Events == "delta", sc.Events == "both" && j%2 == 1:
			out[j] = "delta"
		default:
			out[j] = "full"
		}
	}
	return out
}

// docField is the size of one field of a seeded document, docChunk the fields
// per seeding delta.
const (
	docField = 1024
	docChunk = 64
)

// docChunks returns the JSON objects that together make a document of about
// size bytes: fields "f0000", "f0001", ... of docField bytes each (key, quotes
// and comma included), hex, docChunk fields per object.
func docChunks(size int) [][]byte {
	n := max(size/docField, 1)
	pad := padding(n * docField)
	var out [][]byte
	for first := 0; first < n; first += docChunk {
		var b []byte
		b = append(b, '{')
		for i := first; i < min(first+docChunk, n); i++ {
			if i > first {
				b = append(b, ',')
			}
			// "f0000":"<hex>" is 10 bytes plus the hex; the comma makes docField.
			b = fmt.Appendf(b, `"f%04d":"`, i)
			b = append(b, pad[i*docField:i*docField+docField-11]...)
			b = append(b, '"')
		}
		out = append(out, append(b, '}'))
	}
	return out
}

const sharedPrefix = "shared-bench:"

// writers is the number of writer connections: WritersPerAgent per agent.
func (sc Scenario) writers() int { return sc.Agents * max(sc.WritersPerAgent, 1) }

// writerAgent is the agent whose client (token, ids) writer w uses.
func (sc Scenario) writerAgent(w int) int { return w % sc.Agents }

// writerIDs are the indices into ids() that writer w writes (nil with shared
// ids, where every writer writes any of them).
func (sc Scenario) writerIDs(w int) []int {
	if sc.SharedIDs > 0 {
		return nil
	}
	per := max(sc.WritersPerAgent, 1)
	a, slot := sc.writerAgent(w), w/sc.Agents
	var out []int
	for k := 0; k < sc.KeysPerAgent; k++ {
		if k%per == slot {
			out = append(out, a*sc.KeysPerAgent+k)
		}
	}
	return out
}

func agentName(a int) string { return fmt.Sprintf("ai-%03d", a+1) }

// ids returns every id the workload writes.
func (sc Scenario) ids() []string {
	var ids []string
	if sc.SharedIDs > 0 {
		for i := 0; i < sc.SharedIDs; i++ {
			ids = append(ids, fmt.Sprintf("%sdoc-%d", sharedPrefix, i))
		}
		return ids
	}
	for a := 0; a < sc.Agents; a++ {
		for k := 0; k < sc.KeysPerAgent; k++ {
			ids = append(ids, fmt.Sprintf("%s:k%d", agentName(a), k))
		}
	}
	return ids
}

// prefixes returns each subscriber's id prefix.
func (sc Scenario) prefixes() []string {
	out := make([]string, sc.Subscribers)
	for j := range out {
		switch {
		case sc.SubscribeMode == "agent" && sc.SharedIDs == 0:
			out[j] = agentName(j%sc.Agents) + ":"
		case sc.SharedIDs > 0:
			out[j] = sharedPrefix
		default:
			out[j] = ""
		}
	}
	return out
}

// RunOptions are the knobs of one run that are not the workload's shape.
type RunOptions struct {
	Progress io.Writer
	TTY      bool
	Label    string
	// OnWindow is called when the measured window opens, with the system's
	// processes and the window's length (the -perf profiler).
	OnWindow func(pids map[int]string, d time.Duration, label string)
}

// runOnce runs one workload against a started system at a given rate.
func runOnce(ctx context.Context, sys System, sc Scenario, rate float64, o RunOptions) (*Result, error) {
	ids := sc.ids()
	prefixes := sc.prefixes()
	tr := NewTracker(sc.writers(), ids, prefixes, sys.Contiguous())
	st := NewStats()
	idIndex := map[string]int{}
	for i, id := range ids {
		idIndex[id] = i
	}
	latest := make([]atomic.Int64, len(ids)) // highest version any subscriber saw, for base_version
	tagBytes := make([]byte, 4)
	rand.Read(tagBytes)
	tag := hex.EncodeToString(tagBytes)
	msgID := func(k deltaKey) string {
		return "fb-" + tag + "-" + strconv.Itoa(k.writer()) + "-" + strconv.FormatInt(k.seq(), 10)
	}
	events := sc.subscriberEvents()
	// What one write carries: the baselines have no partial update, so where
	// fedsync sets one field of a large document they put the whole value.
	valueSize := sc.ValueSize
	if sc.DocBytes > 0 && !sys.PartialUpdates() {
		valueSize = sc.DocBytes
	}
	res := &Result{System: sys.Name(), Scenario: sc.Name, Step: o.Label, Info: sys.Info(), Agents: sc.Agents, Writers: sc.writers(), Subscribers: sc.Subscribers,
		TargetRate: rate, ValueBytes: valueSize, DocBytes: sc.DocBytes, PartialUpdates: sys.PartialUpdates(), Keys: len(ids), SubscribeMode: sc.SubscribeMode}
	say := func(format string, args ...any) {
		if o.Progress != nil {
			if o.TTY {
				fmt.Fprint(o.Progress, "\r\033[K")
			}
			fmt.Fprintf(o.Progress, "[%s %s%s] "+format+"\n", append([]any{sys.Name(), sc.Name, labelSuffix(o.Label)}, args...)...)
		}
	}

	// Subscribers first, so that they see everything from the first delta.
	var observed atomic.Int64
	handler := func(j int) func(Event) {
		group := groupOf(events[j])
		return func(ev Event) {
			recv := time.Now().UnixNano()
			if ev.Err != "" {
				st.Error("subscriber: "+ev.Err, recv)
				return
			}
			observed.Add(1)
			w, n, t, ok := decodeValue(ev.Value)
			if !ok {
				n, t = 0, 0
			}
			first := tr.Observe(j, Observation{ID: ev.ID, Version: ev.Version, Writer: w, Seq: n})
			st.Delivered(Delivery{Sub: j, Group: group, PushNs: t, RecvNs: recv, First: first, Bytes: ev.Bytes, Delta: ev.Delta})
			if sc.BaseVersion {
				if i, ok := idIndex[ev.ID]; ok {
					for {
						cur := latest[i].Load()
						if ev.Version <= cur || latest[i].CompareAndSwap(cur, ev.Version) {
							break
						}
					}
				}
			}
		}
	}
	subs := make([]Closer, len(prefixes))
	closeSubs := func() {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 256)
		for _, s := range subs {
			if s != nil {
				wg.Add(1)
				sem <- struct{}{}
				go func() { defer wg.Done(); s.Close(); <-sem }()
			}
		}
		wg.Wait()
	}
	defer closeSubs()
	connectStart := time.Now()
	var connected atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	doneConnecting := make(chan struct{})
	if len(prefixes) > 100 {
		go func() {
			t := time.NewTicker(5 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-doneConnecting:
					return
				case <-t.C:
					say("subscribing: %d/%d connected", connected.Load(), len(prefixes))
				}
			}
		}()
	}
	for j, p := range prefixes {
		g.Go(func() error {
			c, err := sys.Subscribe(gctx, j, p, events[j], handler(j))
			if err != nil {
				return fmt.Errorf("subscriber %d: %w", j, err)
			}
			subs[j] = c
			connected.Add(1)
			return nil
		})
	}
	err := g.Wait()
	close(doneConnecting)
	if err != nil {
		return nil, err
	}
	res.SubscribeSeconds = round2(time.Since(connectStart).Seconds())

	// Writers: one connection (and token) per agent.
	writers := make([]Writer, sc.writers())
	defer func() {
		for _, w := range writers {
			if w != nil {
				w.Close()
			}
		}
	}()
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(16)
	for a := range writers {
		g.Go(func() error {
			w, err := sys.NewWriter(gctx, sc.writerAgent(a))
			if err != nil {
				return fmt.Errorf("writer %d: %w", a, err)
			}
			writers[a] = w
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	say("%d writers and %d subscribers connected (subscribing took %.1fs); warm-up %s, then %s measured", len(writers), sc.Subscribers, res.SubscribeSeconds, sc.Warmup, sc.Duration)

	if sc.DocBytes > 0 {
		say("writing %d documents of about %s each", len(ids), bytesStr(sc.DocBytes))
		t0 := time.Now()
		if err := seedDocuments(ctx, sys, writers, sc, ids, "fb-"+tag+"-seed"); err != nil {
			return nil, err
		}
		say("documents written and committed in %.1fs", time.Since(t0).Seconds())
	}
	pad := padding(valueSize - 60)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for a, w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			writeLoop(ctx, a, w, sc, rate, start, pad, ids, sc.writerIDs(a), latest, tr, st, msgID, stop)
		}()
	}

	pids := sys.PIDs()
	cpu0 := cpuByPID(pids)
	own0 := cpuTicks(map[int]string{os.Getpid(): "fedbench"})
	var peakRSS int64
	var counters0 map[string]float64
	var winStart time.Time
	tickEvery := 5 * time.Second
	if o.TTY {
		tickEvery = time.Second
	}
	ticker := time.NewTicker(tickEvery)
	lastTick, lastAcc, lastDel, lastRef := time.Now(), int64(0), int64(0), int64(0)
	warmupEnd := start.Add(sc.Warmup)
	end := warmupEnd.Add(sc.Duration)
	phaseTimer := time.NewTimer(time.Until(warmupEnd))
	measuring := false
loop:
	for {
		select {
		case <-ctx.Done():
			close(stop)
			wg.Wait()
			return nil, ctx.Err()
		case <-phaseTimer.C:
			if !measuring {
				measuring = true
				counters0 = sys.Counters(ctx)
				pids = sys.PIDs()
				cpu0 = cpuByPID(pids)
				own0 = cpuTicks(map[int]string{os.Getpid(): "fedbench"})
				winStart = time.Now()
				st.StartWindow(winStart)
				if o.OnWindow != nil {
					o.OnWindow(pids, sc.Duration, o.Label)
				}
				phaseTimer.Reset(time.Until(end))
				continue
			}
			break loop
		case now := <-ticker.C:
			acc, del := st.acceptedAll.Load(), st.deliveredAll.Load()
			secs := now.Sub(lastTick).Seconds()
			_, errs := st.Errors()
			var rss int64
			for pid := range pids {
				rss += rssOf(pid)
			}
			peakRSS = max(peakRSS, rss)
			phase, elapsed, total := "warm-up", now.Sub(start), sc.Warmup
			if measuring {
				phase, elapsed, total = "measure", now.Sub(winStart), sc.Duration
			}
			ref := st.refusedAll.Load()
			line := fmt.Sprintf("[%s %s%s] %s %3.0fs/%.0fs acked %6.0f/s refused %5.0f/s delivered %7.0f/s p99 %s errors %s rss %s",
				sys.Name(), sc.Name, labelSuffix(o.Label), phase, elapsed.Seconds(), total.Seconds(),
				float64(acc-lastAcc)/secs, float64(ref-lastRef)/secs, float64(del-lastDel)/secs, st.Window().Round(time.Millisecond), formatErrors(errs), mib(rss))
			if o.Progress != nil {
				if o.TTY {
					fmt.Fprint(o.Progress, "\r\033[K"+line)
				} else {
					fmt.Fprintln(o.Progress, line)
				}
			}
			lastTick, lastAcc, lastDel, lastRef = now, acc, del, ref
		}
	}
	winEnd := time.Now()
	st.EndWindow(winEnd)
	window := winEnd.Sub(winStart).Seconds()
	counters1 := sys.Counters(ctx)
	// Processes that started during the window count from zero; one that
	// ended during it is missing from both ends (its CPU is not seen).
	for pid, name := range sys.PIDs() {
		if _, ok := pids[pid]; !ok {
			pids[pid] = name
		}
	}
	cpu1 := cpuByPID(pids)
	own1 := cpuTicks(map[int]string{os.Getpid(): "fedbench"})
	rssBy := map[string]int64{}
	var rssTotal int64
	for pid, name := range pids {
		r := rssOf(pid)
		rssBy[name] += r
		rssTotal += r
	}
	peakRSS = max(peakRSS, rssTotal)
	close(stop)
	wg.Wait()
	ticker.Stop()
	if o.TTY && o.Progress != nil {
		fmt.Fprint(o.Progress, "\r\033[K")
	}

	// Drain: wait until every acknowledged delta reached every matching
	// subscriber, or until every subscriber holds the final version of every id
	// (writers racing on shared ids leave deltas that never show up on their
	// own). A system still delivering is waited for (its backlog is part of its
	// latency) until sc.Drain passes without any delivery, or 15 minutes.
	drainStart := time.Now()
	lastObs, lastProgress, stable := observed.Load(), time.Now(), 0
	lastSay := time.Now()
	for time.Since(drainStart) < 15*time.Minute && time.Since(lastProgress) < sc.Drain {
		seen, expected := tr.Progress()
		if seen >= expected && sc.SharedIDs == 0 {
			break
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		time.Sleep(500 * time.Millisecond)
		obs := observed.Load()
		if obs != lastObs {
			lastObs, lastProgress, stable = obs, time.Now(), 0
			if time.Since(lastSay) >= 5*time.Second {
				lastSay = time.Now()
				say("draining: %d of %d deliveries, %.0fs", seen, expected, time.Since(drainStart).Seconds())
			}
			continue
		}
		if f, err := sys.FinalVersions(ctx, ids); err == nil && converged(tr, f, prefixes, ids) {
			if stable++; stable >= 2 {
				break
			}
		} else {
			stable = 0
		}
	}
	res.DrainSeconds = round2(time.Since(drainStart).Seconds())
	final, finalErr := sys.FinalVersions(ctx, ids)
	missing := tr.Missing()
	var outcomes map[deltaKey]string
	if len(missing) > 0 {
		outcomes = sys.Excuse(ctx, missing, msgID)
	}
	if finalErr != nil {
		res.Failures = append(res.Failures, "could not read final versions: "+finalErr.Error())
		final = nil
	}
	res.Correctness = tr.Verify(outcomes, final)

	h := st.Histogram()
	res.Latency = Summarize(h)
	for g := range st.groups {
		n := 0
		for _, e := range events {
			if groupOf(e) == g {
				n++
			}
		}
		if n == 0 {
			continue
		}
		c := &st.groups[g]
		eg := EventGroup{Events: groupNames[g], Subscribers: n, DeliveredPerSec: round1(float64(c.delivered.Load()) / window),
			WholeFrames: c.wholeFrames.Load(), DeltaFrames: c.deltaFrames.Load(), Latency: Summarize(st.GroupHistogram(g))}
		eg.Latency.Curve = nil
		eg.ReceivedMiBPerSec = round2(float64(c.bytes.Load()) / window / (1 << 20))
		if n := c.changes.Load(); n > 0 {
			eg.BytesPerChange = round1(float64(c.changeBytes.Load()) / float64(n))
		}
		res.EventGroups = append(res.EventGroups, eg)
	}
	res.WindowSeconds = round2(window)
	res.AcceptedPerSec = round1(float64(st.accepted.Load()) / window)
	res.DeliveredPerSec = round1(float64(st.delivered.Load()) / window)
	// Committed in the window: fedsync's merge counter; the baselines commit
	// what they acknowledge.
	res.Committed = float64(st.accepted.Load())
	if c, ok := counters1["merge/committed"]; ok {
		res.Committed = c - counters0["merge/committed"]
	}
	res.CommittedPerSec = round1(res.Committed / window)
	for k, v := range counters1 {
		if name, ok := strings.CutPrefix(k, "conflict/"); ok && v-counters0[k] > 0 {
			if res.Conflicts == nil {
				res.Conflicts = map[string]float64{}
			}
			res.Conflicts[name] = v - counters0[k]
		}
		if name, ok := strings.CutPrefix(k, "stage_count/"); ok && v-counters0[k] > 0 {
			n := v - counters0[k]
			sum := counters1["stage_sum/"+name] - counters0["stage_sum/"+name]
			if res.Stages == nil {
				res.Stages = map[string]Stage{}
			}
			res.Stages[name] = Stage{PerSec: round1(n / window), MeanMs: round2(sum / n * 1000)}
		}
		if name, ok := strings.CutPrefix(k, "merge/"); ok && v-counters0[k] > 0 {
			if res.MergeOutcomes == nil {
				res.MergeOutcomes = map[string]float64{}
			}
			res.MergeOutcomes[name] = v - counters0[k]
		}
	}
	if fs, ok := sys.(*fedsyncSystem); ok && sc.SharedIDs > 0 {
		if n, err := fs.ReviewQueue(ctx); err == nil {
			res.ReviewQueue = &n
		}
	}
	res.Errors, res.ErrorsTotal = st.Errors()
	res.Refused, res.RefusedRetryAfter = st.refused.Load(), st.refusedRA.Load()
	res.RefusedPerSec = round1(float64(res.Refused) / window)
	res.RefusedAll, res.RefusedAllRetryAfter = st.refusedAll.Load(), st.refusedAllRA.Load()
	if res.RefusedAll > 0 {
		res.MaxLag = st.maxLag.Load()
	}
	res.RSSBytes, res.RSSByProcess, res.RSSPeakBytes = rssTotal, rssBy, peakRSS
	ticks, byName := cpuWindow(cpu0, cpu1, pids)
	res.CPUCores = round2(float64(ticks) / clkTck / window)
	res.CPUSeconds = round2(float64(ticks) / clkTck)
	res.CPUSecondsByProcess = map[string]float64{}
	for name, t := range byName {
		res.CPUSecondsByProcess[name] = round2(float64(t) / clkTck)
	}
	res.CPUMsPerCommit = cpuPerCommit(ticks, res.Committed)
	res.FedbenchCPUCores = round2(float64(own1-own0) / clkTck / window)
	res.judge()
	say("accepted %.0f/s committed %.0f/s refused %.0f/s delivered %.0f/s p50 %.1fms p99 %.1fms max %.1fms cpu %.2f cores = %s ms per commit errors %s lost %d dup %d ooo %d gaps %d converged %v",
		res.AcceptedPerSec, res.CommittedPerSec, res.RefusedPerSec, res.DeliveredPerSec, res.Latency.P50, res.Latency.P99, res.Latency.Max,
		res.CPUCores, fmtCPUMs(res.CPUMsPerCommit), formatErrors(res.Errors), res.Correctness.Lost, res.Correctness.Duplicates, res.Correctness.OutOfOrder, res.Correctness.Gaps, res.Correctness.Converged)
	return res, nil
}

// seedDocuments writes the growing preset's documents: each writer its own ids,
// as deltas of many fields where the system has partial updates (fedsync), or
// one put of the whole value (the baselines); then it waits until the system
// committed them all, so that the stream of small deltas starts on documents
// of full size.
func seedDocuments(ctx context.Context, sys System, writers []Writer, sc Scenario, ids []string, msgPrefix string) error {
	if sc.SharedIDs > 0 {
		return errors.New("documents (DocBytes) need per-agent ids, not shared ones")
	}
	chunks := docChunks(sc.DocBytes)
	whole := encodeValue(nil, 0, 0, 0, padding(sc.DocBytes-60))
	want := map[string]int64{}
	for _, id := range ids {
		want[id] = 1
		if sys.PartialUpdates() {
			want[id] = int64(len(chunks))
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for a, w := range writers {
		// One goroutine per writer: a writer is one connection, used in turn.
		g.Go(func() error {
			for k, idx := range sc.writerIDs(a) {
				id := ids[idx]
				seeder, partial := w.(docSeeder)
				if !partial || !sys.PartialUpdates() {
					err := retryRefused(gctx, func() error { return w.Put(gctx, id, whole, fmt.Sprintf("%s-%d-%d", msgPrefix, a, k), 0) })
					if err != nil {
						return fmt.Errorf("writing the document %s: %w", id, err)
					}
					continue
				}
				for i, c := range chunks {
					err := retryRefused(gctx, func() error { return seeder.Seed(gctx, id, c, fmt.Sprintf("%s-%d-%d-%d", msgPrefix, a, k, i)) })
					if err != nil {
						return fmt.Errorf("writing the document %s (delta %d of %d): %w", id, i+1, len(chunks), err)
					}
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		final, err := sys.FinalVersions(ctx, ids)
		done := err == nil
		for id, v := range want {
			if final[id] < v {
				done = false
			}
		}
		if done {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the documents were not committed within 3 minutes (versions %v, want %v, last error %v)", final, want, err)
		}
		sleepCtx(ctx, 500*time.Millisecond)
	}
}

// retryRefused calls write until the system admits it or fails otherwise,
// waiting as each refusal says.
func retryRefused(ctx context.Context, write func() error) error {
	for {
		err := write()
		re, ok := asRefused(err)
		if !ok {
			return err
		}
		sleepCtx(ctx, refusalPause(re, 0))
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// converged reports whether every subscriber holds the final version of every
// id it watches.
func converged(tr *Tracker, final map[string]int64, prefixes []string, ids []string) bool {
	for j, p := range prefixes {
		last := tr.LastSeen(j)
		for _, id := range ids {
			if strings.HasPrefix(id, p) && final[id] != last[id] {
				return false
			}
		}
	}
	return true
}

// writeLoop is one agent: synchronous writes (the next one after the
// acknowledgement of the previous), paced to its share of the aggregate rate,
// or back to back when rate is 0.
func writeLoop(ctx context.Context, a int, w Writer, sc Scenario, rate float64, start time.Time, pad string, ids []string, mine []int,
	latest []atomic.Int64, tr *Tracker, st *Stats, msgID func(deltaKey) string, stop <-chan struct{}) {
	rng := mrand.New(mrand.NewPCG(uint64(a)+1, uint64(start.UnixNano())))
	var interval time.Duration
	next := start
	if rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(sc.writers()) / rate)
		next = start.Add(time.Duration(rng.Int64N(int64(interval) + 1)))
	}
	var buf []byte
	for n := int64(1); ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		if interval > 0 {
			now := time.Now()
			if d := next.Sub(now); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-stop:
					t.Stop()
					return
				case <-t.C:
				}
			} else if -d > time.Second {
				next = now // more than a second behind: do not burst to catch up
			}
			next = next.Add(interval)
		}
		var idx int
		if sc.SharedIDs > 0 {
			idx = rng.IntN(len(ids))
		} else {
			idx = mine[int(n)%len(mine)]
		}
		id := ids[idx]
		var base int64
		if sc.BaseVersion {
			base = latest[idx].Load()
		}
		for {
			push := time.Now().UnixNano()
			buf = encodeValue(buf, a, n, push, pad)
			err := w.Put(ctx, id, buf, msgID(keyOf(a, n)), base)
			now := time.Now().UnixNano()
			if err == nil {
				tr.Acked(a, n, id)
				st.Accepted(now)
				break
			}
			if ctx.Err() != nil {
				return
			}
			if re, ok := asRefused(err); ok {
				// Not admitted: wait as told, then send the same delta again
				// (same message id, a new push time).
				st.Refused(now, re.hasRetryAfter, re.lag)
				if !sleepStop(stop, refusalPause(re, rng.Float64())) {
					return
				}
				if sc.BaseVersion {
					base = latest[idx].Load()
				}
				continue
			}
			tr.Unacked(a)
			st.Error(errCode(err), now)
			if ra := retryAfter(err); ra > 0 && !sleepStop(stop, min(ra, time.Second)) {
				return
			}
			break
		}
	}
}

// sleepStop sleeps for d, or until stop closes (then it returns false).
func sleepStop(stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

const clkTck = 100 // USER_HZ on Linux

// cpuTicks sums user+system CPU ticks of processes.
func cpuTicks(pids map[int]string) int64 {
	var total int64
	for _, t := range cpuByPID(pids) {
		total += t
	}
	return total
}

// cpuWindow is the CPU the processes used between two readings, in ticks, in
// all and by process name (instances of one service add up). A process absent
// from the first reading started in between and counts from zero.
func cpuWindow(before, after map[int]int64, names map[int]string) (total int64, byName map[string]int64) {
	byName = map[string]int64{}
	for pid, t := range after {
		d := t - before[pid]
		if d < 0 { // the pid was reused by a new process
			d = t
		}
		total += d
		byName[names[pid]] += d
	}
	return total, byName
}

// cpuPerCommit is CPU milliseconds per committed delta: the CPU ticks of all of
// a system's processes in the measured window divided by the deltas it
// committed in that window (0 when it committed none).
func cpuPerCommit(ticks int64, committed float64) float64 {
	if committed <= 0 {
		return 0
	}
	ms := float64(ticks) * 1000 / clkTck / committed
	return math.Round(ms*10000) / 10000
}

// cpuByPID reads the user+system CPU ticks of each process.
func cpuByPID(pids map[int]string) map[int]int64 {
	out := make(map[int]int64, len(pids))
	for pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		sy, _ := strconv.ParseInt(f[12], 10, 64)
		out[pid] = u + sy
	}
	return out
}

func labelSuffix(l string) string {
	if l == "" {
		return ""
	}
	return " " + l
}

func mib(b int64) string { return fmt.Sprintf("%.0fMiB", float64(b)/(1<<20)) }

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }
func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
