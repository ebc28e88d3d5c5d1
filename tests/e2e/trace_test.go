package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fedsync/fedsync/tools/devstack"
)

// jaegerBinary finds the Jaeger built by `make jaeger`, or skips (fails with
// FEDSYNC_REQUIRE_JAEGER set, as .ci/run sets it).
func jaegerBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("FEDSYNC_JAEGER")
	if bin == "" {
		bin = filepath.Join(repoRoot, ".fedsync", "bin", "jaeger")
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("FEDSYNC_REQUIRE_JAEGER") != "" {
			t.Fatalf("jaeger is not built (%v) and FEDSYNC_REQUIRE_JAEGER is set: run make jaeger", err)
		}
		t.Skipf("jaeger is not built (%s): run make jaeger to include the trace test", bin)
	}
	return bin
}

// jaegerSpan is a span as Jaeger's query API returns it.
type jaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64 `json:"startTime"` // µs
	Duration  int64 `json:"duration"`
	Tags      []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
	ProcessID string `json:"processID"`
}

type jaegerTrace struct {
	TraceID   string       `json:"traceID"`
	Spans     []jaegerSpan `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

func (s jaegerSpan) tag(key string) string {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

func (s jaegerSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// TestOneTracePerDeltaInJaeger runs the mesh with its spans going to a real
// Jaeger, pushes a delta that subscribers in both regions receive, and reads
// the delta's trace back through Jaeger's query API: every service is in one
// trace, the spans link in the order the delta travelled (push, merge,
// commit, fan-out, each subscriber's frame), and each carries the seed's 5.2
// attributes.
func TestOneTracePerDeltaInJaeger(t *testing.T) {
	bin := jaegerBinary(t)
	ctx := t.Context()
	j, err := devstack.StartJaeger(ctx, bin, filepath.Join(t.TempDir(), "jaeger"), "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.Stop)
	s := startStackWith(t, t.TempDir(), func(o *devstack.Options) { o.OTLPEndpoint = j.OTLPAddr })

	writer := newAgent(t, s, "ai-007", "na")
	subNA, _ := newAgent(t, s, "ai-008", "na").subscribe(map[string]any{"id_prefix": "ai-007:"})
	subEU, _ := newAgent(t, s, "ai-052", "eu").subscribe(map[string]any{"id_prefix": "ai-007:"})
	const messageID = "trace-test-0001"
	status, body := writer.pushPatiently(`{"id":"ai-007:traced","data_type":"note","message_id":"` + messageID + `","patch":{"x":1}}`)
	if status != http.StatusAccepted {
		t.Fatalf("push: %d %v", status, body)
	}
	for _, sub := range []*stream{subNA, subEU} {
		if ch := sub.next(20 * time.Second); ch["type"] != "change" || ch["id"] != "ai-007:traced" {
			t.Fatalf("subscriber got %v", ch)
		}
	}

	// Spans reach Jaeger in the exporters' batches (every 5 s by default).
	tags, _ := json.Marshal(map[string]string{"fedsync.message_id": messageID})
	query := "http://" + j.QueryAddr + "/api/traces?service=validation&lookback=1h&tags=" + url.QueryEscape(string(tags))
	var tr jaegerTrace
	var missing []string
	deadline := time.Now().Add(40 * time.Second)
	for {
		tr, missing = jaegerTrace{}, nil
		var resp struct {
			Data []jaegerTrace `json:"data"`
		}
		if r, err := http.Get(query); err == nil {
			json.NewDecoder(r.Body).Decode(&resp)
			r.Body.Close()
		}
		if len(resp.Data) > 0 {
			// The test's only validation trace with that message id.
			if len(resp.Data) != 1 {
				t.Fatalf("%d traces carry message_id %s; want one", len(resp.Data), messageID)
			}
			tr = resp.Data[0]
			if id := tr.TraceID; id != "" {
				// The search may return a partial trace: read it whole.
				var whole struct {
					Data []jaegerTrace `json:"data"`
				}
				if r, err := http.Get("http://" + j.QueryAddr + "/api/traces/" + id); err == nil {
					json.NewDecoder(r.Body).Decode(&whole)
					r.Body.Close()
				}
				if len(whole.Data) == 1 {
					tr = whole.Data[0]
				}
			}
		}
		missing = missingStages(tr)
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 40 s the trace of %s lacks %v; it has %s", messageID, missing, describeTrace(tr))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("trace %s: %s", tr.TraceID, describeTrace(tr))

	// Every service that handled the delta is in the one trace.
	services := map[string]bool{}
	for _, sp := range tr.Spans {
		services[tr.Processes[sp.ProcessID].ServiceName] = true
	}
	for _, want := range []string{"validation", "merge", "statestore", "broadcaster"} {
		if !services[want] {
			t.Errorf("no span of %s in the trace (services %v)", want, services)
		}
	}

	// The chain: each stage is a child of the one before and starts no earlier.
	byID := map[string]jaegerSpan{}
	for _, sp := range tr.Spans {
		byID[sp.SpanID] = sp
	}
	frames := spansNamed(tr, "broadcaster frame websocket")
	if len(frames) != 2 {
		t.Fatalf("want a frame span per subscriber (2), got %d: %s", len(frames), describeTrace(tr))
	}
	regions := map[string]bool{}
	for _, frame := range frames {
		chain := []jaegerSpan{frame}
		for sp := frame; sp.parent() != ""; {
			p, ok := byID[sp.parent()]
			if !ok {
				t.Fatalf("span %s (%s) has a parent not in the trace", sp.OperationName, sp.SpanID)
			}
			chain = append([]jaegerSpan{p}, chain...)
			sp = p
		}
		var names []string
		for _, sp := range chain {
			names = append(names, tr.Processes[sp.ProcessID].ServiceName+":"+sp.OperationName)
		}
		want := []string{
			"validation:POST /api/v1/sync/state",
			"merge:merge fedsync.deltas",
			"statestore:statestore commit",
			"broadcaster:broadcaster fan-out",
			"broadcaster:broadcaster frame websocket",
		}
		if strings.Join(names, " > ") != strings.Join(want, " > ") {
			t.Fatalf("a subscriber's frame descends from\n  %s\nwant\n  %s", strings.Join(names, " > "), strings.Join(want, " > "))
		}
		for i := 1; i < len(chain); i++ {
			if chain[i].StartTime < chain[i-1].StartTime {
				t.Errorf("%s starts %d µs before its parent %s", chain[i].OperationName, chain[i-1].StartTime-chain[i].StartTime, chain[i-1].OperationName)
			}
		}
		// The seed's 5.2 attributes, on every span of the delta's path.
		for _, sp := range chain {
			if sp.tag("ai_system_id") != "ai-007" || sp.tag("data_type") != "note" || sp.tag("sync_type") != "incremental" {
				t.Errorf("%s: ai_system_id=%q data_type=%q sync_type=%q; want ai-007, note, incremental",
					sp.OperationName, sp.tag("ai_system_id"), sp.tag("data_type"), sp.tag("sync_type"))
			}
		}
		regions[chain[3].ProcessID] = true
	}
	if len(regions) != 2 {
		t.Errorf("both frames came from one broadcaster process; want one per region's broadcaster")
	}
}

// missingStages lists the stages of a delta's path that tr does not have yet.
func missingStages(tr jaegerTrace) []string {
	var missing []string
	for _, name := range []string{"POST /api/v1/sync/state", "merge fedsync.deltas", "statestore commit", "broadcaster fan-out"} {
		if len(spansNamed(tr, name)) == 0 {
			missing = append(missing, name)
		}
	}
	if n := len(spansNamed(tr, "broadcaster frame websocket")); n < 2 {
		missing = append(missing, fmt.Sprintf("frames (%d of 2)", n))
	}
	return missing
}

func spansNamed(tr jaegerTrace, name string) []jaegerSpan {
	var out []jaegerSpan
	for _, sp := range tr.Spans {
		if sp.OperationName == name {
			out = append(out, sp)
		}
	}
	return out
}

func describeTrace(tr jaegerTrace) string {
	var names []string
	for _, sp := range tr.Spans {
		names = append(names, tr.Processes[sp.ProcessID].ServiceName+":"+sp.OperationName)
	}
	sort.Strings(names)
	return fmt.Sprintf("%d spans %v", len(tr.Spans), names)
}
