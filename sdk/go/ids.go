package fedsync

import (
	"crypto/rand"
	"encoding/hex"
)

// newID is a random message id (128 bits).
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return "sdk-" + hex.EncodeToString(b[:])
}
