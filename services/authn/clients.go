package authn

import (
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

// readClientsFile reads and checks a bootstrap clients file.
func readClientsFile(path string) ([]ClientEntry, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read clients file: %w", err)
	}
	var f ClientsFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("decode clients file %s: %w", path, err)
	}
	seen := map[string]bool{}
	for i, c := range f.Clients {
		switch {
		case c.ClientID == "" || c.ClientSecret == "":
			return nil, fmt.Errorf("clients file %s: client %d needs client_id and client_secret", path, i)
		case access.RolePermissions[c.Role] == nil:
			return nil, fmt.Errorf("clients file %s: client %s has unknown role %q", path, c.ClientID, c.Role)
		case !levelPattern.MatchString(c.Level):
			return nil, fmt.Errorf("clients file %s: client %s has level %q, want L1..L4", path, c.ClientID, c.Level)
		case seen[c.ClientID]:
			return nil, fmt.Errorf("clients file %s: client %s listed twice", path, c.ClientID)
		}
		seen[c.ClientID] = true
	}
	return f.Clients, nil
}
