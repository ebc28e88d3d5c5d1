package atrest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is where a service finds its at-rest keys.
type Config struct {
	// KeysFile is a KeyFile JSON file (a mounted Kubernetes Secret); it is
	// read again every Reload, so a rotated Secret takes effect without a
	// restart.
	KeysFile string
	// Keys is KeyFile JSON given directly (an environment variable).
	Keys string
	// Required refuses to start without keys.
	Required bool
	// Reload is how often the keys are read again.
	Reload time.Duration
}

// RegisterFlags registers the -at-rest.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.KeysFile, "at-rest.keys-file", "", `AES-256-GCM keys that seal this service's data on disk: a JSON file {"active":"ID","keys":{"ID":"<base64 of 32 bytes>"}} (fedctl at-rest add-key writes one), read again every -at-rest.reload`)
	fs.StringVar(&c.Keys, "at-rest.keys", "", "the same JSON given directly (an environment variable from a Secret); -at-rest.keys-file wins")
	fs.BoolVar(&c.Required, "at-rest.required", false, "refuse to start without at-rest keys (production)")
	fs.DurationVar(&c.Reload, "at-rest.reload", time.Minute, "how often the keys are read again; a new active key re-seals everything stored under the others in the background")
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	if c.Required && c.KeysFile == "" && c.Keys == "" {
		return errors.New("at-rest.required: set -at-rest.keys-file or -at-rest.keys (FEDSYNC_AT_REST_KEYS_FILE, FEDSYNC_AT_REST_KEYS)")
	}
	if c.Reload < time.Second {
		return errors.New("at-rest.reload: must be at least 1s")
	}
	return nil
}

// Open loads the vault the configuration names (one that seals nothing
// without keys).
func (c *Config) Open() (*Vault, error) {
	switch {
	case c.KeysFile != "":
		return NewVault(FileSource(c.KeysFile))
	case c.Keys != "":
		return NewVault(StaticSource(c.Keys))
	}
	return NewVault(nil)
}

// Keep keeps a service's stored data sealed with the active key: at start
// and every reload it reads the keys again and, when asked or the active key
// changed, runs reseal, which re-seals what an older key sealed and returns
// how many stored items each key seals after the pass. It exports
// fedsync_at_rest_encrypted and fedsync_at_rest_references{key}, and logs
// when a key in the ring is no longer referenced (it may be removed).
func Keep(ctx context.Context, v *Vault, every time.Duration, reseal func() (map[string]int, error), reg prometheus.Registerer, logger log.Logger) error {
	on := prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedsync_at_rest_encrypted", Help: "1 when this replica seals its stored data with an at-rest key (AES-256-GCM), else 0."})
	refs := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fedsync_at_rest_references",
		Help: "Stored items (values, Raft log entries, snapshots) sealed with each at-rest key after the last re-seal pass; key=\"\" is not sealed. A key at 0 may be removed from the keyring."}, []string{"key"})
	reg.MustRegister(on, refs)
	if !v.On() {
		level.Warn(logger).Log("msg", "data at rest is NOT encrypted: set -at-rest.keys-file (docs/security.md)")
		return nil
	}
	on.Set(1)
	done := ""
	var lastRefs map[string]int
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		if active := v.Ring().Active(); active != done {
			start := time.Now()
			counts, err := reseal()
			if err != nil {
				level.Error(logger).Log("msg", "re-seal stored data with the active at-rest key", "key", active, "err", err)
			} else {
				done, lastRefs = active, counts
				refs.Reset()
				var kept []string
				for k, n := range counts {
					refs.WithLabelValues(k).Set(float64(n))
					kept = append(kept, fmt.Sprintf("%s=%d", k, n))
				}
				sort.Strings(kept)
				var unused []string
				for _, id := range v.Ring().IDs() {
					if id != active && counts[id] == 0 {
						refs.WithLabelValues(id).Set(0)
						unused = append(unused, id)
					}
				}
				level.Info(logger).Log("msg", "stored data sealed with the active at-rest key", "key", active, "references", strings.Join(kept, ","),
					"unreferenced_keys", strings.Join(unused, ","), "took", time.Since(start).Round(time.Millisecond))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			if err := v.reloadKeeping(lastRefs); err != nil {
				level.Error(logger).Log("msg", "reload at-rest keys; keeping the ones loaded", "err", err)
			}
		}
	}
}

// reloadKeeping reads the keys again, refusing a ring that lacks a key
// stored data is still sealed with (refs, from the last re-seal pass).
func (v *Vault) reloadKeeping(refs map[string]int) error {
	r, err := Load(v.src)
	if err != nil {
		return err
	}
	for id, n := range refs {
		if _, ok := r.aeads[id]; !ok && id != "" && n > 0 {
			return fmt.Errorf("the new keyring drops key %q, which still seals %d stored items: keep it until fedsync_at_rest_references{key=%q} is 0", id, n, id)
		}
	}
	v.ring.Store(r)
	return nil
}
