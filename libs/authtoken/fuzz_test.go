package authtoken

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/fedsync/fedsync/libs/apierr"
)

// FuzzVerify feeds arbitrary strings to the verifier: it must never panic and
// must refuse everything that is not a token it signed, with unauthenticated.
func FuzzVerify(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	good, _ := (&Signer{KeyID: "k1", Key: priv}).Sign(claims("ai-001", time.Hour))
	f.Add(good)
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add(good[:len(good)-3])
	v := NewVerifier(func(context.Context) ([]byte, error) { return JWKS(map[string]ed25519.PublicKey{"k1": pub}), nil }, "fedsync-authn", "fedsync")
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(context.Background(), token)
		if err == nil {
			if token != good || c.Subject != "ai-001" {
				t.Fatalf("accepted a token it did not sign: %q", token)
			}
			return
		}
		if code := apierr.As(err).Code; code != apierr.Unauthenticated {
			t.Fatalf("refusal with code %s", code)
		}
	})
}
