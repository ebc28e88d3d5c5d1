package main

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/google/pprof/profile"
)

// The services serve no /debug/pprof, so -perf samples their processes with
// Linux perf (call stacks through Go's frame pointers) and turns the samples
// into a pprof CPU profile: `go tool pprof -top -cum <file>.pprof` and
// `go tool pprof -http=: <file>.pprof` work on it. Each stack gets the process
// name as its outermost frame ("[validation]"), so the profile splits by
// process, and a "process" label.

// perfSample is one sampled call stack, leaf first.
type perfSample struct {
	comm   string
	period int64 // ns
	frames []string
}

// parsePerfScript reads `perf script -F comm,pid,period,ip,sym,dso`.
func parsePerfScript(r io.Reader) ([]perfSample, error) {
	var out []perfSample
	var cur *perfSample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			cur = nil
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			f := strings.Fields(line)
			if len(f) < 3 {
				continue
			}
			period, err := strconv.ParseInt(f[len(f)-1], 10, 64)
			if err != nil {
				continue
			}
			out = append(out, perfSample{comm: strings.Join(f[:len(f)-2], " "), period: period})
			cur = &out[len(out)-1]
			continue
		}
		if cur == nil {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		sym := strings.Join(f[1:], " ")
		dso := ""
		if i := strings.LastIndex(sym, " ("); i >= 0 && strings.HasSuffix(sym, ")") {
			sym, dso = sym[:i], sym[i+2:len(sym)-1]
		}
		if i := strings.LastIndex(sym, "+0x"); i > 0 {
			sym = sym[:i]
		}
		switch {
		case strings.Contains(dso, "kernel"):
			sym = "[k] " + sym
		case sym == "[unknown]":
			sym = "[unknown " + dso + "]"
		}
		cur.frames = append(cur.frames, sym)
	}
	return out, sc.Err()
}

// perfProfile builds a pprof CPU profile from the samples.
func perfProfile(samples []perfSample) *profile.Profile {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
	}
	funcs := map[string]*profile.Function{}
	locs := map[string]*profile.Location{}
	loc := func(name string) *profile.Location {
		if l, ok := locs[name]; ok {
			return l
		}
		fn := &profile.Function{ID: uint64(len(funcs) + 1), Name: name, SystemName: name}
		funcs[name] = fn
		p.Function = append(p.Function, fn)
		l := &profile.Location{ID: uint64(len(locs) + 1), Line: []profile.Line{{Function: fn}}}
		locs[name] = l
		p.Location = append(p.Location, l)
		return l
	}
	for _, s := range samples {
		var ls []*profile.Location
		for _, f := range s.frames {
			ls = append(ls, loc(f))
		}
		ls = append(ls, loc("["+s.comm+"]"))
		p.Sample = append(p.Sample, &profile.Sample{Location: ls, Value: []int64{1, s.period}, Label: map[string][]string{"process": {s.comm}}})
		if s.period > p.Period {
			p.Period = s.period
		}
	}
	return p
}

// perfSummary renders where the CPU went: the share of each process, then per
// process the functions with the largest cumulative (function and what it
// calls) and flat (the function itself) shares.
func perfSummary(samples []perfSample, top int) string {
	type stat struct{ flat, cum int64 }
	var total int64
	byProc := map[string]int64{}
	funcs := map[string]map[string]*stat{}
	for _, s := range samples {
		total += s.period
		byProc[s.comm] += s.period
		m := funcs[s.comm]
		if m == nil {
			m = map[string]*stat{}
			funcs[s.comm] = m
		}
		seen := map[string]bool{}
		for i, f := range s.frames {
			st := m[f]
			if st == nil {
				st = &stat{}
				m[f] = st
			}
			if i == 0 {
				st.flat += s.period
			}
			if !seen[f] {
				seen[f] = true
				st.cum += s.period
			}
		}
	}
	if total == 0 {
		return "no samples\n"
	}
	pct := func(v int64) string { return fmt.Sprintf("%5.1f%%", 100*float64(v)/float64(total)) }
	procs := make([]string, 0, len(byProc))
	for p := range byProc {
		procs = append(procs, p)
	}
	sort.Slice(procs, func(i, j int) bool { return byProc[procs[i]] > byProc[procs[j]] })
	var b strings.Builder
	fmt.Fprintf(&b, "CPU samples: %d, %.1f CPU-seconds. Percentages are of all samples.\n\nBy process:\n", len(samples), float64(total)/1e9)
	for _, p := range procs {
		fmt.Fprintf(&b, "  %s  %s\n", pct(byProc[p]), p)
	}
	for _, p := range procs {
		if 100*float64(byProc[p])/float64(total) < 2 {
			continue
		}
		m := funcs[p]
		names := make([]string, 0, len(m))
		for n := range m {
			if n == "runtime.goexit.abi0" || n == "runtime.goexit" || n == "runtime.main" || n == "main.main" {
				continue
			}
			names = append(names, n)
		}
		fmt.Fprintf(&b, "\n%s (%s): cumulative\n", p, strings.TrimSpace(pct(byProc[p])))
		sort.Slice(names, func(i, j int) bool { return m[names[i]].cum > m[names[j]].cum })
		for _, n := range names[:min(top, len(names))] {
			fmt.Fprintf(&b, "  %s  %s\n", pct(m[n].cum), n)
		}
		fmt.Fprintf(&b, "%s: flat\n", p)
		sort.Slice(names, func(i, j int) bool { return m[names[i]].flat > m[names[j]].flat })
		for _, n := range names[:min(top, len(names))] {
			if m[n].flat == 0 {
				break
			}
			fmt.Fprintf(&b, "  %s  %s\n", pct(m[n].flat), n)
		}
	}
	return b.String()
}
