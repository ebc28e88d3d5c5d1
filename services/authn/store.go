package authn

import (
	"context"
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

	"github.com/fedsync/fedsync/libs/atrest"
	"github.com/fedsync/fedsync/libs/raftgroup"
)

var (
	bucketClients = []byte("clients")
	bucketKeys    = []byte("keys")
	bucketRevoked = []byte("revoked")
	bucketMeta    = []byte("meta")
	allBuckets    = [][]byte{bucketClients, bucketKeys, bucketRevoked, bucketMeta}
	// sealedBuckets hold secrets (hashes, key seeds) and revocations: their
	// values are sealed at rest.
	sealedBuckets = [][]byte{bucketClients, bucketKeys, bucketRevoked}
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

// store is authn's state in one bbolt file: clients, keys, revocations. It is
// replicated: every change is a command (fsm.go) that the authn Raft group
// commits and each replica applies; reads are served from this replica's own
// copy. Whatever is not deterministic (secret hashes, new keys, the time) is
// fixed before the command is proposed.
type store struct {
	db   *bolt.DB
	fsm  *raftgroup.BoltFSM
	cost int
	now  func() time.Time
	// submit commits a command through the group from any replica (the
	// local state machine when the store is not replicated).
	submit func(ctx context.Context, cmd []byte) ([]byte, error)
	// catchUp, when set, makes this replica hold every change the group
	// acknowledged before the call (a follower may be a round behind).
	catchUp func(ctx context.Context) error
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
		for _, b := range allBuckets {
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
	s := &store{db: db, cost: bcryptCost, now: time.Now, dummy: dummy}
	s.fsm = &raftgroup.BoltFSM{DB: db, Buckets: allBuckets, Meta: bucketMeta, Command: applyCommand}
	s.submit = func(_ context.Context, cmd []byte) ([]byte, error) {
		res, err := s.fsm.ApplyLocal(cmd)
		b, _ := res.([]byte)
		return b, err
	}
	return s, nil
}

func (s *store) close() error { return s.db.Close() }

// getJSON decodes the value under key in bucket name (nil when absent). The
// registry's values are sealed at rest (libs/atrest): secret hashes and key
// seeds never reach the disk in the clear.
func getJSON[T any](tx *bolt.Tx, name []byte, key string) (*T, error) {
	raw, err := atrest.Get(tx, name, []byte(key))
	if err != nil || raw == nil {
		return nil, err
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", key, err)
	}
	return &v, nil
}

func putJSON(tx *bolt.Tx, name []byte, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return atrest.Put(tx, name, []byte(key), raw)
}

// eachJSON decodes every value of bucket name in key order.
func eachJSON[T any](tx *bolt.Tx, name []byte, fn func(key string, v *T) error) error {
	return tx.Bucket(name).ForEach(func(k, raw []byte) error {
		plain, err := atrest.OpenValue(tx, name, k, raw)
		if err != nil {
			return err
		}
		var v T
		if err := json.Unmarshal(plain, &v); err != nil {
			return fmt.Errorf("decode %s: %w", k, err)
		}
		return fn(string(k), &v)
	})
}

// propose commits c through the group and decodes its result into out
// (when not nil).
func (s *store) propose(ctx context.Context, c command, out any) error {
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	res, err := s.submit(ctx, raw)
	if err != nil || out == nil || len(res) == 0 {
		return err
	}
	return json.Unmarshal(res, out)
}

// has reports whether the registry holds client id.
func (s *store) has(id string) bool {
	found := false
	_ = s.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketClients).Get([]byte(id)) != nil
		return nil
	})
	return found
}

// hasAll reports whether the registry holds every client of entries.
func (s *store) hasAll(entries []ClientEntry) bool {
	for _, e := range entries {
		if !s.has(e.ClientID) {
			return false
		}
	}
	return true
}

// importClients adds the clients of a bootstrap file that the registry does not
// have yet; existing clients are left as the registry has them.
func (s *store) importClients(ctx context.Context, entries []ClientEntry) (int, error) {
	var add []Client
	for _, e := range entries {
		if s.has(e.ClientID) {
			continue
		}
		hash, err := bcrypt.GenerateFromPassword([]byte(e.ClientSecret), s.cost)
		if err != nil {
			return 0, fmt.Errorf("hash secret of %s: %w", e.ClientID, err)
		}
		add = append(add, Client{ClientID: e.ClientID, SecretHash: hash, Role: e.Role, Level: e.Level, Region: e.Region, Domains: e.Domains, CreatedAt: s.now().UTC()})
	}
	if len(add) == 0 {
		return 0, nil
	}
	var added int
	err := s.propose(ctx, command{Op: opImport, Clients: add}, &added)
	return added, err
}

// authenticate returns the client whose id and secret match; it reports why not
// for the audit log, never to the caller. The replica first catches up with the
// group (a read-index round trip to the leader), so a client disabled, or a
// secret rotated, through another replica a moment ago is refused here too: a
// login is a linearizable read. A replica that cannot reach a majority cannot
// know that, and refuses with the error of the catch-up (unavailable) instead
// of answering from state that may be stale; tokens already issued stay valid.
func (s *store) authenticate(ctx context.Context, id, secret string) (*Client, string, error) {
	if err := s.sync(ctx); err != nil {
		return nil, "", err
	}
	c := s.client(id)
	if c == nil {
		// An unknown id costs what a wrong secret does: the same bcrypt work.
		bcrypt.CompareHashAndPassword(s.dummy, []byte(secret))
		return nil, "unknown client", nil
	}
	if bcrypt.CompareHashAndPassword(c.SecretHash, []byte(secret)) != nil {
		return nil, "wrong secret", nil
	}
	if c.Disabled {
		return nil, "client disabled", nil
	}
	return c, "", nil
}

// client returns this replica's copy of client id, or nil.
func (s *store) client(id string) *Client {
	var c *Client
	_ = s.db.View(func(tx *bolt.Tx) error {
		c, _ = getJSON[Client](tx, bucketClients, id)
		return nil
	})
	return c
}

func (s *store) clients() ([]Client, error) {
	var out []Client
	err := s.db.View(func(tx *bolt.Tx) error {
		return eachJSON(tx, bucketClients, func(_ string, c *Client) error {
			c.SecretHash = nil
			out = append(out, *c)
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

// createClient registers a client and returns its secret, shown only now,
// and the client as registered.
func (s *store) createClient(ctx context.Context, c Client) (string, *Client, error) {
	secret := newSecret()
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), s.cost)
	if err != nil {
		return "", nil, err
	}
	c.SecretHash, c.CreatedAt = hash, s.now().UTC()
	if err := s.propose(ctx, command{Op: opCreate, Client: &c}, nil); err != nil {
		return "", nil, err
	}
	c.SecretHash = nil
	return secret, &c, nil
}

// sync catches this replica up with the group before an administration read.
func (s *store) sync(ctx context.Context) error {
	if s.catchUp == nil {
		return nil
	}
	return s.catchUp(ctx)
}

func (s *store) setDisabled(ctx context.Context, id string, disabled bool) (*Client, error) {
	var out Client
	if err := s.propose(ctx, command{Op: opDisable, ID: id, Disabled: disabled, At: s.now().UTC()}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (s *store) rotateSecret(ctx context.Context, id string) (string, *Client, error) {
	secret := newSecret()
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), s.cost)
	if err != nil {
		return "", nil, err
	}
	var out Client
	if err := s.propose(ctx, command{Op: opSecret, ID: id, Hash: hash, At: s.now().UTC()}, &out); err != nil {
		return "", nil, err
	}
	return secret, &out, nil
}

// revoke records a revoked token id until it expires.
func (s *store) revoke(ctx context.Context, jti string, exp time.Time) error {
	return s.propose(ctx, command{Op: opRevoke, ID: jti, At: exp.UTC()}, nil)
}

// revocations returns disabled clients and unexpired revoked tokens (the
// leader drops expired ones: prune).
func (s *store) revocations() (map[string]int64, map[string]int64, error) {
	disabled, revoked := map[string]int64{}, map[string]int64{}
	now := s.now().Unix()
	err := s.db.View(func(tx *bolt.Tx) error {
		err := eachJSON(tx, bucketClients, func(_ string, c *Client) error {
			if c.Disabled {
				disabled[c.ClientID] = c.DisabledAt.Unix()
			}
			return nil
		})
		if err != nil {
			return err
		}
		return eachJSON(tx, bucketRevoked, func(jti string, exp *int64) error {
			if *exp >= now {
				revoked[jti] = *exp
			}
			return nil
		})
	})
	return disabled, revoked, err
}

// keys returns every key, oldest first.
func (s *store) keys() ([]Key, error) {
	var out []Key
	err := s.db.View(func(tx *bolt.Tx) error {
		return eachJSON(tx, bucketKeys, func(_ string, k *Key) error {
			out = append(out, *k)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, err
}

// hasCurrentKey reports whether this replica holds a signing key.
func (s *store) hasCurrentKey() bool {
	keys, _ := s.keys()
	for _, k := range keys {
		if k.State == KeyCurrent {
			return true
		}
	}
	return false
}

func newKey(state string, now time.Time) Key {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	id := make([]byte, 8)
	rand.Read(id)
	return Key{ID: hex.EncodeToString(id), Seed: priv.Seed(), State: state, CreatedAt: now.UTC()}
}

// ensureKeys makes sure there is a current and a next key. A legacy
// signing-key.json (or one mounted from a Kubernetes Secret) in dir becomes the
// current key when the group has none.
func (s *store) ensureKeys(ctx context.Context, dir string) error {
	cur, next := newKey(KeyCurrent, s.now()), newKey(KeyNext, s.now())
	if imported, err := readKeyFile(filepath.Join(dir, "signing-key.json")); err != nil {
		return err
	} else if imported != nil {
		cur.ID, cur.Seed = imported.ID, imported.Seed
	}
	return s.propose(ctx, command{Op: opEnsureKeys, Key: &cur, Next: &next}, nil)
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
// new next key, in one command.
func (s *store) rotateKeys(ctx context.Context) error {
	next := newKey(KeyNext, s.now())
	return s.propose(ctx, command{Op: opRotateKeys, Next: &next, At: s.now().UTC()}, nil)
}

// prune deletes retired keys whose every token has expired and revocations
// of tokens that have expired.
func (s *store) prune(ctx context.Context, tokenTTL time.Duration) error {
	now := s.now().UTC()
	return s.propose(ctx, command{Op: opPrune, At: now, Cutoff: now.Add(-tokenTTL - time.Minute)}, nil)
}
