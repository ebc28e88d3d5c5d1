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
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"

	"github.com/fedsync/fedsync/libs/apierr"
)

var (
	bucketClients = []byte("clients")
	bucketKeys    = []byte("keys")
	bucketRevoked = []byte("revoked")
)

// Client is a registered client. Its secret is kept only as a bcrypt hash.
type Client struct {
	ClientID   string    `json:"client_id"`
	SecretHash []byte    `json:"secret_hash,omitempty"`
	Role       string    `json:"role"`
	Level      string    `json:"level"`
	Region     string    `json:"region"`
	Domains    []string  `json:"domains,omitempty"`
	Disabled   bool      `json:"disabled"`
	DisabledAt time.Time `json:"disabled_at,omitzero"`
	CreatedAt  time.Time `json:"created_at"`
	RotatedAt  time.Time `json:"secret_rotated_at,omitzero"`
}

// Key states: a next key is published before it signs; the current key signs; a
// retired key stays published until every token it signed has expired.
const (
	KeyNext    = "next"
	KeyCurrent = "current"
	KeyRetired = "retired"
)

// Key is a signing key.
type Key struct {
	ID        string    `json:"kid"`
	Seed      []byte    `json:"seed"`
	State     string    `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	// RetiredAt is when it stopped signing.
	RetiredAt time.Time `json:"retired_at,omitzero"`
}

// store is authn's durable state in one bbolt file: clients, keys, revocations.
type store struct {
	db   *bolt.DB
	cost int
	now  func() time.Time
	// dummy is compared against for unknown client ids.
	dummy []byte
}

func openStore(dir string, bcryptCost int) (*store, error) {
	path := filepath.Join(dir, "authn.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketClients, bucketKeys, bucketRevoked} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	// dummy makes an unknown client cost as much time as a wrong secret: a
	// hash of the registry's own cost (a cheaper one let ids be enumerated by
	// timing, 4.5 ms against 81 ms).
	dummy, err := bcrypt.GenerateFromPassword([]byte("fedsync-dummy-secret"), bcryptCost)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &store{db: db, cost: bcryptCost, now: time.Now, dummy: dummy}, nil
}

func (s *store) close() error { return s.db.Close() }

func getJSON[T any](b *bolt.Bucket, key string) (*T, error) {
	raw := b.Get([]byte(key))
	if raw == nil {
		return nil, nil
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", key, err)
	}
	return &v, nil
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), raw)
}

// importClients adds the clients of a bootstrap file that the registry does not
// have yet; existing clients are left as the registry has them.
func (s *store) importClients(entries []ClientEntry) (int, error) {
	added := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketClients)
		for _, e := range entries {
			if b.Get([]byte(e.ClientID)) != nil {
				continue
			}
			hash, err := bcrypt.GenerateFromPassword([]byte(e.ClientSecret), s.cost)
			if err != nil {
				return fmt.Errorf("hash secret of %s: %w", e.ClientID, err)
			}
			c := Client{ClientID: e.ClientID, SecretHash: hash, Role: e.Role, Level: e.Level, Region: e.Region, Domains: e.Domains, CreatedAt: s.now().UTC()}
			if err := putJSON(b, e.ClientID, c); err != nil {
				return err
			}
			added++
		}
		return nil
	})
	return added, err
}

// authenticate returns the client whose id and secret match; it reports why not
// for the audit log, never to the caller.
func (s *store) authenticate(id, secret string) (*Client, string) {
	var c *Client
	_ = s.db.View(func(tx *bolt.Tx) error {
		c, _ = getJSON[Client](tx.Bucket(bucketClients), id)
		return nil
	})
	if c == nil {
		// An unknown id costs what a wrong secret does: the same bcrypt work.
		bcrypt.CompareHashAndPassword(s.dummy, []byte(secret))
		return nil, "unknown client"
	}
	if bcrypt.CompareHashAndPassword(c.SecretHash, []byte(secret)) != nil {
		return nil, "wrong secret"
	}
	if c.Disabled {
		return nil, "client disabled"
	}
	return c, ""
}

func (s *store) clients() ([]Client, error) {
	var out []Client
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketClients).ForEach(func(k, v []byte) error {
			var c Client
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			c.SecretHash = nil
			out = append(out, c)
			return nil
		})
	})
	return out, err
}

func newSecret() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// createClient registers a client and returns its secret, shown only now.
func (s *store) createClient(c Client) (string, error) {
	secret := newSecret()
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), s.cost)
	if err != nil {
		return "", err
	}
	c.SecretHash, c.CreatedAt = hash, s.now().UTC()
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketClients)
		if b.Get([]byte(c.ClientID)) != nil {
			return apierr.New(apierr.VersionConflict, "Client %s already exists.", c.ClientID)
		}
		return putJSON(b, c.ClientID, c)
	})
	return secret, err
}

// updateClient changes a client in one transaction.
func (s *store) updateClient(id string, fn func(c *Client) error) (*Client, error) {
	var out *Client
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketClients)
		c, err := getJSON[Client](b, id)
		if err != nil {
			return err
		}
		if c == nil {
			return apierr.New(apierr.NotFound, "Client %s does not exist.", id)
		}
		if err := fn(c); err != nil {
			return err
		}
		out = c
		return putJSON(b, id, c)
	})
	if out != nil {
		out.SecretHash = nil
	}
	return out, err
}

func (s *store) setDisabled(id string, disabled bool) (*Client, error) {
	return s.updateClient(id, func(c *Client) error {
		c.Disabled = disabled
		if disabled {
			c.DisabledAt = s.now().UTC()
		}
		return nil
	})
}

func (s *store) rotateSecret(id string) (string, *Client, error) {
	secret := newSecret()
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), s.cost)
	if err != nil {
		return "", nil, err
	}
	c, err := s.updateClient(id, func(c *Client) error {
		c.SecretHash, c.RotatedAt = hash, s.now().UTC()
		return nil
	})
	return secret, c, err
}

// revoke records a revoked token id until it expires.
func (s *store) revoke(jti string, exp time.Time) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bucketRevoked), jti, exp.Unix())
	})
}

// revocations returns disabled clients and unexpired revoked tokens, dropping
// expired revocations.
func (s *store) revocations() (map[string]int64, map[string]int64, error) {
	disabled, revoked := map[string]int64{}, map[string]int64{}
	now := s.now().Unix()
	err := s.db.Update(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketClients).ForEach(func(k, v []byte) error {
			var c Client
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			if c.Disabled {
				disabled[c.ClientID] = c.DisabledAt.Unix()
			}
			return nil
		})
		if err != nil {
			return err
		}
		cur := tx.Bucket(bucketRevoked).Cursor()
		for k, v := cur.First(); k != nil; k, v = cur.Next() {
			var exp int64
			json.Unmarshal(v, &exp)
			if exp < now {
				cur.Delete()
				continue
			}
			revoked[string(k)] = exp
		}
		return nil
	})
	return disabled, revoked, err
}

// keys returns every key, oldest first.
func (s *store) keys() ([]Key, error) {
	var out []Key
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeys).ForEach(func(k, v []byte) error {
			var key Key
			if err := json.Unmarshal(v, &key); err != nil {
				return err
			}
			out = append(out, key)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, err
}

func newKey(state string, now time.Time) Key {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	id := make([]byte, 8)
	rand.Read(id)
	return Key{ID: hex.EncodeToString(id), Seed: priv.Seed(), State: state, CreatedAt: now.UTC()}
}

// ensureKeys makes sure there is a current and a next key. A legacy
// signing-key.json (or one mounted from a Kubernetes Secret) in dir becomes the
// current key when the store has none.
func (s *store) ensureKeys(dir string) error {
	keys, err := s.keys()
	if err != nil {
		return err
	}
	var haveCurrent, haveNext bool
	for _, k := range keys {
		haveCurrent = haveCurrent || k.State == KeyCurrent
		haveNext = haveNext || k.State == KeyNext
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeys)
		if !haveCurrent {
			k := newKey(KeyCurrent, s.now())
			if imported, err := readKeyFile(filepath.Join(dir, "signing-key.json")); err != nil {
				return err
			} else if imported != nil {
				k.ID, k.Seed = imported.ID, imported.Seed
			}
			if err := putJSON(b, k.ID, k); err != nil {
				return err
			}
		}
		if !haveNext {
			k := newKey(KeyNext, s.now())
			return putJSON(b, k.ID, k)
		}
		return nil
	})
}

func readKeyFile(path string) (*Key, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	var k Key
	if err := json.Unmarshal(raw, &k); err != nil || len(k.Seed) != ed25519.SeedSize || k.ID == "" {
		return nil, fmt.Errorf("signing key %s is damaged: want {\"kid\":..,\"seed\":<32 bytes base64>}", path)
	}
	return &k, nil
}

// rotateKeys makes the next key current, retires the current one and creates a
// new next key, in one transaction.
func (s *store) rotateKeys() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeys)
		now := s.now().UTC()
		var next *Key
		err := b.ForEach(func(k, v []byte) error {
			var key Key
			if err := json.Unmarshal(v, &key); err != nil {
				return err
			}
			switch key.State {
			case KeyCurrent:
				key.State, key.RetiredAt = KeyRetired, now
				return putJSON(b, key.ID, key)
			case KeyNext:
				next = &key
			}
			return nil
		})
		if err != nil {
			return err
		}
		if next == nil {
			return errors.New("no next key to rotate to")
		}
		next.State = KeyCurrent
		if err := putJSON(b, next.ID, next); err != nil {
			return err
		}
		nk := newKey(KeyNext, now)
		return putJSON(b, nk.ID, nk)
	})
}

// dropExpiredKeys deletes retired keys whose every token has expired.
func (s *store) dropExpiredKeys(tokenTTL time.Duration) error {
	cutoff := s.now().Add(-tokenTTL - time.Minute)
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeys)
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var key Key
			if err := json.Unmarshal(v, &key); err != nil {
				return err
			}
			if key.State == KeyRetired && key.RetiredAt.Before(cutoff) {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
