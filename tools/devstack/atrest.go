package devstack

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fedsync/fedsync/libs/atrest"
)

// atRestKeys returns the at-rest keyring of a replicated service's group
// (statestore, authn), created with one random key on first use: every
// replica of the group shares it, as a Kubernetes Secret would give them.
func atRestKeys(stateDir, service string) (string, error) {
	path := filepath.Join(stateDir, "keys", "at-rest-"+service+".json")
	if _, err := os.Stat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return path, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	raw, _ := json.MarshalIndent(atrest.NewKeyFile("dev-1"), "", "  ")
	return path, os.WriteFile(path, append(raw, '\n'), 0o600)
}
