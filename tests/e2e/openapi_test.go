package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
)

// TestOpenAPIDocument: the document is served through the edge as kept in
// docs/, is a valid OpenAPI 3.1 document (libopenapi-validator checks it
// against the specification's schema), and lists exactly the routes the
// services register: every route is documented and every documented route
// exists. A request the document describes is answered as it says.
func TestOpenAPIDocument(t *testing.T) {
	kept, err := os.ReadFile(filepath.Join(repoRoot, "docs", "openapi.json"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := libopenapi.NewDocument(kept)
	if err != nil {
		t.Fatal(err)
	}
	if doc.GetVersion() != "3.1.0" {
		t.Fatalf("OpenAPI version %s, want 3.1.0", doc.GetVersion())
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("invalid document: %s: %s", e.Message, e.Reason)
		}
	}

	documented := map[string]bool{}
	for p, item := range model.Model.Paths.PathItems.FromOldest() {
		for m := range item.GetOperations().FromOldest() {
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	registered := map[string]bool{}
	re := regexp.MustCompile(`HandleFunc\("(GET|POST|PUT|DELETE|PATCH) (/[^"]*)"`)
	files, _ := filepath.Glob(filepath.Join(repoRoot, "services", "*", "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, _ := os.ReadFile(f)
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			registered[m[1]+" "+m[2]] = true
		}
	}
	var missing, extra []string
	for r := range registered {
		if !documented[r] {
			missing = append(missing, r)
		}
	}
	for r := range documented {
		if !registered[r] {
			extra = append(extra, r)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 || len(registered) < 25 {
		t.Fatalf("routes served but not documented: %v; documented but not served: %v (%d registered)", missing, extra, len(registered))
	}

	// Served through the edge, byte for byte.
	s := startStack(t)
	resp, err := http.Get(s.EdgeURL("na") + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(served, kept) {
		t.Fatalf("GET /api/v1/openapi.json: %d, %d bytes; docs/openapi.json has %d", resp.StatusCode, len(served), len(kept))
	}
	// A documented request gets a documented answer (the validator checks
	// the response against the operation).
	req, _ := http.NewRequest("GET", s.EdgeURL("na")+"/api/v1/sync/health", nil)
	hresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer hresp.Body.Close()
	if ok, verrs := v.ValidateHttpResponse(req, hresp); !ok {
		for _, e := range verrs {
			t.Errorf("health answer against the document: %s: %s", e.Message, e.Reason)
		}
	}
}
