package authn

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/fedsync/fedsync/libs/apierr"
)

// Every change to the registry is a command that the authn group commits and
// each replica applies in the same order (libs/raftgroup). The proposer has
// fixed whatever is not deterministic: hashes, new keys, times.

const (
	opImport     = "import"      // add Clients absent from the registry; result: how many
	opCreate     = "create"      // add Client; it must not exist
	opDisable    = "disable"     // set ID's Disabled (at At); result: the client
	opSecret     = "secret"      // set ID's secret Hash (at At); result: the client
	opRevoke     = "revoke"      // revoke token ID until At
	opEnsureKeys = "ensure-keys" // add Key as current and Next as next where the group has none
	opRotateKeys = "rotate-keys" // retire the current key (at At), make the next current, add Next
	opPrune      = "prune"       // drop revocations expired at At and keys retired before Cutoff
)

// command is one change, JSON-encoded in the log (the registry changes
// rarely; readability beats size).
type command struct {
	Op       string    `json:"op"`
	ID       string    `json:"id,omitempty"`
	Client   *Client   `json:"client,omitempty"`
	Clients  []Client  `json:"clients,omitempty"`
	Disabled bool      `json:"disabled,omitempty"`
	Hash     []byte    `json:"hash,omitempty"`
	Key      *Key      `json:"key,omitempty"`
	Next     *Key      `json:"next,omitempty"`
	At       time.Time `json:"at,omitzero"`
	Cutoff   time.Time `json:"cutoff,omitzero"`
}

// applyCommand applies one encoded command in tx (raftgroup.BoltFSM). A
// refusal (a client that exists, or does not) is the result; an error
// stops the replica.
func applyCommand(tx *bolt.Tx, raw []byte) (any, bool, error) {
	var c command
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, false, fmt.Errorf("decode authn command: %w", err)
	}
	res, err := apply(tx, &c)
	if err != nil {
		return nil, false, err
	}
	if e, ok := res.(*apierr.Error); ok {
		return e, false, nil
	}
	if res == nil {
		return nil, false, nil
	}
	out, err := json.Marshal(res)
	return out, false, err
}

func apply(tx *bolt.Tx, c *command) (any, error) {
	clients := tx.Bucket(bucketClients)
	switch c.Op {
	case opImport:
		added := 0
		for _, cl := range c.Clients {
			if clients.Get([]byte(cl.ClientID)) != nil {
				continue
			}
			if err := putJSON(tx, bucketClients, cl.ClientID, cl); err != nil {
				return nil, err
			}
			added++
		}
		return added, nil
	case opCreate:
		if c.Client == nil {
			return nil, fmt.Errorf("create without a client")
		}
		if clients.Get([]byte(c.Client.ClientID)) != nil {
			return apierr.New(apierr.VersionConflict, "Client %s already exists.", c.Client.ClientID), nil
		}
		return nil, putJSON(tx, bucketClients, c.Client.ClientID, c.Client)
	case opDisable, opSecret:
		cl, err := getJSON[Client](tx, bucketClients, c.ID)
		if err != nil {
			return nil, err
		}
		if cl == nil {
			return apierr.New(apierr.NotFound, "Client %s does not exist.", c.ID), nil
		}
		if c.Op == opDisable {
			cl.Disabled = c.Disabled
			if c.Disabled {
				cl.DisabledAt = c.At
			}
		} else {
			cl.SecretHash, cl.RotatedAt = c.Hash, c.At
		}
		if err := putJSON(tx, bucketClients, c.ID, cl); err != nil {
			return nil, err
		}
		cl.SecretHash = nil
		return cl, nil
	case opRevoke:
		return nil, putJSON(tx, bucketRevoked, c.ID, c.At.Unix())
	case opEnsureKeys:
		var haveCurrent, haveNext bool
		err := eachJSON(tx, bucketKeys, func(_ string, k *Key) error {
			haveCurrent = haveCurrent || k.State == KeyCurrent
			haveNext = haveNext || k.State == KeyNext
			return nil
		})
		if err != nil {
			return nil, err
		}
		if !haveCurrent && c.Key != nil {
			if err := putJSON(tx, bucketKeys, c.Key.ID, c.Key); err != nil {
				return nil, err
			}
		}
		if !haveNext && c.Next != nil {
			return nil, putJSON(tx, bucketKeys, c.Next.ID, c.Next)
		}
		return nil, nil
	case opRotateKeys:
		return rotateTx(tx, c.Next, c.At)
	case opPrune:
		return nil, pruneTx(tx, c.At, c.Cutoff)
	}
	return nil, fmt.Errorf("unknown authn command %q", c.Op)
}

// rotateTx retires the current key, makes the next one current and adds next.
func rotateTx(tx *bolt.Tx, next *Key, at time.Time) (any, error) {
	var cur, nx *Key
	err := eachJSON(tx, bucketKeys, func(_ string, k *Key) error {
		switch k.State {
		case KeyCurrent:
			cur = k
		case KeyNext:
			nx = k
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if nx == nil || next == nil {
		return apierr.New(apierr.Unavailable, "There is no next signing key to rotate to."), nil
	}
	if cur != nil {
		cur.State, cur.RetiredAt = KeyRetired, at
		if err := putJSON(tx, bucketKeys, cur.ID, cur); err != nil {
			return nil, err
		}
	}
	nx.State = KeyCurrent
	if err := putJSON(tx, bucketKeys, nx.ID, nx); err != nil {
		return nil, err
	}
	return nil, putJSON(tx, bucketKeys, next.ID, next)
}

func pruneTx(tx *bolt.Tx, now, cutoff time.Time) error {
	var drop []string
	err := eachJSON(tx, bucketKeys, func(id string, k *Key) error {
		if k.State == KeyRetired && k.RetiredAt.Before(cutoff) {
			drop = append(drop, id)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range drop {
		if err := tx.Bucket(bucketKeys).Delete([]byte(id)); err != nil {
			return err
		}
	}
	drop = drop[:0]
	err = eachJSON(tx, bucketRevoked, func(jti string, exp *int64) error {
		if *exp < now.Unix() {
			drop = append(drop, jti)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, jti := range drop {
		if err := tx.Bucket(bucketRevoked).Delete([]byte(jti)); err != nil {
			return err
		}
	}
	return nil
}
