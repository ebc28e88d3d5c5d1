package atrest

import (
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Reseal re-seals, with the active key, every value in the named buckets of
// db that is sealed with another key (or not sealed), a batch per
// transaction so writers are not held up; it returns how many values each
// key (by id, "" for unsealed) seals after the pass. Values are opened with
// AAD(bucket, key).
func (v *Vault) Reseal(db *bolt.DB, buckets [][]byte) (refs map[string]int, err error) {
	refs = map[string]int{}
	ring := v.Ring()
	if ring == nil {
		return refs, nil
	}
	for _, name := range buckets {
		var after []byte
		for {
			var stale [][]byte
			err := db.View(func(tx *bolt.Tx) error {
				b := tx.Bucket(name)
				if b == nil {
					return nil
				}
				c := b.Cursor()
				k, val := c.First()
				if after != nil {
					if k, val = c.Seek(after); k != nil && string(k) == string(after) {
						k, val = c.Next()
					}
				}
				for ; k != nil && len(stale) < 1000; k, val = c.Next() {
					after = append(after[:0], k...)
					if val == nil {
						continue // a nested bucket or an empty marker
					}
					if ring.Stale(val) {
						stale = append(stale, append([]byte(nil), k...))
						refs[ring.Active()]++
					} else {
						refs[KeyOf(val)]++
					}
				}
				if k == nil {
					after = nil
				}
				return nil
			})
			if err != nil {
				return refs, err
			}
			if len(stale) > 0 {
				if err := v.resealKeys(db, name, stale); err != nil {
					return refs, err
				}
			}
			if after == nil {
				break
			}
		}
	}
	return refs, nil
}

// resealKeys re-seals the values at keys in one transaction, reading each
// again inside it (a writer may have replaced it since).
func (v *Vault) resealKeys(db *bolt.DB, bucket []byte, keys [][]byte) error {
	return db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		ring := v.Ring()
		for _, k := range keys {
			val := b.Get(k)
			if val == nil || !ring.Stale(val) {
				continue
			}
			plain, err := ring.Open(val, AAD(bucket, k))
			if err != nil {
				return err
			}
			if err := b.Put(k, ring.Seal(plain, AAD(bucket, k))); err != nil {
				return err
			}
		}
		return nil
	})
}

// A store's transaction-level code finds its vault from the transaction:
// Register the database once, then Put, Get and OpenValue seal and open
// with it (a database without a vault passes values through).

var vaults sync.Map // *bolt.DB -> *Vault

// Register makes v the vault of db's values (Forget when db closes).
func Register(db *bolt.DB, v *Vault) { vaults.Store(db, v) }

// Forget drops db's vault.
func Forget(db *bolt.DB) { vaults.Delete(db) }

func vaultOf(tx *bolt.Tx) *Vault {
	v, _ := vaults.Load(tx.DB())
	vault, _ := v.(*Vault)
	return vault
}

// Put stores v under k in bucket name, sealed.
func Put(tx *bolt.Tx, name, k, v []byte) error {
	return tx.Bucket(name).Put(k, vaultOf(tx).Seal(v, AAD(name, k)))
}

// Get returns the opened value under k in bucket name (nil when absent).
func Get(tx *bolt.Tx, name, k []byte) ([]byte, error) {
	raw := tx.Bucket(name).Get(k)
	if raw == nil {
		return nil, nil
	}
	return OpenValue(tx, name, k, raw)
}

// OpenValue opens a value read from bucket name under k (a cursor's).
func OpenValue(tx *bolt.Tx, name, k, raw []byte) ([]byte, error) {
	v, err := vaultOf(tx).Open(raw, AAD(name, k))
	if err != nil {
		return nil, fmt.Errorf("%s/%x: %w", name, k, err)
	}
	return v, nil
}
