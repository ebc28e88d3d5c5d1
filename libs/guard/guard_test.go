package guard

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedsync/fedsync/libs/apierr"
)

// serve runs h behind l's server on a loopback port.
func serve(t *testing.T, l Limits, h http.Handler) (string, *Metrics) {
	t.Helper()
	m := NewMetrics(prometheus.NewRegistry())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := l.Server(h, m, nil)
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	return lis.Addr().String(), m
}

// rawRequest writes head on a new connection, then trickles one byte of body
// every interval until the server answers or closes; it returns the status
// line ("" when the connection was closed without an answer) and how long it
// took.
func rawRequest(t *testing.T, addr, head string, trickle time.Duration) (string, time.Duration) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	conn.Write([]byte(head))
	answered := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(conn).ReadString('\n')
		answered <- strings.TrimSpace(line)
	}()
	tick := time.NewTicker(trickle)
	defer tick.Stop()
	for {
		select {
		case line := <-answered:
			return line, time.Since(start)
		case <-tick.C:
			conn.Write([]byte("x"))
		case <-time.After(10 * time.Second):
			t.Fatal("the server neither answered nor closed within 10 s")
		}
	}
}

func TestSlowClientsAreCut(t *testing.T) {
	l := Limits{ReadHeader: 300 * time.Millisecond, Body: 300 * time.Millisecond, Idle: time.Second, MaxHeaderBytes: 8 << 10}
	addr, _ := serve(t, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			apierr.WriteHTTP(w, apierr.New(apierr.InvalidArgument, "body: %v", err))
			return
		}
		w.WriteHeader(204)
	}))
	// Headers that never end.
	if line, took := rawRequest(t, addr, "POST /x HTTP/1.1\r\nHost: a\r\nX-Slow: ", 50*time.Millisecond); took > 2*time.Second {
		t.Fatalf("slow headers held the connection %s (%q)", took, line)
	}
	// A body sent one byte per 50 ms, declared as 10,000 bytes.
	line, took := rawRequest(t, addr, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10000\r\n\r\n", 50*time.Millisecond)
	if took > 2*time.Second || !strings.Contains(line, "400") {
		t.Fatalf("slow body: %q after %s, want 400 within the body timeout", line, took)
	}
	// A normal request still works.
	resp, err := http.Post("http://"+addr+"/x", "application/json", strings.NewReader(`{}`))
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("normal request: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestPanicsAreRecovered(t *testing.T) {
	addr, m := serve(t, Defaults, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var nilMap map[string]*int
		_ = *nilMap["x"] // a nil dereference, as a bad type assertion would be
	}))
	resp, err := http.Get("http://" + addr + "/boom")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || !strings.Contains(string(body), `"internal"`) {
		t.Fatalf("panic answered %d %s", resp.StatusCode, body)
	}
	if got := testutil.ToFloat64(m.Panics.WithLabelValues("http")); got != 1 {
		t.Fatalf("fedsync_panics_recovered_total{transport=http} = %v", got)
	}

	unary, stream := GRPCRecovery(m, nil)
	_, err = unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x.Y/Z"}, func(context.Context, any) (any, error) {
		var v any = "not a request"
		return v.(fmt.Stringer), nil
	})
	if status.Code(err) != codes.Internal {
		t.Fatalf("unary panic: %v", err)
	}
	if err := stream(nil, nil, &grpc.StreamServerInfo{FullMethod: "/x.Y/S"}, func(any, grpc.ServerStream) error { panic("boom") }); status.Code(err) != codes.Internal {
		t.Fatalf("stream panic: %v", err)
	}
	if got := testutil.ToFloat64(m.Panics.WithLabelValues("grpc")); got != 2 {
		t.Fatalf("fedsync_panics_recovered_total{transport=grpc} = %v", got)
	}
}

func TestInvalidUTF8InURL(t *testing.T) {
	addr, _ := serve(t, Defaults, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	for path, want := range map[string]int{
		"/api/v1/sync/state/ai-001:ok":            204,
		"/api/v1/sync/state/ai-001:%C3%A9t%C3%A9": 204,
		"/api/v1/sync/state/ai-001:%FF":           400,
		"/stream?id_prefix=%FE":                   400,
		"/stream?%FF=1":                           400,
		"/stream?a=%zz":                           400,
	} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func TestLimitBody(t *testing.T) {
	// A backend that echoes the body, behind LimitBody as the edge's proxy
	// would be: the body error decides the answer.
	h := LimitBody(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			if e := BodyError(r); e != nil {
				apierr.WriteHTTP(w, e)
				return
			}
			t.Errorf("read error without BodyError: %v", err)
		}
		w.WriteHeader(204)
	}), 1<<10)
	addr, _ := serve(t, Defaults, h)
	cases := []struct {
		name, req string
		want      string
	}{
		{"declared 1e14 bytes", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000000000\r\n\r\n", "413"},
		{"chunked past the limit", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + strings.Repeat("a", 0x800) + "\r\n0\r\n\r\n", "413"},
		{"malformed chunk", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", "400"},
		{"fine", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}", "204"},
	}
	for _, c := range cases {
		line, took := rawRequest(t, addr, c.req, time.Hour)
		if !strings.Contains(line, " "+c.want+" ") || took > 2*time.Second {
			t.Errorf("%s: %q after %s, want %s at once", c.name, line, took, c.want)
		}
	}
}
