package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

const perfScript = `merge 16695    2004008 
	ffffffff82200809 _raw_spin_unlock_irqrestore ([kernel.kallsyms])
	            de6e internal/runtime/syscall/linux.Syscall6 (/x/bin/merge)
	          4fc4f8 github.com/fedsync/fedsync/services/merge.(*service).commit (/x/bin/merge)
	           93721 runtime.goexit.abi0 (/x/bin/merge)

statestore 16694    2004008 
	           695f7 go.etcd.io/bbolt.(*Tx).Commit (/x/bin/statestore)
	          4fbd4a go.etcd.io/bbolt.(*DB).Update (/x/bin/statestore)

statestore 16694    2004008 
	           695f7 go.etcd.io/bbolt.(*Tx).Commit+0x1f (/x/bin/statestore)
	          4fbd4a go.etcd.io/bbolt.(*DB).Update (/x/bin/statestore)
`

func TestPerfScriptToProfile(t *testing.T) {
	samples, err := parsePerfScript(strings.NewReader(perfScript))
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 3 || samples[0].comm != "merge" || samples[0].period != 2004008 || len(samples[0].frames) != 4 {
		t.Fatalf("samples = %+v", samples)
	}
	if samples[0].frames[0] != "[k] _raw_spin_unlock_irqrestore" || samples[2].frames[0] != "go.etcd.io/bbolt.(*Tx).Commit" {
		t.Fatalf("frames = %q, %q", samples[0].frames, samples[2].frames)
	}
	var buf bytes.Buffer
	if err := perfProfile(samples).Write(&buf); err != nil {
		t.Fatal(err)
	}
	p, err := profile.Parse(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Sample) != 3 || p.Sample[1].Label["process"][0] != "statestore" {
		t.Fatalf("profile samples = %v", p.Sample)
	}
	// The outermost frame is the process.
	if locs := p.Sample[1].Location; locs[len(locs)-1].Line[0].Function.Name != "[statestore]" {
		t.Fatalf("outermost frame = %s", locs[len(locs)-1].Line[0].Function.Name)
	}
	sum := perfSummary(samples, 5)
	for _, want := range []string{"66.7%  statestore", "33.3%  merge", "66.7%  go.etcd.io/bbolt.(*DB).Update", "66.7%  go.etcd.io/bbolt.(*Tx).Commit"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary lacks %q:\n%s", want, sum)
		}
	}
	if strings.Contains(sum, "goexit") {
		t.Errorf("summary lists runtime.goexit:\n%s", sum)
	}
}
