package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/fedsync/fedsync/libs/atrest"
)

// A backup is two objects: ID.snap, the service's snapshot as a stream
// sealed with its at-rest key (atrest.SealWriter, purpose Purpose), and
// ID.json, its Manifest, written last: a backup whose manifest is there is
// complete.

// Format names this layout in every manifest.
const Format = "fedsync-backup/1"

// Purpose binds a backup's sealed chunks to being a backup.
const Purpose = "fedsync-backup"

// Manifest describes one backup.
type Manifest struct {
	Format    string    `json:"format"`
	ID        string    `json:"id"`
	Service   string    `json:"service"`
	CreatedAt time.Time `json:"created_at"`
	// RaftIndex is the index of the last Raft entry the snapshot holds.
	RaftIndex uint64 `json:"raft_index"`
	// Size and SHA256 are those of the snapshot object as stored.
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// PlainSize is the snapshot's size once opened.
	PlainSize int64 `json:"plain_size"`
	// KeyID is the at-rest key that sealed the object ("" in the clear);
	// the values inside are sealed with the service's keys as they were.
	KeyID string `json:"key_id,omitempty"`
	// Documents and DocumentsDigest summarise what the snapshot holds: a
	// restore that yields the same digest restored every document.
	Documents       int64  `json:"documents"`
	DocumentsDigest string `json:"documents_digest"`
	// Where is the store the backup is in (filled when listed).
	Where string `json:"where,omitempty"`
}

func snapName(id string) string     { return id + ".snap" }
func manifestName(id string) string { return id + ".json" }

// NewID names a backup of service taken at t holding the log up to index.
func NewID(service string, t time.Time, index uint64) string {
	return fmt.Sprintf("%s-%s-%d", service, t.UTC().Format("20060102T150405Z"), index)
}

// validID: backup ids become object names.
func validID(id string) error {
	if id == "" || len(id) > 200 || strings.ContainsAny(id, "/\\") || strings.HasPrefix(id, ".") {
		return fmt.Errorf("%q is not a backup id", id)
	}
	return nil
}

type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.h.Write(p)
	c.n += int64(len(p))
	return len(p), nil
}

// Create stores a backup: write writes the snapshot's plaintext, which is
// sealed with ring's active key on its way to st. m's ID, Service,
// CreatedAt, RaftIndex and Documents* are the caller's; Create fills in the
// rest and returns the manifest stored.
func Create(ctx context.Context, st Store, m Manifest, ring *atrest.Keyring, write func(io.Writer) (int64, error)) (Manifest, error) {
	if err := validID(m.ID); err != nil {
		return m, err
	}
	m.Format, m.KeyID = Format, ""
	if ring != nil {
		m.KeyID = ring.Active()
	}
	pr, pw := io.Pipe()
	sum := &countingHash{h: sha256.New()}
	plainSize := make(chan int64, 1)
	go func() {
		sw := atrest.NewSealWriter(pw, ring, Purpose)
		n, err := write(sw)
		if err == nil {
			err = sw.Close()
		}
		plainSize <- n
		pw.CloseWithError(err)
	}()
	err := st.Put(ctx, snapName(m.ID), io.TeeReader(pr, sum))
	pr.CloseWithError(errors.New("backup: the store stopped reading"))
	n := <-plainSize
	if err != nil {
		return m, fmt.Errorf("backup: store %s in %s: %w", snapName(m.ID), st, err)
	}
	m.PlainSize, m.Size, m.SHA256 = n, sum.n, hex.EncodeToString(sum.h.Sum(nil))
	raw, _ := json.MarshalIndent(m, "", "  ")
	if err := st.Put(ctx, manifestName(m.ID), bytes.NewReader(raw)); err != nil {
		st.Delete(ctx, snapName(m.ID))
		return m, fmt.Errorf("backup: store the manifest in %s: %w", st, err)
	}
	m.Where = st.String()
	return m, nil
}

// List returns the complete backups in st, newest first.
func List(ctx context.Context, st Store) ([]Manifest, error) {
	objs, err := st.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup: list %s: %w", st, err)
	}
	var out []Manifest
	for _, o := range objs {
		id, ok := strings.CutSuffix(o.Name, ".json")
		if !ok {
			continue
		}
		m, err := manifest(ctx, st, id)
		if err != nil {
			continue // not a backup's manifest
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}

// ErrNoBackup: no backup has the id.
var ErrNoBackup = errors.New("no such backup")

func manifest(ctx context.Context, st Store, id string) (Manifest, error) {
	var m Manifest
	if err := validID(id); err != nil {
		return m, err
	}
	rc, err := st.Get(ctx, manifestName(id))
	if errors.Is(err, ErrNotFound) {
		return m, fmt.Errorf("%w %q in %s", ErrNoBackup, id, st)
	}
	if err != nil {
		return m, err
	}
	defer rc.Close()
	raw, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(raw, &m); err != nil || m.Format != Format || m.ID != id {
		return m, fmt.Errorf("backup %s: %s is not a %s manifest", id, manifestName(id), Format)
	}
	m.Where = st.String()
	return m, nil
}

// ErrDigest: a backup's bytes are not those its manifest describes.
var ErrDigest = errors.New("the backup does not match its manifest's digest")

// Fetch reads backup id from st, writes its opened snapshot to dst and
// returns its manifest. It fails with ErrDigest when the stored bytes are
// not the ones the manifest names (checked over every byte), and when the
// stream does not open (a chunk altered, missing or reordered).
func Fetch(ctx context.Context, st Store, id string, ring *atrest.Keyring, dst io.Writer) (Manifest, error) {
	m, err := manifest(ctx, st, id)
	if err != nil {
		return m, err
	}
	rc, err := st.Get(ctx, snapName(id))
	if err != nil {
		return m, fmt.Errorf("backup %s: %w", id, err)
	}
	defer rc.Close()
	sum := &countingHash{h: sha256.New()}
	src := io.TeeReader(rc, sum)
	plain, _, err := atrest.OpenStream(src, ring, Purpose)
	var n int64
	if err == nil {
		n, err = io.Copy(dst, plain)
	}
	io.Copy(io.Discard, src) // the digest covers every byte
	if got := hex.EncodeToString(sum.h.Sum(nil)); got != m.SHA256 || sum.n != m.Size {
		return m, fmt.Errorf("backup %s: %w (%d bytes with SHA-256 %s; the manifest says %d bytes, %s)", id, ErrDigest, sum.n, got, m.Size, m.SHA256)
	}
	if err != nil {
		return m, fmt.Errorf("backup %s: %w", id, err)
	}
	if n != m.PlainSize {
		return m, fmt.Errorf("backup %s: opened to %d bytes, the manifest says %d", id, n, m.PlainSize)
	}
	return m, nil
}

// Delete removes backup id (the manifest first: a half-deleted backup is
// not listed).
func Delete(ctx context.Context, st Store, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	if err := st.Delete(ctx, manifestName(id)); err != nil {
		return err
	}
	return st.Delete(ctx, snapName(id))
}

// Prune deletes the backups of service older than retention at now, but
// never the newest one, and returns the ids deleted.
func Prune(ctx context.Context, st Store, service string, retention time.Duration, now time.Time) ([]string, error) {
	all, err := List(ctx, st)
	if err != nil {
		return nil, err
	}
	var gone []string
	kept := 0
	for _, m := range all { // newest first
		if m.Service != service {
			continue
		}
		if kept > 0 && now.Sub(m.CreatedAt) > retention {
			if err := Delete(ctx, st, m.ID); err != nil {
				return gone, err
			}
			gone = append(gone, m.ID)
			continue
		}
		kept++
	}
	return gone, nil
}
