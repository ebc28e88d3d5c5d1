package httpjson

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fedsync/fedsync/libs/apierr"
)

type req struct {
	ID       string `json:"id"`
	Priority *int   `json:"priority"`
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		max      int64
		wantCode apierr.Code
		wantText string
	}{
		{"ok", `{"id":"a","priority":3}`, 100, "", ""},
		{"malformed", `{"id":`, 100, apierr.InvalidArgument, "truncated"},
		{"wrong type names field", `{"id":"a","priority":"high"}`, 100, apierr.InvalidArgument, "priority"},
		{"unknown field", `{"id":"a","colour":1}`, 100, apierr.InvalidArgument, "colour"},
		{"not an object", `[1]`, 100, apierr.InvalidArgument, "object"},
		{"empty", ``, 100, apierr.InvalidArgument, "empty"},
		{"too large", `{"id":"` + strings.Repeat("a", 200) + `"}`, 100, apierr.TooLarge, "limit"},
		{"trailing data", `{"id":"a"} {}`, 100, apierr.InvalidArgument, "after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(tt.body))
			var dst req
			err := Decode(httptest.NewRecorder(), r, tt.max, &dst)
			if tt.wantCode == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			e := apierr.As(err)
			if e.Code != tt.wantCode || !strings.Contains(e.Message, tt.wantText) {
				t.Fatalf("got %s %q, want %s containing %q", e.Code, e.Message, tt.wantCode, tt.wantText)
			}
		})
	}
}

// TestUnmarshalRefusesInvalidUTF8AndCaseFoldedNames: hostile-input findings F3
// and "Id overrides id".
func TestUnmarshalRefusesInvalidUTF8AndCaseFoldedNames(t *testing.T) {
	type body struct {
		ID   string `json:"id"`
		Note string `json:"note"`
	}
	var b body
	err := Unmarshal([]byte("{\"id\":\"a\",\"note\":\"\xff\"}"), &b)
	if e := apierr.As(err); err == nil || e.Code != apierr.InvalidArgument || !strings.Contains(e.Message, "UTF-8") {
		t.Fatalf("invalid UTF-8: %v", err)
	}
	err = Unmarshal([]byte(`{"id":"a","Id":"b"}`), &b)
	if e := apierr.As(err); err == nil || e.Code != apierr.InvalidArgument || e.Details["field"] != "Id" {
		t.Fatalf("Id beside id: %v", err)
	}
	if err := Unmarshal([]byte(`{"id":"a","note":"é ✓ \u00ff"}`), &b); err != nil || b.Note != "é ✓ ÿ" {
		t.Fatalf("valid body: %v %q", err, b.Note)
	}
}

func TestContentTypeMustBeJSON(t *testing.T) {
	for ct, want := range map[string]int{
		"":                                  0,
		"application/json":                  0,
		"application/json; charset=utf-8":   0,
		"application/json; charset=UTF-8":   0,
		"application/merge-patch+json":      0,
		"text/plain":                        415,
		"application/x-www-form-urlencoded": 415,
		"application/json; charset=latin1":  415,
		"multipart/form-data; boundary=x":   415,
		"application/json;;;=":              415,
	} {
		r := httptest.NewRequest("POST", "/", strings.NewReader(`{"a":1}`))
		if ct != "" {
			r.Header.Set("Content-Type", ct)
		}
		var dst struct {
			A int `json:"a"`
		}
		err := Decode(nil, r, 1<<10, &dst)
		got := 0
		if err != nil {
			e := apierr.As(err)
			got = e.HTTPStatus
			if e.Code != apierr.InvalidArgument || e.Details["reason"] != "unsupported_media_type" {
				t.Errorf("%q: %v", ct, err)
			}
		}
		if got != want {
			t.Errorf("Content-Type %q: status %d, want %d (%v)", ct, got, want, err)
		}
	}
}
