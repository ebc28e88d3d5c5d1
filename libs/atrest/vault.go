package atrest

import (
	"fmt"
	"sync/atomic"
)

// Vault is a keyring that can be replaced while in use: a rotated key file
// (a Kubernetes Secret updated in place) is picked up by Reload without a
// restart. A Vault without a source seals nothing.
type Vault struct {
	src  KeySource
	ring atomic.Pointer[Keyring]
}

// NewVault loads the keyring from src; nil src gives a vault that seals
// nothing (values pass through; the service warns).
func NewVault(src KeySource) (*Vault, error) {
	v := &Vault{src: src}
	if src == nil {
		return v, nil
	}
	return v, v.Reload()
}

// Reload reads the keys again. It keeps the old ring when the new one does
// not load, and refuses a ring that drops a key still in use is the caller's
// concern (References).
func (v *Vault) Reload() error {
	if v.src == nil {
		return nil
	}
	r, err := Load(v.src)
	if err != nil {
		return fmt.Errorf("at-rest keys: %w", err)
	}
	v.ring.Store(r)
	return nil
}

// Ring is the current keyring (nil when encryption is off).
func (v *Vault) Ring() *Keyring {
	if v == nil {
		return nil
	}
	return v.ring.Load()
}

// On reports whether values are sealed.
func (v *Vault) On() bool { return v.Ring() != nil }

// Seal seals plain with the active key, bound to aad.
func (v *Vault) Seal(plain, aad []byte) []byte { return v.Ring().Seal(plain, aad) }

// Open opens a value sealed by Seal (or returns an unsealed one as is).
func (v *Vault) Open(sealed, aad []byte) ([]byte, error) { return v.Ring().Open(sealed, aad) }

// AAD is the associated data of a value stored under key in bucket: a value
// copied to another place does not open there.
func AAD(bucket, key []byte) []byte {
	out := make([]byte, 0, len(bucket)+1+len(key))
	out = append(out, bucket...)
	out = append(out, 0)
	return append(out, key...)
}
