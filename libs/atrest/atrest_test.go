package atrest

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func ring(t *testing.T, files ...KeyFile) *Vault {
	t.Helper()
	merged := KeyFile{Keys: map[string]string{}}
	for _, f := range files {
		for id, k := range f.Keys {
			merged.Keys[id] = k
		}
		merged.Active = f.Active
	}
	raw, _ := json.Marshal(merged)
	v, err := NewVault(StaticSource(raw))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSealOpen(t *testing.T) {
	k1 := NewKeyFile("k1")
	v := ring(t, k1)
	plain := []byte(`{"secret":"the launch codes"}`)
	sealed := v.Seal(plain, AAD([]byte("docs"), []byte("a")))
	if bytes.Contains(sealed, []byte("launch codes")) {
		t.Fatal("sealed value holds the plaintext")
	}
	if KeyOf(sealed) != "k1" {
		t.Fatalf("key of sealed value: %q", KeyOf(sealed))
	}
	got, err := v.Open(sealed, AAD([]byte("docs"), []byte("a")))
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := v.Open(sealed, AAD([]byte("docs"), []byte("b"))); err == nil {
		t.Fatal("a value moved to another key opened")
	}
	tampered := append([]byte(nil), sealed...)
	tampered[len(tampered)-1] ^= 1
	if _, err := v.Open(tampered, AAD([]byte("docs"), []byte("a"))); err == nil {
		t.Fatal("a tampered value opened")
	}
	// A value written before encryption was on passes through.
	if got, err := v.Open(plain, nil); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("unsealed value: %q %v", got, err)
	}
	// A key the ring does not hold is named in the error.
	other := ring(t, NewKeyFile("k9"))
	if _, err := other.Open(sealed, AAD([]byte("docs"), []byte("a"))); !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), "k1") {
		t.Fatalf("open with another ring: %v", err)
	}
	// Without a vault values pass through, and sealed ones say why they do not open.
	var none *Vault
	if got := none.Seal(plain, nil); !bytes.Equal(got, plain) {
		t.Fatal("a nil vault sealed")
	}
	if _, err := none.Open(sealed, nil); err == nil || !strings.Contains(err.Error(), "no keyring") {
		t.Fatalf("nil vault opening a sealed value: %v", err)
	}
}

func TestKeyFileErrors(t *testing.T) {
	for name, raw := range map[string]string{
		"not json":      `{`,
		"short key":     `{"active":"a","keys":{"a":"c2hvcnQ="}}`,
		"active absent": `{"active":"b","keys":{"a":"` + NewKeyFile("a").Keys["a"] + `"}}`,
		"bad id":        `{"active":"a b","keys":{"a b":"` + NewKeyFile("a").Keys["a"] + `"}}`,
	} {
		if _, err := NewVault(StaticSource(raw)); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	path := filepath.Join(t.TempDir(), "keys.json")
	raw, _ := json.Marshal(NewKeyFile("k1"))
	os.WriteFile(path, raw, 0o600)
	if v, err := NewVault(FileSource(path)); err != nil || v.Ring().Active() != "k1" {
		t.Fatalf("key file: %v", err)
	}
}

// Rotation: values sealed with k1 are re-sealed with k2 once k2 is active,
// k1 is then unreferenced, and a keyring that drops a key still in use is
// refused.
func TestResealAfterRotation(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "x.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	k1, k2 := NewKeyFile("k1"), NewKeyFile("k2")
	path := filepath.Join(t.TempDir(), "keys.json")
	write := func(f KeyFile) {
		raw, _ := json.Marshal(f)
		os.WriteFile(path, raw, 0o600)
	}
	write(k1)
	v, err := NewVault(FileSource(path))
	if err != nil {
		t.Fatal(err)
	}
	Register(db, v)
	defer Forget(db)
	name := []byte("docs")
	db.Update(func(tx *bolt.Tx) error {
		tx.CreateBucketIfNotExists(name)
		tx.Bucket(name).Put([]byte("legacy"), []byte("written before encryption"))
		for i := range 2500 {
			if err := Put(tx, name, []byte{byte(i >> 8), byte(i)}, []byte("value")); err != nil {
				return err
			}
		}
		return nil
	})
	refs, err := v.Reseal(db, [][]byte{name})
	if err != nil || refs["k1"] != 2501 || refs[""] != 0 {
		t.Fatalf("first pass seals the legacy value with k1: %v %v", refs, err)
	}
	both := KeyFile{Active: "k2", Keys: map[string]string{"k1": k1.Keys["k1"], "k2": k2.Keys["k2"]}}
	write(both)
	if err := v.reloadKeeping(refs); err != nil {
		t.Fatal(err)
	}
	if refs, err = v.Reseal(db, [][]byte{name}); err != nil || refs["k2"] != 2501 || refs["k1"] != 0 {
		t.Fatalf("after rotation: %v %v", refs, err)
	}
	write(k1)
	if err := v.reloadKeeping(map[string]int{"k2": 2501}); err == nil || !strings.Contains(err.Error(), `"k2"`) {
		t.Fatalf("a keyring dropping the key in use was taken: %v", err)
	}
	write(k2)
	if err := v.reloadKeeping(refs); err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		got, err := Get(tx, name, []byte("legacy"))
		if err != nil || string(got) != "written before encryption" {
			t.Fatalf("after k1 was retired: %q %v", got, err)
		}
		return nil
	})
}
