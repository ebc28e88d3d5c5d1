package webhooksig

import (
	"testing"
	"time"
)

func TestSignAndVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"type":"change"}`)
	h := Sign("s3cret", now, body)
	if !Verify("s3cret", h, body, now.Add(time.Minute), 5*time.Minute) {
		t.Fatal("a fresh signature does not verify")
	}
	for name, ok := range map[string]bool{
		"wrong secret": Verify("other", h, body, now, 0),
		"changed body": Verify("s3cret", h, []byte(`{"type":"chance"}`), now, 0),
		"too old":      Verify("s3cret", h, body, now.Add(10*time.Minute), 5*time.Minute),
		"garbage":      Verify("s3cret", "t=x,v1=zz", body, now, 0),
	} {
		if ok {
			t.Errorf("%s verified", name)
		}
	}
}
