package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// browser is a headless Chromium driven over the DevTools protocol.
type browser struct {
	debug string // http://127.0.0.1:port
}

func startBrowser(t *testing.T, binary string) *browser {
	t.Helper()
	cmd := exec.Command(binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--window-size=1280,1000", "about:blank")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		re := regexp.MustCompile(`DevTools listening on ws://([0-9.:]+)/`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	select {
	case addr := <-found:
		return &browser{debug: "http://" + addr}
	case <-time.After(30 * time.Second):
		t.Fatal("chromium did not start its DevTools endpoint")
	}
	return nil
}

// page is one tab.
type page struct {
	conn *websocket.Conn
	ctx  context.Context
	mu   sync.Mutex
	next int
	wait map[int]chan json.RawMessage
	errs []string
}

func (b *browser) open(t *testing.T, target string) *page {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, b.debug+"/json/new?"+url.QueryEscape(target), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		WebSocketDebuggerURL string `json:"webSocketDebuggerUrl"`
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(raw, &info); err != nil || info.WebSocketDebuggerURL == "" {
		t.Fatalf("new tab: %s %v", raw, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	conn, _, err := websocket.Dial(ctx, info.WebSocketDebuggerURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadLimit(64 << 20)
	p := &page{conn: conn, ctx: ctx, wait: map[int]chan json.RawMessage{}}
	go p.read()
	p.call(t, "Runtime.enable", nil)
	p.call(t, "Log.enable", nil)
	p.call(t, "Page.enable", nil)
	p.call(t, "Page.reload", nil) // the load happened before Runtime was enabled: see it again
	return p
}

func (p *page) read() {
	for {
		var m struct {
			ID     int             `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
			Result json.RawMessage `json:"result"`
		}
		if err := wsjson.Read(p.ctx, p.conn, &m); err != nil {
			return
		}
		p.mu.Lock()
		if ch, ok := p.wait[m.ID]; ok && m.ID != 0 {
			delete(p.wait, m.ID)
			ch <- m.Result
		}
		switch m.Method {
		case "Runtime.exceptionThrown":
			p.errs = append(p.errs, "exception: "+string(m.Params))
		case "Runtime.consoleAPICalled":
			if strings.Contains(string(m.Params), `"type":"error"`) {
				p.errs = append(p.errs, "console.error: "+string(m.Params))
			}
		case "Log.entryAdded":
			if strings.Contains(string(m.Params), `"level":"error"`) {
				p.errs = append(p.errs, "log: "+string(m.Params))
			}
		}
		p.mu.Unlock()
	}
}

func (p *page) call(t *testing.T, method string, params any) json.RawMessage {
	t.Helper()
	p.mu.Lock()
	p.next++
	id := p.next
	ch := make(chan json.RawMessage, 1)
	p.wait[id] = ch
	p.mu.Unlock()
	if err := wsjson.Write(p.ctx, p.conn, map[string]any{"id": id, "method": method, "params": params}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no answer", method)
	}
	return nil
}

// eval evaluates a JavaScript expression in the page into v.
func (p *page) eval(t *testing.T, expr string, v any) {
	t.Helper()
	r := p.call(t, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true})
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails any `json:"exceptionDetails"`
	}
	json.Unmarshal(r, &res)
	if res.ExceptionDetails != nil || len(res.Result.Value) == 0 {
		return // not ready yet (the page is loading)
	}
	json.Unmarshal(res.Result.Value, v)
}

func (p *page) consoleErrors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errs...)
}

func (p *page) screenshot(t *testing.T, path string) {
	t.Helper()
	var shot struct {
		Data string `json:"data"`
	}
	json.Unmarshal(p.call(t, "Page.captureScreenshot", map[string]any{"format": "png"}), &shot)
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil || len(png) < 10_000 {
		t.Fatalf("screenshot: %d bytes, %v", len(png), err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}
