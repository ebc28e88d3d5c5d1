package fedsync

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Conflict is an entry of the review queue (L3+).
type Conflict struct {
	ID           string          `json:"id"`
	StateID      string          `json:"state_id"`
	DataType     string          `json:"data_type"`
	Field        string          `json:"field,omitempty"`
	Type         string          `json:"conflict_type"`
	Resolution   string          `json:"resolution_method"`
	Status       string          `json:"status"`
	Local        json.RawMessage `json:"local,omitempty"`
	Remote       json.RawMessage `json:"remote,omitempty"`
	Resolved     json.RawMessage `json:"resolved,omitempty"`
	LocalWriter  string          `json:"local_writer,omitempty"`
	RemoteWriter string          `json:"remote_writer,omitempty"`
	MessageID    string          `json:"message_id"`
	DetectedAt   string          `json:"detected_at"`
	ResolvedBy   string          `json:"resolved_by,omitempty"`
}

// Conflicts lists the review queue: status "pending" (default), "resolved"
// or "all", a page at a time.
func (c *Client) Conflicts(ctx context.Context, status string, limit int, pageToken string) ([]Conflict, string, error) {
	q := url.Values{}
	if status != "" {
		q.Set("status", status)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if pageToken != "" {
		q.Set("page_token", pageToken)
	}
	var out struct {
		Conflicts     []Conflict `json:"conflicts"`
		NextPageToken string     `json:"next_page_token"`
	}
	err := c.call(ctx, "GET", "/api/v1/sync/conflicts?"+q.Encode(), nil, &out)
	return out.Conflicts, out.NextPageToken, err
}

// ResolveConflict settles a conflict: choice "local", "remote", or "value"
// with value (any JSON value). It returns the conflict and the version the
// resolution committed.
func (c *Client) ResolveConflict(ctx context.Context, id, choice string, value any) (*Conflict, int64, error) {
	body := map[string]any{"choice": choice}
	if value != nil {
		body["value"] = value
	}
	var out struct {
		Conflict Conflict `json:"conflict"`
		Version  int64    `json:"version"`
	}
	if err := c.call(ctx, "POST", "/api/v1/sync/conflicts/"+url.PathEscape(id)+"/resolve", body, &out); err != nil {
		return nil, 0, err
	}
	return &out.Conflict, out.Version, nil
}

// ControlState is the federation's operating state (seed 9.2).
type ControlState struct {
	Paused    bool   `json:"paused"`
	By        string `json:"by"`
	Reason    string `json:"reason"`
	At        string `json:"at,omitempty"`
	Instances int    `json:"instances,omitempty"`
	// Unconfirmed lists validation instances that had not confirmed the
	// change when it was answered.
	Unconfirmed []string `json:"unconfirmed,omitempty"`
}

// Pause stops the federation's writes (L4); Resume starts them again.
func (c *Client) Pause(ctx context.Context, reason string) (*ControlState, error) {
	var out ControlState
	err := c.call(ctx, "POST", "/api/v1/control/pause", map[string]string{"reason": reason}, &out)
	return &out, err
}

// Resume starts writes again (L4).
func (c *Client) Resume(ctx context.Context, reason string) (*ControlState, error) {
	var out ControlState
	err := c.call(ctx, "POST", "/api/v1/control/resume", map[string]string{"reason": reason}, &out)
	return &out, err
}

// Control reads the operating state (L3+).
func (c *Client) Control(ctx context.Context) (*ControlState, error) {
	var out ControlState
	err := c.call(ctx, "GET", "/api/v1/control/state", nil, &out)
	return &out, err
}

// Component is the health of a service or region.
type Component struct {
	Status           string `json:"status"`
	Instances        int    `json:"instances"`
	HealthyInstances int    `json:"healthy_instances"`
}

// Health is GET /api/v1/sync/health.
type Health struct {
	Status   string               `json:"status"`
	Services map[string]Component `json:"services"`
	Regions  map[string]Component `json:"regions"`
	Agents   struct {
		Healthy   int `json:"healthy"`
		Unhealthy int `json:"unhealthy"`
	} `json:"agents"`
	Issues []struct {
		Kind    string `json:"kind"`
		Message string `json:"message"`
	} `json:"issues"`
}

// Health reads the federation's health (no token needed). An unhealthy
// federation (503) is returned with its body, not as an error.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.BaseURL()+"/api/v1/sync/health", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fedsync: GET /api/v1/sync/health: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("fedsync: read health: %w", err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return nil, decodeError(resp, b)
	}
	var out Health
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("fedsync: decode health: %w", err)
	}
	return &out, nil
}

// ClientInfo is a registered client (L4 administration).
type ClientInfo struct {
	ClientID   string    `json:"client_id"`
	Role       string    `json:"role"`
	Level      string    `json:"level"`
	Region     string    `json:"region"`
	Domains    []string  `json:"domains,omitempty"`
	Disabled   bool      `json:"disabled"`
	DisabledAt time.Time `json:"disabled_at,omitzero"`
	CreatedAt  time.Time `json:"created_at"`
	RotatedAt  time.Time `json:"secret_rotated_at,omitzero"`
}

// NewClient is what CreateClient registers.
type NewClient struct {
	ClientID string   `json:"client_id"`
	Role     string   `json:"role"`
	Level    string   `json:"level"`
	Region   string   `json:"region"`
	Domains  []string `json:"domains,omitempty"`
}

// ClientSecret is a client with a secret shown once.
type ClientSecret struct {
	Client       ClientInfo `json:"client"`
	ClientSecret string     `json:"client_secret"`
}

// Clients lists the registered clients.
func (c *Client) Clients(ctx context.Context) ([]ClientInfo, error) {
	var out struct {
		Clients []ClientInfo `json:"clients"`
	}
	err := c.call(ctx, "GET", "/api/v1/admin/clients", nil, &out)
	return out.Clients, err
}

// CreateClient registers a client and returns its secret (shown once).
func (c *Client) CreateClient(ctx context.Context, n NewClient) (*ClientSecret, error) {
	var out ClientSecret
	err := c.call(ctx, "POST", "/api/v1/admin/clients", n, &out)
	return &out, err
}

// SetClientDisabled disables (no new tokens; live ones refused within the
// revocation refresh) or enables a client.
func (c *Client) SetClientDisabled(ctx context.Context, id string, disabled bool) (*ClientInfo, error) {
	action := "enable"
	if disabled {
		action = "disable"
	}
	var out ClientInfo
	err := c.call(ctx, "POST", "/api/v1/admin/clients/"+url.PathEscape(id)+"/"+action, nil, &out)
	return &out, err
}

// RotateClientSecret gives a client a new secret (shown once).
func (c *Client) RotateClientSecret(ctx context.Context, id string) (*ClientSecret, error) {
	var out ClientSecret
	err := c.call(ctx, "POST", "/api/v1/admin/clients/"+url.PathEscape(id)+"/rotate-secret", nil, &out)
	return &out, err
}

// Key is a token-signing key.
type Key struct {
	ID        string    `json:"kid"`
	State     string    `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	RetiredAt time.Time `json:"retired_at,omitzero"`
}

// Keys lists the signing keys.
func (c *Client) Keys(ctx context.Context) ([]Key, error) {
	var out struct {
		Keys []Key `json:"keys"`
	}
	err := c.call(ctx, "GET", "/api/v1/admin/keys", nil, &out)
	return out.Keys, err
}

// RotateKeys makes the next key sign and retires the current one.
func (c *Client) RotateKeys(ctx context.Context) ([]Key, error) {
	var out struct {
		Keys []Key `json:"keys"`
	}
	err := c.call(ctx, "POST", "/api/v1/admin/keys/rotate", nil, &out)
	return out.Keys, err
}

// Backup is a cold backup of the statestore (tier 3).
type Backup struct {
	ID              string    `json:"id"`
	Service         string    `json:"service"`
	CreatedAt       time.Time `json:"created_at"`
	RaftIndex       uint64    `json:"raft_index"`
	Size            int64     `json:"size"`
	SHA256          string    `json:"sha256"`
	PlainSize       int64     `json:"plain_size"`
	KeyID           string    `json:"key_id,omitempty"`
	Documents       int64     `json:"documents"`
	DocumentsDigest string    `json:"documents_digest"`
	Where           string    `json:"where"`
}

// CreateBackup exports the statestore's state to its backup store now.
func (c *Client) CreateBackup(ctx context.Context) (*Backup, error) {
	var out Backup
	err := c.call(ctx, "POST", "/api/v1/admin/backups", nil, &out)
	return &out, err
}

// Backups lists the backups, newest first.
func (c *Client) Backups(ctx context.Context) ([]Backup, error) {
	var out struct {
		Backups []Backup `json:"backups"`
	}
	err := c.call(ctx, "GET", "/api/v1/admin/backups", nil, &out)
	return out.Backups, err
}

// VerifyBackup reads a backup whole (its digest, every sealed chunk, the
// documents it holds) and checks it against its manifest.
func (c *Client) VerifyBackup(ctx context.Context, id string) (*Backup, error) {
	var out Backup
	err := c.call(ctx, "POST", "/api/v1/admin/backups/"+url.PathEscape(id)+"/verify", nil, &out)
	return &out, err
}

// RestoreBackup verifies a backup and makes it the statestore's state:
// every change committed after it is gone. Pause writes first.
func (c *Client) RestoreBackup(ctx context.Context, id string) (*Backup, error) {
	var out Backup
	err := c.call(ctx, "POST", "/api/v1/admin/backups/"+url.PathEscape(id)+"/restore", nil, &out)
	return &out, err
}
