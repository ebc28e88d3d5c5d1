package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/mtls"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
	"github.com/fedsync/fedsync/tools/devstack"
)

// fedsyncSystem runs the mesh (embedded broker, every service as its own
// process, one edge per region) in a "fedbench __stack" child process and talks
// to it through its public API only: tokens from /oauth2/token, writes over REST
// (through the edge) or gRPC (validation's ValidationService), subscriptions
// over WebSocket /stream (through the edge) or gRPC (BroadcasterService).
type fedsyncSystem struct {
	binDir, dataTypes string
	api, sub          string // "rest"|"grpc", "ws"|"grpc"
	kafka             string // external Kafka; "" = the embedded broker
	replicas          int    // the statestore's Raft group size
	name              string // "" is fedsync; fedsync-1 with one statestore replica
	// direct: WebSocket subscribers connect to the broadcasters' HTTP ports
	// instead of through the edge (see Scenario.DirectSubscribe).
	direct bool

	cmd  *exec.Cmd
	done chan struct{}
	info stackInfo

	mu     sync.Mutex
	tokens map[string]string // client id -> token
	agents []devstack.Client // ai-001 ...
}

func newFedsync(binDir, dataTypes, api, sub, kafka string, replicas int) *fedsyncSystem {
	return &fedsyncSystem{binDir: binDir, dataTypes: dataTypes, api: api, sub: sub, kafka: kafka, replicas: replicas, tokens: map[string]string{}}
}

func (f *fedsyncSystem) Name() string {
	if f.name != "" {
		return f.name
	}
	return "fedsync"
}
func (f *fedsyncSystem) Contiguous() bool     { return true }
func (f *fedsyncSystem) PartialUpdates() bool { return true } // a delta is a patch of top-level fields

func (f *fedsyncSystem) Available() (bool, string) {
	for _, b := range []string{"authn", "validation", "merge", "statestore", "broadcaster", "healthmonitor"} {
		if _, err := os.Stat(filepath.Join(f.binDir, b)); err != nil {
			return false, fmt.Sprintf("%s not found in %s (run make build)", b, f.binDir)
		}
	}
	if _, err := os.Stat(f.dataTypes); err != nil {
		return false, fmt.Sprintf("data types %s not found (run fedbench from the repository root)", f.dataTypes)
	}
	return true, ""
}

func (f *fedsyncSystem) Info() SystemInfo {
	broker, durable := "embedded Kafka-protocol broker (kfake with devstack's group commit)", "the embedded broker acknowledges only after a syncfs that started after the write (group commit)"
	if f.kafka != "" {
		broker, durable = "external Kafka at "+f.kafka, "the broker's own flush settings apply"
	}
	subs := map[string]string{"ws": "WebSocket through the edge", "grpc": "gRPC to broadcaster (mutual TLS)"}[f.sub]
	if f.direct && f.sub == "ws" {
		subs = "WebSocket straight to the broadcasters"
	}
	return SystemInfo{
		Version: gitDescribe(),
		Config: fmt.Sprintf("devstack: 2 regions (na, eu), statestore as a Raft group of %d, %s, writes over %s, subscriptions over %s, default rate limits (1,000/s per client, 10,000/s per regional hub)",
			f.replicas, broker, map[string]string{"rest": "REST through the edge", "grpc": "gRPC to validation (mutual TLS)"}[f.api], subs),
		Durability: "202 only once the delta is in the Kafka log with acks=all; " + durable + "; statestore commits once the batch's Raft entry is in the log of a majority of its replicas (fsync on each) and applied in bbolt (fsync per transaction)",
	}
}

func (f *fedsyncSystem) Start(ctx context.Context, dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// Started through a link named devstack, so that ps, top and perf show the
	// mesh's own process (edges and embedded broker) under that name rather
	// than as fedbench.
	link := filepath.Join(dir, "devstack")
	if err := os.Symlink(self, link); err == nil {
		self = link
	}
	args := []string{"__stack", "-bin", f.binDir, "-state", dir, "-datatypes", f.dataTypes, "-statestore-replicas", strconv.Itoa(f.replicas)}
	if f.kafka != "" {
		args = append(args, "-kafka", f.kafka, "-topic-prefix", "fedbench-"+filepath.Base(dir)+"-")
	}
	cmd := exec.Command(self, args...)
	logf, err := os.Create(filepath.Join(dir, "stack.log"))
	if err != nil {
		return err
	}
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return err
	}
	f.cmd, f.done = cmd, make(chan struct{})
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), stackReadyPrefix); ok {
				ready <- json.Unmarshal([]byte(line), &f.info)
			}
		}
		ready <- errors.New("the stack exited during start-up")
	}()
	go func() { cmd.Wait(); logf.Close(); close(f.done) }()
	select {
	case err = <-ready:
	case <-time.After(120 * time.Second):
		err = errors.New("the stack did not start within 120 s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		f.Stop()
		return fmt.Errorf("%w; see %s", err, filepath.Join(dir, "stack.log"))
	}
	// A new stack has new signing keys: forget the previous one's tokens.
	f.mu.Lock()
	f.tokens = map[string]string{}
	f.mu.Unlock()
	f.agents = nil
	for _, c := range f.info.Clients {
		if strings.HasPrefix(c.ClientID, "ai-") {
			f.agents = append(f.agents, c)
		}
	}
	sort.Slice(f.agents, func(i, j int) bool { return f.agents[i].ClientID < f.agents[j].ClientID })
	return nil
}

func (f *fedsyncSystem) Stop() {
	if f.cmd == nil || f.cmd.Process == nil {
		return
	}
	f.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-f.done:
	case <-time.After(20 * time.Second):
		for pid := range childrenOf(f.cmd.Process.Pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		f.cmd.Process.Kill()
		<-f.done
	}
}

func (f *fedsyncSystem) PIDs() map[int]string {
	if f.cmd == nil || f.cmd.Process == nil {
		return nil
	}
	out := childrenOf(f.cmd.Process.Pid)
	out[f.cmd.Process.Pid] = "devstack (edges + broker)"
	return out
}

func (f *fedsyncSystem) agent(i int) devstack.Client { return f.agents[i%len(f.agents)] }

func (f *fedsyncSystem) edge(c devstack.Client) string {
	if e, ok := f.info.Edges[c.Region]; ok {
		return e
	}
	return f.info.Edges["na"]
}

func (f *fedsyncSystem) token(ctx context.Context, c devstack.Client) (string, error) {
	f.mu.Lock()
	t, ok := f.tokens[c.ClientID]
	f.mu.Unlock()
	if ok {
		return t, nil
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if t, err = devstack.Token(ctx, f.edge(c), c); err == nil {
			f.mu.Lock()
			f.tokens[c.ClientID] = t
			f.mu.Unlock()
			return t, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "", err
}

// grpcCreds are the transport credentials of the services' gRPC ports: mutual
// TLS with the stack's development CA when it issued fedbench a certificate.
func (f *fedsyncSystem) grpcCreds() (credentials.TransportCredentials, error) {
	if !f.info.TLS.Enabled() {
		return insecure.NewCredentials(), nil
	}
	id, err := mtls.Load(f.info.TLS)
	if err != nil {
		return nil, err
	}
	return id.ClientCredentials(), nil
}

// ---- writers ----

type restWriter struct {
	client *http.Client
	url    string
	token  string
	buf    bytes.Buffer
}

func (f *fedsyncSystem) NewWriter(ctx context.Context, agent int) (Writer, error) {
	c := f.agent(agent)
	if c.ClientID != agentName(agent) {
		return nil, fmt.Errorf("writer %d needs client %s (its ids are under %s:), the stack has %d agent clients", agent, agentName(agent), agentName(agent), len(f.agents))
	}
	tok, err := f.token(ctx, c)
	if err != nil {
		return nil, err
	}
	if f.api == "grpc" {
		addr := f.info.Services["validation-"+c.Region].GRPC
		if addr == "" {
			addr = f.info.Services["validation-na"].GRPC
		}
		creds, err := f.grpcCreds()
		if err != nil {
			return nil, err
		}
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, err
		}
		return &grpcWriter{cc: cc, client: fedsyncv1.NewValidationServiceClient(cc), md: metadata.Pairs("authorization", "Bearer "+tok)}, nil
	}
	// One connection per agent, kept alive.
	tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext}
	return &restWriter{client: &http.Client{Transport: tr, Timeout: 30 * time.Second}, url: f.edge(c) + "/api/v1/sync/state", token: tok}, nil
}

func (w *restWriter) Put(ctx context.Context, id string, value []byte, msgID string, base int64) error {
	w.start(id, msgID, base)
	w.buf.WriteString(`{"fb":`)
	w.buf.Write(value)
	w.buf.WriteString(`}}`)
	return w.post(ctx)
}

// Seed writes fields (a JSON object) into id as one delta.
func (w *restWriter) Seed(ctx context.Context, id string, fields []byte, msgID string) error {
	w.start(id, msgID, 0)
	w.buf.Write(fields)
	w.buf.WriteString(`}`)
	return w.post(ctx)
}

// start writes the request body up to the patch.
func (w *restWriter) start(id, msgID string, base int64) {
	w.buf.Reset()
	w.buf.WriteString(`{"id":`)
	w.buf.WriteString(strconv.Quote(id))
	w.buf.WriteString(`,"data_type":"note","message_id":`)
	w.buf.WriteString(strconv.Quote(msgID))
	if base > 0 {
		w.buf.WriteString(`,"base_version":`)
		w.buf.WriteString(strconv.FormatInt(base, 10))
	}
	w.buf.WriteString(`,"patch":`)
}

func (w *restWriter) post(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(w.buf.Bytes()))
	req.Header.Set("Authorization", "Bearer "+w.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK {
		return nil
	}
	if re := httpRefusal(resp.StatusCode, resp.Header, body); re != nil {
		return re
	}
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(body, &e)
	ce := &codeError{code: fmt.Sprintf("%d %s", resp.StatusCode, e.Error.Code)}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		ce.retryAfter = time.Duration(s) * time.Second
	}
	return ce
}

func (w *restWriter) Close() { w.client.CloseIdleConnections() }

type grpcWriter struct {
	cc     *grpc.ClientConn
	client fedsyncv1.ValidationServiceClient
	md     metadata.MD
}

func (w *grpcWriter) Put(ctx context.Context, id string, value []byte, msgID string, base int64) error {
	patch := make([]byte, 0, len(value)+8)
	patch = append(append(append(patch, `{"fb":`...), value...), '}')
	return w.push(ctx, id, patch, msgID, base)
}

// Seed writes fields (a JSON object) into id as one delta.
func (w *grpcWriter) Seed(ctx context.Context, id string, fields []byte, msgID string) error {
	return w.push(ctx, id, fields, msgID, 0)
}

func (w *grpcWriter) push(ctx context.Context, id string, patch []byte, msgID string, base int64) error {
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, w.md), 30*time.Second)
	defer cancel()
	_, err := w.client.PushState(ctx, &fedsyncv1.PushStateRequest{Id: id, DataType: "note", Patch: patch, MessageId: msgID,
		BaseVersion: base, HasBaseVersion: base > 0})
	if err != nil {
		st, _ := status.FromError(err)
		if re := grpcRefusal(st); re != nil {
			return re
		}
		ce := &codeError{code: "grpc " + st.Code().String()}
		if st.Code() == codes.ResourceExhausted {
			ce.retryAfter = time.Second
		}
		return ce
	}
	return nil
}

func (w *grpcWriter) Close() { w.cc.Close() }

// ---- subscribers ----

// wsMessage is one server message of the WebSocket /stream. A change carries
// the whole document in value, or, on a subscription with "events":"delta",
// the fields the commit set (a JSON object) and removed instead.
type wsMessage struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Version int64           `json:"version"`
	Value   json.RawMessage `json:"value"`
	Set     json.RawMessage `json:"set"`
	Removed []string        `json:"removed"`
	Cursor  string          `json:"cursor"`
	Error   struct {
		Code string `json:"code"`
	} `json:"error"`
}

// subscribeMessage is the WebSocket subscribe request; "events" is sent only
// for incremental events (whole documents are the default).
func subscribeMessage(prefix, cursor, events string) []byte {
	m := map[string]any{"type": "subscribe", "id_prefix": prefix, "from_cursor": cursor}
	if events == "delta" {
		m["events"] = "delta"
	}
	b, _ := json.Marshal(m)
	return b
}

// changeEvent turns a change message of size bytes into an Event: the whole
// document when it carries one, else what it set.
func changeEvent(id string, version int64, value, set []byte, removed []string, size int) Event {
	if len(value) > 0 && string(value) != "null" {
		return Event{ID: id, Version: version, Value: value, Bytes: size}
	}
	if string(set) == "null" {
		set = nil
	}
	return Event{ID: id, Version: version, Value: set, Delta: set != nil || removed != nil, Bytes: size}
}

func (f *fedsyncSystem) Subscribe(ctx context.Context, sub int, prefix, events string, deliver func(Event)) (Closer, error) {
	c := f.agent(sub)
	tok, err := f.token(ctx, c)
	if err != nil {
		return nil, err
	}
	// Subscribers alternate between the regions' broadcasters.
	region := []string{"na", "eu"}[sub%2]
	if _, ok := f.info.Edges[region]; !ok {
		region = "na"
	}
	sctx, cancel := context.WithCancel(context.Background())
	ready := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	if f.sub == "grpc" {
		go func() { defer wg.Done(); f.grpcSubscriber(sctx, region, tok, prefix, events, deliver, ready) }()
	} else {
		base := f.info.Edges[region]
		if f.direct {
			base = "http://" + f.info.Services["broadcaster-"+region].HTTP
		}
		go func() { defer wg.Done(); f.wsSubscriber(sctx, base, tok, prefix, events, deliver, ready) }()
	}
	select {
	case err = <-ready:
	case <-ctx.Done():
		err = ctx.Err()
	case <-time.After(60 * time.Second):
		err = errors.New("not subscribed within 60 s")
	}
	if err != nil {
		cancel()
		wg.Wait()
		return nil, err
	}
	return closerFunc(func() { cancel(); wg.Wait() }), nil
}

// wsSubscriber keeps one WebSocket subscription, resuming from the last cursor
// when the server closes it (as a real client does after "unavailable").
func (f *fedsyncSystem) wsSubscriber(ctx context.Context, edge, token, prefix, events string, deliver func(Event), ready chan<- error) {
	wsURL := "ws" + strings.TrimPrefix(edge, "http") + "/stream"
	cursor := ""
	first := true
	for ctx.Err() == nil {
		dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
		conn, _, err := websocket.Dial(dctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
		dcancel()
		if err != nil {
			if first {
				ready <- err
				return
			}
			deliver(Event{Err: "ws dial"})
			sleepCtx(ctx, 500*time.Millisecond)
			continue
		}
		conn.SetReadLimit(16 << 20)
		msg := subscribeMessage(prefix, cursor, events)
		if err := conn.Write(ctx, websocket.MessageText, msg); err != nil {
			conn.CloseNow()
			if first {
				ready <- err
				return
			}
			continue
		}
		for {
			_, data, err := conn.Read(ctx)
			if err != nil {
				if ctx.Err() == nil {
					code := "ws closed"
					if cs := websocket.CloseStatus(err); cs != -1 {
						code = fmt.Sprintf("ws closed %d", cs)
					}
					deliver(Event{Err: code})
				}
				break
			}
			var m wsMessage
			if err := json.Unmarshal(data, &m); err != nil {
				deliver(Event{Err: "ws bad json"})
				continue
			}
			switch m.Type {
			case "subscribed":
				if cursor == "" {
					cursor = m.Cursor
				}
				if first {
					first = false
					ready <- nil
				}
			case "change":
				cursor = m.Cursor
				deliver(changeEvent(m.ID, m.Version, m.Value, m.Set, m.Removed, len(data)))
			case "error":
				deliver(Event{Err: "ws error " + m.Error.Code})
			case "snapshot_required":
				deliver(Event{Err: "ws snapshot_required"})
			}
		}
		conn.CloseNow()
		if first {
			ready <- errors.New("connection closed before subscribed")
			return
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

func (f *fedsyncSystem) grpcSubscriber(ctx context.Context, region, token, prefix, events string, deliver func(Event), ready chan<- error) {
	addr := f.info.Services["broadcaster-"+region].GRPC
	creds, err := f.grpcCreds()
	if err != nil {
		ready <- err
		return
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		ready <- err
		return
	}
	defer cc.Close()
	client := fedsyncv1.NewBroadcasterServiceClient(cc)
	mctx := metadata.NewOutgoingContext(ctx, metadata.Pairs("authorization", "Bearer "+token))
	cursor := ""
	first := true
	for ctx.Err() == nil {
		req := &fedsyncv1.SubscribeRequest{IdPrefix: prefix, FromCursor: cursor}
		if events == "delta" {
			req.Events = "delta"
		}
		stream, err := client.Subscribe(mctx, req)
		if err == nil {
			for {
				m, rerr := stream.Recv()
				if rerr != nil {
					err = rerr
					break
				}
				switch m.GetType() {
				case "subscribed":
					if cursor == "" {
						cursor = m.GetCursor()
					}
					if first {
						first = false
						ready <- nil
					}
				case "change":
					cursor = m.GetCursor()
					deliver(changeEvent(m.GetId(), m.GetVersion(), m.GetValue(), m.GetSet(), m.GetRemoved(), proto.Size(m)))
				default:
					deliver(Event{Err: "grpc " + m.GetType()})
				}
			}
		}
		if first {
			ready <- err
			return
		}
		if ctx.Err() == nil {
			st, _ := status.FromError(err)
			deliver(Event{Err: "grpc stream " + st.Code().String()})
			sleepCtx(ctx, 100*time.Millisecond)
		}
	}
}

// ---- reads, counters, outcomes ----

func (f *fedsyncSystem) get(ctx context.Context, c devstack.Client, path string) (int, []byte, error) {
	tok, err := f.token(ctx, c)
	if err != nil {
		return 0, nil, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.edge(c)+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (f *fedsyncSystem) FinalVersions(ctx context.Context, ids []string) (map[string]int64, error) {
	out := make(map[string]int64, len(ids))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, id := range ids {
		g.Go(func() error {
			code, body, err := f.get(gctx, f.agent(0), "/api/v1/sync/state/"+url.PathEscape(id))
			if err != nil {
				return err
			}
			var st struct {
				Version int64 `json:"version"`
			}
			switch code {
			case http.StatusOK:
				json.Unmarshal(body, &st)
			case http.StatusNotFound:
			default:
				return fmt.Errorf("GET state %s: %d %s", id, code, body)
			}
			mu.Lock()
			out[id] = st.Version
			mu.Unlock()
			return nil
		})
	}
	return out, g.Wait()
}

// Counters scrapes every instance's /metrics: merge's deltas by outcome and
// conflict_rate by conflict type and resolution, and, per service and method,
// the sums and counts of fedsync_request_duration_seconds and of sync_latency
// (where the time of the hot path goes).
func (f *fedsyncSystem) Counters(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for inst, ep := range f.info.Services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := scrape(ctx, ep.HTTP, strings.TrimSuffix(strings.TrimSuffix(inst, "-na"), "-eu"))
			mu.Lock()
			for k, v := range m {
				out[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

func scrape(ctx context.Context, addr, service string) map[string]float64 {
	out := map[string]float64{}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		name, _, _ := strings.Cut(line, "{")
		switch name {
		case "fedsync_merge_deltas_total":
			labels, v := promLine(line)
			out["merge/"+labels["outcome"]] += v
		case "conflict_rate":
			labels, v := promLine(line)
			out["conflict/"+labels["conflict_type"]+"/"+labels["resolution_method"]] += v
		case "fedsync_request_duration_seconds_sum", "fedsync_request_duration_seconds_count":
			labels, v := promLine(line)
			kind := strings.TrimPrefix(name, "fedsync_request_duration_seconds_")
			out["stage_"+kind+"/"+service+" "+labels["method"]] += v
		case "sync_latency_sum", "sync_latency_count":
			labels, v := promLine(line)
			kind := strings.TrimPrefix(name, "sync_latency_")
			// sync_latency is in milliseconds; stages are kept in seconds.
			if kind == "sum" {
				v /= 1000
			}
			out["stage_"+kind+"/"+service+" admission to "+labels["target_system"]] += v
		}
	}
	return out
}

// ReviewQueue counts the pending conflicts of the review queue (L3 coordinator).
func (f *fedsyncSystem) ReviewQueue(ctx context.Context) (int, error) {
	var coord devstack.Client
	for _, c := range f.info.Clients {
		if c.Level == "L3" {
			coord = c
		}
	}
	if coord.ClientID == "" {
		return 0, errors.New("no L3 client")
	}
	n, page := 0, ""
	for i := 0; i < 50; i++ {
		code, body, err := f.get(ctx, coord, "/api/v1/sync/conflicts?status=pending&limit=100&page_token="+url.QueryEscape(page))
		if err != nil {
			return n, err
		}
		if code != http.StatusOK {
			return n, fmt.Errorf("review queue: %d %s", code, body)
		}
		var r struct {
			Conflicts []json.RawMessage `json:"conflicts"`
			Next      string            `json:"next_page_token"`
		}
		json.Unmarshal(body, &r)
		n += len(r.Conflicts)
		if r.Next == "" {
			break
		}
		page = r.Next
	}
	return n, nil
}

// promLine parses `name{a="x",b="y"} 12` (label values without escapes).
func promLine(line string) (map[string]string, float64) {
	labels := map[string]string{}
	open, close := strings.IndexByte(line, '{'), strings.LastIndexByte(line, '}')
	if open < 0 || close < open {
		return labels, 0
	}
	for _, kv := range strings.Split(line[open+1:close], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok {
			labels[k] = strings.Trim(v, `"`)
		}
	}
	v, _ := strconv.ParseFloat(strings.TrimSpace(line[close+1:]), 64)
	return labels, v
}

// Excuse asks fedsync's outcome API what became of acknowledged deltas no
// subscriber saw. "superseded" (every field lost to a later write: a legitimate
// outcome when writers race on one id) and "duplicate" excuse them; any other
// answer ("committed", not found) is returned too and counted as a loss.
func (f *fedsyncSystem) Excuse(ctx context.Context, missing map[deltaKey]string, msgID func(deltaKey) string) map[deltaKey]string {
	out := map[deltaKey]string{}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	n := 0
	for k := range missing {
		if n++; n > 50000 {
			break
		}
		g.Go(func() error {
			code, body, err := f.get(gctx, f.agent(k.writer()), "/api/v1/sync/outcomes/"+url.PathEscape(msgID(k)))
			if err != nil {
				return nil
			}
			if code != http.StatusOK {
				mu.Lock()
				out[k] = fmt.Sprintf("outcome %d", code)
				mu.Unlock()
				return nil
			}
			var o struct {
				Status string `json:"status"`
			}
			json.Unmarshal(body, &o)
			mu.Lock()
			out[k] = o.Status
			mu.Unlock()
			return nil
		})
	}
	g.Wait()
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// gitDescribe is the commit fedsync's services are measured at, and whether the
// working tree had changes.
func gitDescribe() string { return readGitState(".", "bench/results").Describe() }
