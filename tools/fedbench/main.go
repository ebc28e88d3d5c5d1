// Command fedbench measures fedsync the way a user experiences it — agents
// pushing deltas through the public API and subscribers receiving the committed
// changes — side by side with etcd (put + prefix watch) and NATS JetStream KV
// (put + watch) running the same workload shape on the same machine in the same
// invocation, so that every figure can be read as a ratio.
//
// Usage (from the repository root, after make build):
//
//	fedbench -scenario steady,conflict          # make bench
//	fedbench -scenario all                      # make bench-full
//	fedbench -scenario max -systems fedsync -perf
//
// Scenarios are presets (steady, max, fanout, conflict, large, growing,
// overload); flags given explicitly override the preset values of every
// scenario run. Results go to bench/results/<scenario>-<date>.{json,md,svg},
// with the commit measured and whether the working tree was dirty.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) == 4 && os.Args[1] == "perf2pprof" {
		// fedbench perf2pprof <perf.data> <stem>: the -perf conversion on its own.
		if err := perfReport(lookBinary("perf"), os.Args[2], os.Args[3], "perf profile "+os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "fedbench:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "__stack" {
		if err := stackMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "fedbench stack:", err)
			os.Exit(1)
		}
		return
	}
	code, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "fedbench:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

var scenarioOrder = []string{"steady", "max", "fanout", "conflict", "large", "growing", "overload", "ha"}

// presets are the named scenarios of issue 6.
func presets() map[string]Scenario {
	return map[string]Scenario{
		"steady": {Name: "steady", Agents: 53, Subscribers: 4, Rate: 5000, Warmup: 5 * time.Second, Duration: 30 * time.Second,
			Drain: 30 * time.Second, KeysPerAgent: 4, SubscribeMode: "all"},
		"max": {Name: "max", Agents: 53, Subscribers: 4, Rate: 0, Warmup: 3 * time.Second, Duration: 15 * time.Second,
			Drain: 120 * time.Second, KeysPerAgent: 4, SubscribeMode: "all", MaxP99: time.Second, MaxSteps: 5},
		"fanout": {Name: "fanout", Agents: 53, Subscribers: 10000, Rate: 100, Warmup: 5 * time.Second, Duration: 30 * time.Second,
			Drain: 60 * time.Second, KeysPerAgent: 4, SubscribeMode: "agent", DirectSubscribe: true},
		"conflict": {Name: "conflict", Agents: 53, Subscribers: 4, Rate: 1000, Warmup: 3 * time.Second, Duration: 20 * time.Second,
			Drain: 30 * time.Second, SharedIDs: 10, SubscribeMode: "all", BaseVersion: true},
		"large": {Name: "large", Agents: 53, Subscribers: 4, Rate: 200, Warmup: 3 * time.Second, Duration: 20 * time.Second,
			Drain: 60 * time.Second, KeysPerAgent: 4, ValueSize: 64 << 10, SubscribeMode: "all"},
		// 8 documents of 1 MiB, one per agent; deltas of about 100 bytes, each
		// setting one field; half the subscribers with whole documents, half
		// with incremental events.
		"growing": {Name: "growing", Agents: 8, Subscribers: 4, Rate: 20, Warmup: 5 * time.Second, Duration: 20 * time.Second,
			Drain: 60 * time.Second, KeysPerAgent: 1, ValueSize: 100, DocBytes: 1 << 20, SubscribeMode: "all", Events: "both"},
		// Twice what fedsync commits at most (a probe finds it, unless -rate
		// gives the offered load); the baselines get the same offered load.
		// Four writers per agent, so that synchronous writers can offer more
		// than one write in flight per agent allows.
		// High availability (issue 10): steady's load on fedsync with its
		// three statestore replicas (and, with -systems fedsync,fedsync-1,...,
		// with one), a 3-member etcd cluster and a 3-node NATS JetStream
		// cluster with an R3 KV bucket, all on loopback.
		"ha": {Name: "ha", Agents: 53, Subscribers: 4, Rate: 5000, Warmup: 5 * time.Second, Duration: 30 * time.Second,
			Drain: 30 * time.Second, KeysPerAgent: 4, SubscribeMode: "all", Members: 3},
		"overload": {Name: "overload", Agents: 53, Subscribers: 4, Rate: 0, Warmup: 5 * time.Second, Duration: 20 * time.Second,
			Drain: 60 * time.Second, KeysPerAgent: 4, WritersPerAgent: 4, SubscribeMode: "all", Overload: true, ProbeWarmup: 3 * time.Second, ProbeDuration: 10 * time.Second},
	}
}

func run(args []string) (int, error) {
	fs := flag.NewFlagSet("fedbench", flag.ContinueOnError)
	scenarios := fs.String("scenario", "steady", "comma-separated presets: steady, max, fanout, conflict, large, growing, overload, ha (clusters; run alone), or all")
	systems := fs.String("systems", "fedsync,etcd,nats", "systems to run, in order")
	agents := fs.Int("agents", 0, "writers, each with its own token and connection (preset: 53; fedsync has 53 agent clients)")
	subscribers := fs.Int("subscribers", 0, "subscribers (preset: 4; fanout 10000)")
	rate := fs.Float64("rate", 0, "aggregate target deltas/s; -1 = as fast as acknowledgements allow (preset: steady 5000, conflict 1000, ...; overload: the offered load, by default twice fedsync's maximum)")
	warmup := fs.Duration("warmup", 0, "warm-up before the measured window (also of overload's probe)")
	duration := fs.Duration("duration", 0, "measured window (also of overload's probe)")
	drain := fs.Duration("drain", 0, "after the window, stop waiting for deliveries once none arrived for this long")
	keys := fs.Int("keys", 0, "ids per agent (preset: 4)")
	writersPer := fs.Int("writers-per-agent", 0, "connections each agent writes over at once, each on its own ids (preset 1; overload 4; at most -keys)")
	valueSize := fs.Int("value-size", 0, "approximate value size in bytes (large: 65536)")
	direct := fs.Bool("direct", false, "fedsync WebSocket subscribers connect to the broadcasters directly, not through the edge (fanout preset: true)")
	subscribe := fs.String("subscribe", "", "subscription prefixes: all (every subscriber watches every id) or agent (one agent's prefix each)")
	maxP99 := fs.Duration("max-p99", 0, "max: the p99 a kept step must stay under (preset 1s)")
	maxSteps := fs.Int("max-steps", 0, "max: most steps of the rate search (preset 5)")
	events := fs.String("events", "", "what fedsync's subscribers ask for: full (whole documents; default), delta (what each change set and removed), or both (half each; growing preset)")
	docSize := fs.Int("doc-size", 0, "growing: document size in bytes, written first; then each delta sets one field (preset 1048576)")
	api := fs.String("api", "rest", "fedsync writes: rest (POST /api/v1/sync/state through the edge) or grpc (ValidationService.PushState)")
	sub := fs.String("sub", "ws", "fedsync subscriptions: ws (WebSocket /stream through the edge) or grpc (BroadcasterService.Subscribe)")
	bin := fs.String("bin", ".fedsync/bin", "fedsync's service binaries (make build)")
	replicas := fs.Int("statestore-replicas", 3, "size of fedsync's statestore Raft group (1 measures a single replica)")
	kafka := fs.String("kafka", "", "run fedsync on this external Kafka (e.g. 127.0.0.1:19093 from make kafka-start) instead of the embedded broker")
	types := fs.String("datatypes", "config/datatypes.yaml", "fedsync's data-type registry")
	out := fs.String("out", "bench/results", "directory for the JSON, Markdown and SVG results")
	stateRoot := fs.String("state", ".fedsync/bench", "directory for the systems' data while they run")
	keep := fs.Bool("keep", false, "keep the systems' data and logs after the run")
	fresh := fs.Bool("fresh", true, "start each system afresh for every scenario (false: once per invocation)")
	quiet := fs.Bool("q", false, "no progress line")
	cpuProfile := fs.String("cpuprofile", "", "write fedbench's own CPU profile (the client side) to this file")
	perf := fs.Bool("perf", false, "profile fedsync's processes with perf during each measured window (needs perf and root); report next to the results")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `fedbench measures fedsync through its public API side by side with etcd (put + prefix
watch) and NATS JetStream KV (put + watch), same workload, same machine, same run.
Run it from the repository root after make build (and scripts/bench-deps.sh for the baselines).

Presets (-scenario): steady (5,000 deltas/s), max (highest rate with p99 < 1 s),
fanout (10,000 WebSocket subscribers), conflict (53 agents on 10 shared ids),
large (64 KiB values), growing (8 documents of 1 MiB written first, then ~100-byte
deltas that each set one field; half the subscribers get whole documents, half
incremental events; etcd and NATS, without partial updates, put the whole value),
overload (twice fedsync's maximum, found by a probe written as fast as acks allow
unless -rate gives the offered load, from 4 connections per agent; 503/429
refusals are counted apart from errors and agents wait Retry-After); "all" runs
every one. Flags given explicitly override the preset values.

Reports give CPU ms per commit (CPU of all of a system's processes in the window
divided by the deltas it committed; per put for etcd and NATS) and the commit
measured; a dirty working tree is flagged: such results must not be committed.
Results: <out>/<scenario>-<date>.{json,md,svg}; scripts/bench-prune.sh (make
bench-prune; a dry run unless --delete) removes all but the latest run per
scenario and the runs docs/performance.md cites. Exit status 1 when any run
lost, duplicated or reordered a delivery.

Usage: fedbench [flags]
       fedbench perf2pprof <perf.data> <stem>   (the -perf conversion on its own)

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil
		}
		return 2, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var list []Scenario
	names := strings.Split(*scenarios, ",")
	if *scenarios == "all" {
		names = scenarioOrder[:len(scenarioOrder)-1] // all but ha, whose baselines are clusters
	}
	ps := presets()
	for _, n := range names {
		sc, ok := ps[strings.TrimSpace(n)]
		if !ok {
			return 2, fmt.Errorf("unknown scenario %q (want %s or all)", n, strings.Join(scenarioOrder, ", "))
		}
		if set["agents"] {
			sc.Agents = *agents
		}
		if set["subscribers"] {
			sc.Subscribers = *subscribers
		}
		if set["rate"] {
			sc.Rate = max(*rate, 0)
		}
		if set["warmup"] {
			sc.Warmup, sc.ProbeWarmup = *warmup, *warmup
		}
		if set["duration"] {
			sc.Duration, sc.ProbeDuration = *duration, *duration
		}
		if set["drain"] {
			sc.Drain = *drain
		}
		if set["keys"] {
			sc.KeysPerAgent = *keys
		}
		if set["writers-per-agent"] {
			sc.WritersPerAgent = *writersPer
		}
		if set["value-size"] {
			sc.ValueSize = *valueSize
		}
		if set["subscribe"] {
			sc.SubscribeMode = *subscribe
		}
		if set["direct"] {
			sc.DirectSubscribe = *direct
		}
		if set["max-p99"] {
			sc.MaxP99 = *maxP99
		}
		if set["max-steps"] {
			sc.MaxSteps = *maxSteps
		}
		if set["events"] {
			sc.Events = *events
		}
		if set["doc-size"] {
			sc.DocBytes = *docSize
		}
		switch sc.Events {
		case "", "full", "delta", "both":
		default:
			return 2, fmt.Errorf("-events: full, delta or both, not %q", sc.Events)
		}
		if sc.DocBytes > 0 && sc.SharedIDs > 0 {
			return 2, fmt.Errorf("%s: -doc-size needs per-agent ids (not the conflict preset's shared ones)", sc.Name)
		}
		if sc.Agents < 1 || sc.Subscribers < 1 || sc.Duration <= 0 || (sc.SharedIDs == 0 && sc.KeysPerAgent < 1) {
			return 2, fmt.Errorf("%s: agents, subscribers, keys and duration must be positive", sc.Name)
		}
		if sc.WritersPerAgent > 1 && (sc.SharedIDs > 0 || sc.WritersPerAgent > sc.KeysPerAgent) {
			return 2, fmt.Errorf("%s: -writers-per-agent needs per-agent ids, at least as many as writers per agent (-keys)", sc.Name)
		}
		if sc.SubscribeMode != "all" && sc.SubscribeMode != "agent" {
			return 2, fmt.Errorf("-subscribe: all or agent, not %q", sc.SubscribeMode)
		}
		list = append(list, sc)
	}
	if *api != "rest" && *api != "grpc" {
		return 2, fmt.Errorf("-api: rest or grpc, not %q", *api)
	}
	if *sub != "ws" && *sub != "grpc" {
		return 2, fmt.Errorf("-sub: ws or grpc, not %q", *sub)
	}
	// The baselines run as one server, or as a cluster of Members for a
	// scenario that asks (ha): one shape per invocation.
	members := 0
	for _, sc := range list {
		if members != 0 && max(sc.Members, 1) != members {
			return 2, fmt.Errorf("%s: run the ha preset on its own (its baselines are clusters)", sc.Name)
		}
		members = max(sc.Members, 1)
	}
	var syss []System
	for _, s := range strings.Split(*systems, ",") {
		switch strings.TrimSpace(s) {
		case "fedsync":
			syss = append(syss, newFedsync(*bin, *types, *api, *sub, *kafka, *replicas))
		case "fedsync-1":
			// fedsync with a statestore of one replica, beside the default
			// three: what replication costs, in the same run (ha preset).
			f := newFedsync(*bin, *types, *api, *sub, *kafka, 1)
			f.name = "fedsync-1"
			syss = append(syss, f)
		case "etcd":
			syss = append(syss, newEtcd(members))
		case "nats":
			syss = append(syss, newNATS(members))
		default:
			return 2, fmt.Errorf("unknown system %q (want fedsync, fedsync-1, etcd, nats)", s)
		}
	}
	for _, sc := range list {
		if _, ok := syss[0].(*fedsyncSystem); ok && sc.Agents > 53 {
			return 2, fmt.Errorf("%s: fedsync's dev federation has 53 agent clients; -agents at most 53", sc.Name)
		}
		if _, ok := syss[0].(*fedsyncSystem); sc.Overload && sc.Rate == 0 && !ok {
			return 2, fmt.Errorf("%s: the offered load is twice fedsync's maximum, measured first: put fedsync first in -systems, or give -rate", sc.Name)
		}
	}
	raiseFileLimit()

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return 1, err
		}
		pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	began := time.Now()
	git := readGitState(".", *out, "bench/results")
	if w := git.Warning(); w != "" {
		fmt.Fprintln(os.Stderr, "fedbench: "+w)
	}
	meta := machine(strings.Join(append([]string{"fedbench"}, args...), " "), git)
	reports := map[string]*Report{}
	for _, sc := range list {
		reports[sc.Name] = &Report{Meta: meta, Scenario: sc, Skipped: map[string]string{}}
	}
	tty := isTTY(os.Stderr)
	var progress *os.File
	if !*quiet {
		progress = os.Stderr
	}
	opts := RunOptions{TTY: tty}
	if progress != nil {
		opts.Progress = progress
	}

	for _, sys := range syss {
		if ok, why := sys.Available(); !ok {
			fmt.Fprintf(os.Stderr, "fedbench: skipping %s: %s\n", sys.Name(), why)
			for _, r := range reports {
				r.Skipped[sys.Name()] = why
			}
			continue
		}
		started := false
		var dir string
		startSys := func() error {
			dir = filepath.Join(*stateRoot, fmt.Sprintf("%s-%s", sys.Name(), time.Now().Format("20060102-150405.000")))
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return err
			}
			t0 := time.Now()
			if err := sys.Start(ctx, dir); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "fedbench: %s started in %.1fs (data in %s)\n", sys.Name(), time.Since(t0).Seconds(), dir)
			started = true
			return nil
		}
		stopSys := func() {
			if started {
				sys.Stop()
				started = false
				if !*keep {
					os.RemoveAll(dir)
				}
			}
		}
		for i, sc := range list {
			if ctx.Err() != nil {
				break
			}
			if !started || (*fresh && i > 0) {
				stopSys()
				if err := startSys(); err != nil {
					stopSys()
					fmt.Fprintf(os.Stderr, "fedbench: %s did not start: %v\n", sys.Name(), err)
					reports[sc.Name].Skipped[sys.Name()] = "did not start: " + err.Error()
					continue
				}
			}
			o := opts
			if fs, ok := sys.(*fedsyncSystem); ok {
				fs.direct = sc.DirectSubscribe
			}
			if *perf && sys.Name() == "fedsync" {
				o.OnWindow = perfProfiler(*out, reports[sc.Name], sys)
			}
			var err error
			switch {
			case sc.MaxP99 > 0:
				err = runMax(ctx, sys, sc, o, reports[sc.Name])
			case sc.Overload:
				err = runOverload(ctx, sys, sc, o, reports[sc.Name])
			default:
				var res *Result
				if res, err = runOnce(ctx, sys, sc, sc.Rate, o); err == nil {
					reports[sc.Name].Results = append(reports[sc.Name].Results, res)
				}
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "fedbench: %s %s: %v\n", sys.Name(), sc.Name, err)
				reports[sc.Name].Skipped[sys.Name()] = "run failed: " + err.Error()
				if *fresh {
					stopSys()
				}
			}
		}
		stopSys()
		if ctx.Err() != nil {
			return 130, errors.New("interrupted")
		}
	}

	failed := false
	gitEnd := readGitState(".", *out, "bench/results")
	for _, sc := range list {
		r := reports[sc.Name]
		r.Meta.LoadAvgEnd = loadAvg()
		if gitEnd.Commit != git.Commit {
			r.Meta.Notes = append(r.Meta.Notes, fmt.Sprintf("HEAD moved from %s to %s during the run", git.Short(), gitEnd.Short()))
		}
		if gitEnd.Dirty && !r.Meta.Dirty {
			r.Meta.Dirty, r.Meta.DirtyCount, r.Meta.DirtyPaths = true, gitEnd.ChangeCount, gitEnd.Changes
			r.Meta.Notes = append(r.Meta.Notes, "the working tree changed during the run")
		}
		r.computeRatios()
		if len(r.Skipped) == 0 {
			r.Skipped = nil
		}
		files, err := r.Write(*out)
		if err != nil {
			return 1, err
		}
		fmt.Println(r.Markdown(""))
		fmt.Printf("written: %s\n\n", strings.Join(files, ", "))
		if !r.Passed {
			failed = true
		}
	}
	fmt.Printf("fedbench: %d scenario(s) on %d system(s) in %s\n", len(list), len(syss), time.Since(began).Round(time.Second))
	if git.Dirty || gitEnd.Dirty {
		w := git.Warning()
		if w == "" {
			w = gitEnd.Warning()
		}
		fmt.Fprintln(os.Stderr, "fedbench: "+w)
	}
	if failed {
		return 1, errors.New("correctness failures: see the results (lost, duplicate or out-of-order deliveries)")
	}
	return 0, nil
}

// runMax searches the highest sustained rate whose p99 stays under sc.MaxP99:
// first as fast as acknowledgements allow, then, if p99 is over the limit (the
// pipeline behind the acknowledgement fell behind), fixed rates starting at 90%
// of what was committed and stepping down by 25%.
func runMax(ctx context.Context, sys System, sc Scenario, o RunOptions, rep *Report) error {
	if rep.Best == nil {
		rep.Best = map[string]*Result{}
	}
	o.Label = "closed loop"
	res, err := runOnce(ctx, sys, sc, 0, o)
	if err != nil {
		return err
	}
	rep.Results = append(rep.Results, res)
	limit := float64(sc.MaxP99) / float64(time.Millisecond)
	ok := func(r *Result, rate float64) bool {
		return r.Passed && r.Latency.Count > 0 && r.Latency.P99 < limit && (rate == 0 || r.AcceptedPerSec >= 0.9*rate)
	}
	if ok(res, 0) {
		rep.Best[sys.Name()] = res
		return nil
	}
	rate := 0.9 * min(res.AcceptedPerSec, res.CommittedPerSec)
	for step := 2; step <= sc.MaxSteps && rate >= 10; step++ {
		rate = float64(int64(rate/10) * 10)
		o.Label = fmt.Sprintf("%s/s", fmtRate(rate))
		r, err := runOnce(ctx, sys, sc, rate, o)
		if err != nil {
			return err
		}
		rep.Results = append(rep.Results, r)
		if ok(r, rate) {
			rep.Best[sys.Name()] = r
			return nil
		}
		rate *= 0.75
	}
	// Nothing met the limit: keep the step with the lowest p99, flagged in the table.
	best := res
	for _, r := range rep.Results {
		if r.System == sys.Name() && r.Latency.Count > 0 && r.Latency.P99 < best.Latency.P99 {
			best = r
		}
	}
	rep.Best[sys.Name()] = best
	rep.Meta.Notes = append(rep.Meta.Notes, fmt.Sprintf("%s: no step kept p99 under %s; the kept step is the one with the lowest p99", sys.Name(), sc.MaxP99))
	return nil
}

// perfProfiler returns a hook that records fedsync's processes with perf during
// the measured window and writes the hottest symbols next to the results.
func perfProfiler(out string, rep *Report, sys System) func(pids map[int]string, d time.Duration, label string) {
	return func(pids map[int]string, d time.Duration, label string) {
		perfBin := lookBinary("perf")
		if perfBin == "" {
			fmt.Fprintln(os.Stderr, "fedbench: -perf: perf not found")
			return
		}
		var ps []string
		for pid := range pids {
			ps = append(ps, strconv.Itoa(pid))
		}
		if err := os.MkdirAll(out, 0o755); err != nil {
			return
		}
		stem := filepath.Join(out, rep.Base()+"-perf-"+sys.Name()+strings.ReplaceAll(strings.ReplaceAll(labelSuffix(label), " ", "-"), "/", ""))
		data := stem + ".data"
		go func() {
			rec := exec.Command(perfBin, "record", "-F", "499", "-g", "-o", data, "-p", strings.Join(ps, ","), "--", "sleep", strconv.Itoa(int(d.Seconds())))
			if b, err := rec.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "fedbench: perf record: %v: %s\n", err, b)
				return
			}
			header := fmt.Sprintf("perf record -F 499 -g of fedsync's processes (%s) during the measured window of %s %s",
				strings.Join(sortedPIDNames(pids), ", "), rep.Scenario.Name, label)
			if err := perfReport(perfBin, data, stem, header); err != nil {
				fmt.Fprintf(os.Stderr, "fedbench: %v\n", err)
				return
			}
			os.Remove(data)
			fmt.Fprintf(os.Stderr, "fedbench: perf profile of %s in %s.txt and .pprof\n", sys.Name(), stem)
		}()
	}
}

// perfReport turns a perf.data file into <stem>.pprof and a text summary <stem>.txt.
func perfReport(perfBin, data, stem, header string) error {
	script := exec.Command(perfBin, "script", "-i", data, "-F", "comm,pid,period,ip,sym,dso")
	stdout, err := script.StdoutPipe()
	if err != nil {
		return err
	}
	if err := script.Start(); err != nil {
		return fmt.Errorf("perf script: %w", err)
	}
	samples, err := parsePerfScript(stdout)
	if werr := script.Wait(); err == nil && werr != nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("perf script: %w", err)
	}
	f, err := os.Create(stem + ".pprof")
	if err != nil {
		return err
	}
	if err := perfProfile(samples).Write(f); err != nil {
		f.Close()
		return err
	}
	f.Close()
	summary := header + "; pprof profile: " + filepath.Base(stem) + ".pprof (go tool pprof -top -cum, or -http=:)\n\n" + perfSummary(samples, 25)
	return os.WriteFile(stem+".txt", []byte(summary), 0o644)
}

func sortedPIDNames(pids map[int]string) []string {
	var out []string
	for _, n := range pids {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// machine describes this machine for the report.
func machine(command string, git GitState) Meta {
	m := Meta{Date: time.Now().Format(time.RFC3339), Commit: git.Commit, Dirty: git.Dirty, GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), Command: command}
	if m.Commit == "" {
		m.Commit = "unknown"
	}
	if git.Dirty {
		m.DirtyCount, m.DirtyPaths = git.ChangeCount, git.Changes
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
				m.MemoryGiB = float64(int(kb/(1<<20)*10)) / 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	m.LoadAvgStart = loadAvg()
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(string(out))
	}
	return m
}

// raiseFileLimit lifts the open-file limit for the fan-out preset: 10,000
// subscribers are 10,000 sockets here and twice that in the edge. Children
// (the stack) inherit the raised hard limit.
func raiseFileLimit() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	want := uint64(262144)
	if l.Max < want {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err == nil {
			return
		}
	}
	l.Cur = l.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func isTTY(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
