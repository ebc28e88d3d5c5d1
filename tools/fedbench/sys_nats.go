package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// natsSystem is the NATS JetStream KV baseline: one nats-server with JetStream
// on loopback, a KV bucket with file storage, history 64, one replica. Writes are
// kv.Put, subscriptions kv.Watch on a key pattern (an ordered push consumer).
//
// KV keys are NATS subjects: ':' is not allowed, so a fedbench id maps to a key
// by replacing ':' with '.', and an id prefix ending in ':' maps to the pattern
// "<prefix>.>" (the empty prefix to ">").
type natsSystem struct {
	bin string
	url string // every server's, comma-separated
	procGroup
	version string
	// members > 1 runs a cluster of that many servers with the KV bucket
	// replicated on all of them (the ha preset: R3).
	members int
}

const natsBucket = "fedbench"

// natsHistory is the KV bucket's history per key. With history 1 a value that is
// overwritten before a watcher's consumer delivered it is gone and the watcher
// never sees it (the conflict preset showed hundreds of such skipped updates);
// 64, the most NATS allows, is what a user who needs every change would set.
const natsHistory = 64

func newNATS(members int) *natsSystem {
	return &natsSystem{bin: lookBinary("nats-server"), members: max(members, 1)}
}

func (n *natsSystem) Name() string         { return "nats" }
func (n *natsSystem) PartialUpdates() bool { return false } // a put replaces the whole value
func (n *natsSystem) Contiguous() bool     { return false } // revisions are stream sequence numbers

func (n *natsSystem) Available() (bool, string) {
	if n.bin == "" {
		return false, "nats-server not found (scripts/bench-deps.sh installs Debian's nats-server)"
	}
	return true, ""
}

func (n *natsSystem) Info() SystemInfo {
	return SystemInfo{
		Version: n.version,
		Config: n.shape() + ", JetStream file storage; KV bucket history 64 (the most; with 1, watchers skip values overwritten before delivery), " +
			fmt.Sprintf("%d replica(s);", n.members) + " kv.Put + kv.Watch(pattern, UpdatesOnly), client github.com/nats-io/nats.go/jetstream",
		Durability: "acknowledged once the write is in the OS page cache, not on disk: nats-server 2.9 flushes to disk in the background " +
			"and has no per-write fsync option; Jepsen (NATS 2.12.1, 2025) showed such settings lose acknowledged writes on crashes. " +
			"fedsync and etcd fsync before acknowledging, so their numbers pay for a guarantee NATS here does not give",
	}
}

func natsKey(id string) string { return strings.ReplaceAll(id, ":", ".") }
func natsID(key string) string { return strings.Replace(key, ".", ":", 1) }

func natsPattern(prefix string) string {
	if prefix == "" {
		return ">"
	}
	return natsKey(strings.TrimSuffix(prefix, ":")) + ".>"
}

func (n *natsSystem) shape() string {
	if n.members > 1 {
		return fmt.Sprintf("a cluster of %d servers on loopback", n.members)
	}
	return "single server on loopback"
}

func (n *natsSystem) Start(ctx context.Context, dir string) error {
	if out, err := exec.Command(n.bin, "--version").Output(); err == nil {
		n.version = strings.TrimSpace(string(out))
	}
	var ports, routes []int
	var urls, routeURLs []string
	for m := 0; m < n.members; m++ {
		p, err := freePort()
		if err != nil {
			return err
		}
		r, err := freePort()
		if err != nil {
			return err
		}
		ports, routes = append(ports, p), append(routes, r)
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", p))
		routeURLs = append(routeURLs, fmt.Sprintf("nats-route://127.0.0.1:%d", r))
	}
	n.url, n.procGroup = strings.Join(urls, ","), nil
	for m := 0; m < n.members; m++ {
		store := filepath.Join(dir, fmt.Sprintf("nats-%d", m))
		conf := filepath.Join(dir, fmt.Sprintf("nats-%d.conf", m))
		cfg := fmt.Sprintf("server_name: fedbench-%d\nlisten: 127.0.0.1:%d\nmax_payload: 8MB\nmax_pending: 256MB\nmax_connections: 100000\njetstream {\n  store_dir: %q\n  max_file_store: 64GB\n  max_memory_store: 1GB\n}\n", m, ports[m], store)
		if n.members > 1 {
			cfg += fmt.Sprintf("cluster {\n  name: fedbench\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n", routes[m], strings.Join(routeURLs, ", "))
		}
		if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
			return err
		}
		if err := n.add(fmt.Sprintf("nats-server-%d", m), exec.Command(n.bin, "-c", conf), filepath.Join(dir, fmt.Sprintf("nats-%d.log", m))); err != nil {
			n.Stop()
			return err
		}
	}
	err := waitFor(ctx, 30*time.Second, func() error {
		if err := n.exited(); err != nil {
			return err
		}
		nc, err := nats.Connect(n.url, nats.Timeout(time.Second))
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err = js.CreateOrUpdateKeyValue(cctx, jetstream.KeyValueConfig{
			Bucket: natsBucket, History: natsHistory, Storage: jetstream.FileStorage, Replicas: n.members, MaxValueSize: 4 << 20,
		})
		return err
	})
	if err != nil {
		n.Stop()
	}
	return err
}

func (n *natsSystem) kv(ctx context.Context) (*nats.Conn, jetstream.KeyValue, error) {
	nc, err := nats.Connect(n.url, nats.Timeout(5*time.Second), nats.MaxReconnects(-1),
		// Generous client-side buffers, so that a busy fedbench is not the one dropping messages.
		nats.SyncQueueLen(1<<16))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	kv, err := js.KeyValue(ctx, natsBucket)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, kv, nil
}

type natsWriter struct {
	nc *nats.Conn
	kv jetstream.KeyValue
}

func (n *natsSystem) NewWriter(ctx context.Context, agent int) (Writer, error) {
	nc, kv, err := n.kv(ctx)
	if err != nil {
		return nil, err
	}
	return &natsWriter{nc: nc, kv: kv}, nil
}

func (w *natsWriter) Put(ctx context.Context, id string, value []byte, msgID string, base int64) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := w.kv.Put(ctx, natsKey(id), value); err != nil {
		return &codeError{code: "nats " + errCode(err)}
	}
	return nil
}

func (w *natsWriter) Close() { w.nc.Close() }

func (n *natsSystem) Subscribe(ctx context.Context, sub int, prefix, events string, deliver func(Event)) (Closer, error) {
	nc, kv, err := n.kv(ctx)
	if err != nil {
		return nil, err
	}
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		deliver(Event{Err: "nats async " + errCode(err)})
	})
	wctx, cancel := context.WithCancel(context.Background())
	w, err := kv.Watch(wctx, natsPattern(prefix), jetstream.UpdatesOnly())
	if err != nil {
		cancel()
		nc.Close()
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-wctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil || e.Operation() != jetstream.KeyValuePut {
					continue
				}
				deliver(Event{ID: natsID(e.Key()), Version: int64(e.Revision()), Value: e.Value(), Bytes: len(e.Key()) + len(e.Value())})
			}
		}
	}()
	return closerFunc(func() { cancel(); w.Stop(); wg.Wait(); nc.Close() }), nil
}

func (n *natsSystem) FinalVersions(ctx context.Context, ids []string) (map[string]int64, error) {
	nc, kv, err := n.kv(ctx)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	out := make(map[string]int64, len(ids))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, id := range ids {
		g.Go(func() error {
			e, err := kv.Get(gctx, natsKey(id))
			var v int64
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
			case err != nil:
				return err
			default:
				v = int64(e.Revision())
			}
			mu.Lock()
			out[id] = v
			mu.Unlock()
			return nil
		})
	}
	return out, g.Wait()
}

func (n *natsSystem) Counters(ctx context.Context) map[string]float64 { return nil }

func (n *natsSystem) Excuse(ctx context.Context, missing map[deltaKey]string, msgID func(deltaKey) string) map[deltaKey]string {
	return nil
}
