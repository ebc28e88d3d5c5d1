package authn

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

type keyFile struct {
	KeyID string `json:"kid"`
	Seed  []byte `json:"seed"`
}

// loadOrCreateKey returns the signing key kept in dir, creating it on first start,
// so tokens stay valid across restarts.
func loadOrCreateKey(dir string) (string, ed25519.PrivateKey, error) {
	path := filepath.Join(dir, "signing-key.json")
	raw, err := os.ReadFile(path)
	if err == nil {
		var kf keyFile
		if err := json.Unmarshal(raw, &kf); err != nil || len(kf.Seed) != ed25519.SeedSize || kf.KeyID == "" {
			return "", nil, fmt.Errorf("signing key %s is damaged; remove it to create a new one", path)
		}
		return kf.KeyID, ed25519.NewKeyFromSeed(kf.Seed), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", nil, fmt.Errorf("read signing key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", nil, err
	}
	kidBytes := make([]byte, 8)
	rand.Read(kidBytes)
	kf := keyFile{KeyID: hex.EncodeToString(kidBytes), Seed: priv.Seed()}
	raw, _ = json.Marshal(kf)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return "", nil, fmt.Errorf("write signing key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", nil, fmt.Errorf("install signing key: %w", err)
	}
	return kf.KeyID, priv, nil
}
