package devstack

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestEdgeFailsOverBetweenStatestoreReplicas: with one replica's address
// refusing connections, every read (a GET, and a POST whose body must be
// sent again) reaches a replica that answers; an answer, errors included, is
// never retried elsewhere.
func TestEdgeFailsOverBetweenStatestoreReplicas(t *testing.T) {
	var hits int
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/api/v1/sync/state/missing" {
			http.Error(w, `{"error":{"code":"not_found"}}`, http.StatusNotFound)
			return
		}
		w.Write(append([]byte(r.Method+" "), body...))
	}))
	defer up.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	l.Close() // nothing listens here any more
	edge := httptest.NewServer(NewEdge(Routes{StateStore: down + "," + strings.TrimPrefix(up.URL, "http://")}))
	defer edge.Close()

	for i := 0; i < 4; i++ {
		resp, err := http.Get(edge.URL + "/api/v1/sync/state/ai-001:doc")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "GET " {
			t.Fatalf("GET %d: %d %q", i, resp.StatusCode, b)
		}
		resp, err = http.Post(edge.URL+"/api/v1/sync/query", "application/json", strings.NewReader(`{"id_prefix":"ai-"}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != `POST {"id_prefix":"ai-"}` {
			t.Fatalf("POST %d: %d %q", i, resp.StatusCode, b)
		}
	}
	before := hits
	resp, err := http.Get(edge.URL + "/api/v1/sync/state/missing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || hits != before+1 {
		t.Fatalf("an answer was retried or lost: %d, %d hits", resp.StatusCode, hits-before)
	}
}
