package authn

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"os"
	"regexp"

	"github.com/fedsync/fedsync/libs/access"
)

// ClientsFile is the shape of the client registry file (contract: make run).
type ClientsFile struct {
	Clients []ClientEntry `json:"clients"`
}

// ClientEntry is one registered client.
type ClientEntry struct {
	ClientID     string   `json:"client_id"`
	ClientSecret string   `json:"client_secret"`
	Role         string   `json:"role"`
	Level        string   `json:"level"`
	Region       string   `json:"region"`
	Domains      []string `json:"domains,omitempty"`
}

var levelPattern = regexp.MustCompile(`^L[1-4]$`)

type client struct {
	ClientEntry
	secretHash [32]byte
}

// registry holds the clients by id, with only a hash of each secret in memory.
type registry map[string]*client

func loadRegistry(path string) (registry, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read clients file: %w", err)
	}
	var f ClientsFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("decode clients file %s: %w", path, err)
	}
	reg := registry{}
	for i, c := range f.Clients {
		switch {
		case c.ClientID == "" || c.ClientSecret == "":
			return nil, fmt.Errorf("clients file %s: client %d needs client_id and client_secret", path, i)
		case access.RolePermissions[c.Role] == nil:
			return nil, fmt.Errorf("clients file %s: client %s has unknown role %q", path, c.ClientID, c.Role)
		case !levelPattern.MatchString(c.Level):
			return nil, fmt.Errorf("clients file %s: client %s has level %q, want L1..L4", path, c.ClientID, c.Level)
		case reg[c.ClientID] != nil:
			return nil, fmt.Errorf("clients file %s: client %s listed twice", path, c.ClientID)
		}
		reg[c.ClientID] = &client{ClientEntry: c, secretHash: sha256.Sum256([]byte(c.ClientSecret))}
		reg[c.ClientID].ClientSecret = ""
	}
	return reg, nil
}

// authenticate returns the client whose id and secret match, in time independent
// of where a wrong secret differs.
func (r registry) authenticate(id, secret string) (*client, bool) {
	c, ok := r[id]
	h := sha256.Sum256([]byte(secret))
	if !ok {
		return nil, false
	}
	return c, subtle.ConstantTimeCompare(h[:], c.secretHash[:]) == 1
}
