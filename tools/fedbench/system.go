package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// System is one system under test: fedsync, or a baseline. Each is started by
// fedbench on loopback, used through its public client API only, and stopped.
type System interface {
	Name() string
	// Available says whether the system can run here (binaries present), and why not.
	Available() (bool, string)
	// Start starts it with its files under dir.
	Start(ctx context.Context, dir string) error
	Stop()
	Info() SystemInfo
	// Contiguous: versions of an id are 1, 2, 3, ... (a jump is a lost version).
	Contiguous() bool
	// NewWriter opens agent's own connection (and token).
	NewWriter(ctx context.Context, agent int) (Writer, error)
	// Subscribe opens subscriber sub's own connection with a subscription to the
	// ids starting with prefix, and returns once the system confirmed it.
	// events is "full" (every change carries the whole value) or "delta" (every
	// change carries what it set and removed; fedsync only: the baselines have
	// no partial update and always deliver the whole value). deliver is called
	// from one goroutine per subscription.
	Subscribe(ctx context.Context, sub int, prefix, events string, deliver func(Event)) (Closer, error)
	// PartialUpdates says whether a write can set one field of a document (fedsync's
	// patch) rather than replace the whole value (etcd, NATS).
	PartialUpdates() bool
	// FinalVersions reads the current version of each id.
	FinalVersions(ctx context.Context, ids []string) (map[string]int64, error)
	// Counters returns the system's own counters (committed deltas, conflicts...).
	Counters(ctx context.Context) map[string]float64
	// Excuse looks up what became of acknowledged deltas that no subscriber saw
	// (fedsync's outcome API: "superseded", "committed", ...); nil when the
	// system has no such notion (every acknowledged put is a change).
	Excuse(ctx context.Context, missing map[deltaKey]string, msgID func(deltaKey) string) map[deltaKey]string
	// PIDs are the system's processes, for RSS.
	PIDs() map[int]string
}

// SystemInfo describes a system for the report.
type SystemInfo struct {
	Version    string `json:"version"`
	Config     string `json:"config"`
	Durability string `json:"durability"`
}

// Writer is one agent's connection.
type Writer interface {
	// Put writes value to id and returns once the system acknowledged it.
	// base is the version the writer last saw of id (0 = none). fedsync puts
	// value as the field "fb" of the document (a patch); the baselines put it
	// as the whole value.
	Put(ctx context.Context, id string, value []byte, msgID string, base int64) error
	Close()
}

// docSeeder is a Writer of a system with partial updates: it writes a JSON
// object of fields into a document as one delta (the growing preset's first
// writes).
type docSeeder interface {
	Seed(ctx context.Context, id string, fields []byte, msgID string) error
}

// Closer ends a subscription.
type Closer interface{ Close() }

// Event is one change a subscriber received.
type Event struct {
	ID      string
	Version int64
	// Value is the whole value, or, for a change that carries only what it
	// changed (Delta), the fields it set as a JSON object.
	Value []byte
	Delta bool
	// Bytes is the size of the change message as the client received it (the
	// WebSocket frame, the gRPC message, the watch event's key and value).
	Bytes int
	Err   string // non-empty: an error the subscriber saw (reconnects, ...)
}

// closerFunc adapts a function.
type closerFunc func()

func (f closerFunc) Close() { f() }

// encodeValue renders the JSON object a writer sends: writer, sequence number,
// push time, and padding to reach size bytes. Padding is hex so that neither
// side can compress it away.
func encodeValue(buf []byte, writer int, n int64, pushNs int64, pad string) []byte {
	buf = append(buf[:0], `{"w":`...)
	buf = strconv.AppendInt(buf, int64(writer), 10)
	buf = append(buf, `,"n":`...)
	buf = strconv.AppendInt(buf, n, 10)
	buf = append(buf, `,"t":`...)
	buf = strconv.AppendInt(buf, pushNs, 10)
	buf = append(buf, `,"v":"`...)
	buf = append(buf, pad...)
	return append(buf, `"}`...)
}

var (
	keyW = []byte(`"w":`)
	keyN = []byte(`"n":`)
	keyT = []byte(`"t":`)
)

// decodeValue finds writer, sequence and push time in a JSON object written by
// encodeValue, in any key order and with any spacing after the colon (the
// systems may re-encode the object).
func decodeValue(b []byte) (writer int, n, pushNs int64, ok bool) {
	w, ok1 := intField(b, keyW)
	n, ok2 := intField(b, keyN)
	t, ok3 := intField(b, keyT)
	return int(w), n, t, ok1 && ok2 && ok3
}

func intField(b, key []byte) (int64, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	var v int64
	j := 0
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		v = v*10 + int64(b[j]-'0')
	}
	return v, j > 0
}

func padding(size int) string {
	if size <= 0 {
		return ""
	}
	const hex = "0123456789abcdef"
	b := make([]byte, size)
	x := uint64(time.Now().UnixNano()) | 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = hex[x&15]
	}
	return string(b)
}

// rssOf returns the resident set size of pid in bytes.
func rssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// childrenOf returns the processes whose parent is pid, with their command names.
func childrenOf(pid int) map[int]string {
	out := map[int]string{}
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < 0 {
			continue
		}
		f := strings.Fields(s[close+1:])
		if len(f) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == pid {
			p, _ := strconv.Atoi(strings.TrimSpace(s[:open]))
			out[p] = s[open+1 : close]
		}
	}
	return out
}

// lookBinary finds a binary on PATH or in the sbin directories Debian puts
// daemons in.
func lookBinary(name string) string {
	for _, dir := range append(filepath.SplitList(os.Getenv("PATH")), "/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin") {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

func waitFor(ctx context.Context, timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("not ready after %s: %w", timeout, err)
}
