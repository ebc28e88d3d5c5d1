package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestDashboardInABrowser opens /dashboard through the edge in headless
// Chromium (Debian package chromium) with an L1 token while an agent writes,
// and checks what a person would see: the page loads with no console errors,
// the topology lists all six services, and the committed-deltas counter
// rises. A screenshot is saved in $FEDSYNC_ARTIFACTS (default
// .fedsync/artifacts). Without Chromium the test is skipped, unless
// FEDSYNC_REQUIRE_BROWSER is set (.ci/run sets it).
func TestDashboardInABrowser(t *testing.T) {
	browser := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		if os.Getenv("FEDSYNC_REQUIRE_BROWSER") != "" {
			t.Fatal("chromium is not installed (Debian package chromium) and FEDSYNC_REQUIRE_BROWSER is set")
		}
		t.Skip("chromium not installed (Debian package chromium): skipping the browser test")
	}
	s := startStack(t)
	writer := newAgent(t, s, "ai-001", "na")
	viewer := newAgent(t, s, "observer", "na")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			writer.do("POST", "/api/v1/sync/state", []byte(fmt.Sprintf(`{"id":"ai-001:dash-%d","data_type":"note","patch":{"n":%d}}`, i%10, i)), writer.token)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	time.Sleep(4 * time.Second) // the health monitor has probed every service and scraped merge twice

	artifacts := os.Getenv("FEDSYNC_ARTIFACTS")
	if artifacts == "" {
		artifacts = filepath.Join(repoRoot, ".fedsync", "artifacts")
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	url := s.EdgeURL("na") + "/dashboard#token=" + viewer.token
	b := startBrowser(t, browser)
	page := b.open(t, url)
	// Wait, as a person would, for the live view to show the mesh and the
	// counter to move.
	var topology []string
	var rate float64
	deadline := time.Now().Add(30 * time.Second)
	for {
		var v struct {
			Rate     string   `json:"rate"`
			Services []string `json:"services"`
		}
		page.eval(t, `({rate: document.getElementById("committed-rate").textContent,
			services: Array.from(document.querySelectorAll("#topology tbody tr")).filter(r => r.cells[1].textContent === "healthy").map(r => r.cells[0].textContent)})`, &v)
		topology = v.Services
		rate, _ = strconv.ParseFloat(v.Rate, 64)
		if (len(topology) == 6 && rate > 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if fmt.Sprint(topology) != "[authn broadcaster healthmonitor merge statestore validation]" {
		t.Errorf("the topology lists %v as healthy, want all six services", topology)
	}
	if rate <= 0 {
		t.Errorf("the committed-deltas counter shows %v while an agent writes", rate)
	}
	for _, e := range page.consoleErrors() {
		t.Errorf("console error: %s", e)
	}
	shot := filepath.Join(artifacts, "dashboard.png")
	page.screenshot(t, shot)
	t.Logf("screenshot %s; committed/s shown %.1f; topology %v", shot, rate, topology)
}
