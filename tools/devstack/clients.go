package devstack

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Client is one entry of .fedsync/dev/clients.json (contract: make run).
type Client struct {
	ClientID     string   `json:"client_id"`
	ClientSecret string   `json:"client_secret"`
	Role         string   `json:"role"`
	Level        string   `json:"level"`
	Region       string   `json:"region"`
	Domains      []string `json:"domains,omitempty"`
}

type clientsFile struct {
	Clients []Client `json:"clients"`
}

// AgentID is the client id of simulated agent n (1-based): ai-001 ... ai-053.
func AgentID(n int) string { return fmt.Sprintf("ai-%03d", n) }

// SharedDomain is the id prefix every dev agent may write besides its own: the
// dev federation's shared workspace.
const SharedDomain = "shared-"

// DevAgents is how many agent clients the dev federation has.
const DevAgents = 53

func secret() string {
	b := make([]byte, 18)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// devClients returns the dev federation's clients: ai-001..ai-053 (L2), observer
// (L1), coordinator (L3) and admin (L4). Agents are split between the regions.
func devClients(regions []string) []Client {
	var cs []Client
	for i := 1; i <= DevAgents; i++ {
		region := regions[(i-1)*len(regions)/DevAgents]
		cs = append(cs, Client{ClientID: AgentID(i), ClientSecret: secret(), Role: "ai_system_basic", Level: "L2", Region: region, Domains: []string{SharedDomain}})
	}
	return append(cs,
		Client{ClientID: "observer", ClientSecret: secret(), Role: "observer", Level: "L1", Region: regions[0]},
		Client{ClientID: "coordinator", ClientSecret: secret(), Role: "regional_coordinator", Level: "L3", Region: regions[0], Domains: []string{SharedDomain}},
		Client{ClientID: "admin", ClientSecret: secret(), Role: "federation_admin", Level: "L4", Region: regions[0]},
	)
}

// ensureClients returns the clients in path, writing a new dev federation there
// first when the file does not exist. Secrets stay the same across runs.
func ensureClients(path string, regions []string) ([]Client, error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		var f clientsFile
		if err := json.Unmarshal(raw, &f); err != nil {
			return nil, fmt.Errorf("decode %s (delete it to create a new one): %w", path, err)
		}
		return f.Clients, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	// New secrets: a registry imported from an older file would not know
	// them. The registry is replicated: every authn replica's store and Raft
	// log go (a signing-key.json beside them stays).
	old, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "data", "authn*"))
	for _, dir := range old {
		os.Remove(filepath.Join(dir, "authn.db"))
		os.RemoveAll(filepath.Join(dir, "raft"))
	}
	f := clientsFile{Clients: devClients(regions)}
	raw, _ = json.MarshalIndent(f, "", "  ")
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, append(raw, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return f.Clients, nil
}
