// Package atrest encrypts what fedsync keeps on disk (seed 6.1): AES-256-GCM
// under a keyring of named keys. New data is sealed with the active key;
// data sealed with an older key stays readable while that key is in the
// ring, and is re-sealed with the active key in the background, so a key can
// be retired once nothing references it. Keys come from a KeySource: a file
// or an environment variable (a Kubernetes Secret) here, a KMS elsewhere.
package atrest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
)

// KeySource supplies the keyring's keys: a KMS implements it by unwrapping
// data keys it holds.
type KeySource interface {
	// Keys returns every key by id (32 bytes each) and the id of the one new
	// data is sealed with.
	Keys() (active string, keys map[string][]byte, err error)
}

// KeyFile is the JSON form of a keyring, in a file or an environment
// variable: {"active":"k2","keys":{"k1":"<base64 of 32 bytes>","k2":"..."}}.
type KeyFile struct {
	Active string            `json:"active"`
	Keys   map[string]string `json:"keys"`
}

// StaticSource is a keyring given as KeyFile JSON.
type StaticSource []byte

// FileSource reads the keyring from a KeyFile JSON file.
type FileSource string

// Keys implements KeySource.
func (s StaticSource) Keys() (string, map[string][]byte, error) { return parseKeyFile(s) }

// Keys implements KeySource.
func (f FileSource) Keys() (string, map[string][]byte, error) {
	raw, err := os.ReadFile(string(f))
	if err != nil {
		return "", nil, fmt.Errorf("read at-rest keys: %w", err)
	}
	return parseKeyFile(raw)
}

var keyID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func parseKeyFile(raw []byte) (string, map[string][]byte, error) {
	var f KeyFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return "", nil, fmt.Errorf(`at-rest keys: want {"active":"ID","keys":{"ID":"<base64 of 32 bytes>"}}: %w`, err)
	}
	keys := map[string][]byte{}
	for id, b64 := range f.Keys {
		k, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(k) != 32 {
			return "", nil, fmt.Errorf("at-rest key %q: want the base64 of 32 random bytes (AES-256)", id)
		}
		if !keyID.MatchString(id) {
			return "", nil, fmt.Errorf("at-rest key id %q: 1-64 of A-Z a-z 0-9 . _ -", id)
		}
		keys[id] = k
	}
	if _, ok := keys[f.Active]; !ok {
		return "", nil, fmt.Errorf("at-rest keys: the active key %q is not among the keys", f.Active)
	}
	return f.Active, keys, nil
}

// NewKeyFile returns a keyring of one new random key named id.
func NewKeyFile(id string) KeyFile {
	k := make([]byte, 32)
	rand.Read(k)
	return KeyFile{Active: id, Keys: map[string]string{id: base64.StdEncoding.EncodeToString(k)}}
}

// magic starts every sealed value. 'F' (0x46) cannot start a protobuf
// message (wire type 6 does not exist) nor JSON, so a value without it is
// one written before encryption was turned on.
var magic = []byte("FSE1")

// Keyring seals and opens values. The zero of *Keyring (nil) seals nothing:
// values pass through as they are.
type Keyring struct {
	active string
	aeads  map[string]cipher.AEAD
}

// Load builds a keyring from src.
func Load(src KeySource) (*Keyring, error) {
	active, keys, err := src.Keys()
	if err != nil {
		return nil, err
	}
	r := &Keyring{active: active, aeads: map[string]cipher.AEAD{}}
	for id, k := range keys {
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		if r.aeads[id], err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Active is the id of the key new values are sealed with ("" without a
// keyring).
func (r *Keyring) Active() string {
	if r == nil {
		return ""
	}
	return r.active
}

// IDs returns the ids of the keys in the ring, sorted.
func (r *Keyring) IDs() []string {
	if r == nil {
		return nil
	}
	var ids []string
	for id := range r.aeads {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Seal encrypts plain with the active key, bound to aad (where the value
// lives: a value moved elsewhere does not open). Without a keyring it
// returns plain.
func (r *Keyring) Seal(plain, aad []byte) []byte {
	if r == nil {
		return plain
	}
	aead := r.aeads[r.active]
	out := make([]byte, 0, len(magic)+1+len(r.active)+aead.NonceSize()+len(plain)+aead.Overhead())
	out = append(out, magic...)
	out = append(out, byte(len(r.active)))
	out = append(out, r.active...)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plain, aad)
}

// ErrNoKey is returned for a value sealed with a key the ring does not hold.
var ErrNoKey = errors.New("sealed with a key not in the at-rest keyring")

// Open decrypts a sealed value. A value that is not sealed (written before
// encryption was on) is returned as it is.
func (r *Keyring) Open(v, aad []byte) ([]byte, error) {
	id, body, sealed := split(v)
	if !sealed {
		return v, nil
	}
	if r == nil {
		return nil, fmt.Errorf("value sealed with at-rest key %q, and no keyring is configured", id)
	}
	aead, ok := r.aeads[id]
	if !ok {
		return nil, fmt.Errorf("key %q: %w", id, ErrNoKey)
	}
	if len(body) < aead.NonceSize() {
		return nil, errors.New("sealed value too short")
	}
	plain, err := aead.Open(nil, body[:aead.NonceSize()], body[aead.NonceSize():], aad)
	if err != nil {
		return nil, fmt.Errorf("open value sealed with key %q: %w", id, err)
	}
	return plain, nil
}

// KeyOf returns the id of the key v is sealed with, "" when it is not
// sealed.
func KeyOf(v []byte) string {
	id, _, _ := split(v)
	return id
}

// Stale reports whether v should be re-sealed: not sealed under the active
// key (sealed with an older one, or not sealed while a keyring is on).
func (r *Keyring) Stale(v []byte) bool {
	return r != nil && KeyOf(v) != r.active
}

func split(v []byte) (id string, body []byte, sealed bool) {
	if !bytes.HasPrefix(v, magic) || len(v) < len(magic)+1 {
		return "", v, false
	}
	n := int(v[len(magic)])
	if len(v) < len(magic)+1+n {
		return "", v, false
	}
	return string(v[len(magic)+1 : len(magic)+1+n]), v[len(magic)+1+n:], true
}
