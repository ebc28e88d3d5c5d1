// Package webhooksig signs fedsync's webhook deliveries and verifies them, for
// the broadcaster that sends them and for receivers: the header is
// "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">" with the
// subscription's secret.
package webhooksig

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// Header is the HTTP header that carries the signature.
const Header = "Fedsync-Signature"

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Sign returns the Header value of body sent at t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

// Verify reports whether header signs body with secret, compared in constant
// time, and was made within maxAge of now (older ones are refused as
// replays; 0 accepts any age).
func Verify(secret, header string, body []byte, now time.Time, maxAge time.Duration) bool {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false
	}
	if maxAge > 0 && now.Sub(time.Unix(sec, 0)) > maxAge {
		return false
	}
	got, err := hex.DecodeString(sig)
	return err == nil && hmac.Equal(got, mac(secret, ts, body))
}
