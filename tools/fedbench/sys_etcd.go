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

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/status"
)

// etcdSystem is the etcd baseline: a single etcd member on loopback, configured
// as a careful user would: default fsync of the WAL before every acknowledgement,
// auto-compaction on so that the history does not grow (periodic, 1 minute
// retained), and a backend quota large enough for the large-value preset. Writes
// are Put, subscriptions are prefix Watch.
type etcdSystem struct {
	bin       string
	endpoints []string
	procGroup
	version string
	// members > 1 runs a cluster of that many on loopback (the ha preset).
	members int
}

func newEtcd(members int) *etcdSystem {
	return &etcdSystem{bin: lookBinary("etcd"), members: max(members, 1)}
}

func (e *etcdSystem) Name() string         { return "etcd" }
func (e *etcdSystem) PartialUpdates() bool { return false } // a put replaces the whole value
func (e *etcdSystem) Contiguous() bool     { return true }  // kv.Version counts 1, 2, 3 per key

func (e *etcdSystem) Available() (bool, string) {
	if e.bin == "" {
		return false, "etcd not found (scripts/bench-deps.sh installs Debian's etcd-server)"
	}
	return true, ""
}

func (e *etcdSystem) Info() SystemInfo {
	return SystemInfo{
		Version:    e.version,
		Config:     e.shape() + "; default fsync; --auto-compaction-mode=periodic --auto-compaction-retention=1m; --quota-backend-bytes=8GiB; Put + prefix Watch, client go.etcd.io/etcd/client/v3 v3.5",
		Durability: "acknowledged after the WAL entry is fsynced (default)",
	}
}

func (e *etcdSystem) shape() string {
	if e.members > 1 {
		return fmt.Sprintf("a cluster of %d members on loopback (writes commit on a majority)", e.members)
	}
	return "single member on loopback"
}

func (e *etcdSystem) Start(ctx context.Context, dir string) error {
	if out, err := exec.Command(e.bin, "--version").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(l, "etcd Version: "); ok {
				e.version = "etcd " + strings.TrimSpace(v)
			}
		}
	}
	type member struct{ name, client, peer string }
	var ms []member
	var cluster []string
	e.endpoints, e.procGroup = nil, nil
	for m := 0; m < e.members; m++ {
		cp, err := freePort()
		if err != nil {
			return err
		}
		pp, err := freePort()
		if err != nil {
			return err
		}
		mb := member{name: fmt.Sprintf("fedbench-%d", m), client: fmt.Sprintf("127.0.0.1:%d", cp), peer: fmt.Sprintf("http://127.0.0.1:%d", pp)}
		ms = append(ms, mb)
		cluster = append(cluster, mb.name+"="+mb.peer)
		e.endpoints = append(e.endpoints, mb.client)
	}
	for m, mb := range ms {
		args := []string{
			"--name", mb.name, "--data-dir", filepath.Join(dir, fmt.Sprintf("etcd-%d", m)),
			"--listen-client-urls", "http://" + mb.client, "--advertise-client-urls", "http://" + mb.client,
			"--listen-peer-urls", mb.peer, "--initial-advertise-peer-urls", mb.peer,
			"--initial-cluster", strings.Join(cluster, ","), "--initial-cluster-state", "new",
			"--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1m",
			"--quota-backend-bytes", fmt.Sprint(int64(8) << 30),
			"--max-request-bytes", fmt.Sprint(2 << 20),
			"--logger", "zap", "--log-level", "warn",
		}
		cmd := exec.Command(e.bin, args...)
		// Debian's etcd reads ETCD_* variables; make sure none from the environment leak in.
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "ETCD_UNSUPPORTED_ARCH=" + os.Getenv("ETCD_UNSUPPORTED_ARCH")}
		if err := e.add(fmt.Sprintf("etcd-%d", m), cmd, filepath.Join(dir, fmt.Sprintf("etcd-%d.log", m))); err != nil {
			e.Stop()
			return err
		}
	}
	err := waitFor(ctx, 30*time.Second, func() error {
		if err := e.exited(); err != nil {
			return err
		}
		c, err := e.client()
		if err != nil {
			return err
		}
		defer c.Close()
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err = c.Put(cctx, "fedbench-ready", "1")
		return err
	})
	if err != nil {
		e.Stop()
	}
	return err
}

func (e *etcdSystem) client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: e.endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		MaxCallRecvMsgSize: 16 << 20})
}

type etcdWriter struct{ c *clientv3.Client }

func (e *etcdSystem) NewWriter(ctx context.Context, agent int) (Writer, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	return &etcdWriter{c: c}, nil
}

func (w *etcdWriter) Put(ctx context.Context, id string, value []byte, msgID string, base int64) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := w.c.Put(ctx, id, string(value))
	if err != nil {
		if st, ok := status.FromError(err); ok {
			return &codeError{code: "etcd " + st.Code().String()}
		}
		return &codeError{code: "etcd " + errCode(err)}
	}
	return nil
}

func (w *etcdWriter) Close() { w.c.Close() }

func (e *etcdSystem) Subscribe(ctx context.Context, sub int, prefix, events string, deliver func(Event)) (Closer, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	key := prefix
	if key == "" {
		key = "\x00" // every key
	}
	opts := []clientv3.OpOption{clientv3.WithCreatedNotify()}
	if prefix == "" {
		opts = append(opts, clientv3.WithFromKey())
	} else {
		opts = append(opts, clientv3.WithPrefix())
	}
	wch := c.Watch(wctx, key, opts...)
	select {
	case resp, ok := <-wch:
		if !ok || !resp.Created || resp.Err() != nil {
			cancel()
			c.Close()
			return nil, fmt.Errorf("watch not created: %v", resp.Err())
		}
	case <-time.After(30 * time.Second):
		cancel()
		c.Close()
		return nil, errors.New("watch not created within 30 s")
	case <-ctx.Done():
		cancel()
		c.Close()
		return nil, ctx.Err()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for resp := range wch {
			if err := resp.Err(); err != nil {
				deliver(Event{Err: "etcd watch " + errCode(err)})
				continue
			}
			for _, ev := range resp.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				deliver(Event{ID: string(ev.Kv.Key), Version: ev.Kv.Version, Value: ev.Kv.Value, Bytes: len(ev.Kv.Key) + len(ev.Kv.Value)})
			}
		}
	}()
	return closerFunc(func() { cancel(); wg.Wait(); c.Close() }), nil
}

func (e *etcdSystem) FinalVersions(ctx context.Context, ids []string) (map[string]int64, error) {
	c, err := e.client()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	out := make(map[string]int64, len(ids))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, id := range ids {
		g.Go(func() error {
			resp, err := c.Get(gctx, id)
			if err != nil {
				return err
			}
			var v int64
			if len(resp.Kvs) > 0 {
				v = resp.Kvs[0].Version
			}
			mu.Lock()
			out[id] = v
			mu.Unlock()
			return nil
		})
	}
	return out, g.Wait()
}

func (e *etcdSystem) Counters(ctx context.Context) map[string]float64 { return nil }

func (e *etcdSystem) Excuse(ctx context.Context, missing map[deltaKey]string, msgID func(deltaKey) string) map[deltaKey]string {
	return nil // every acknowledged put is a revision every watcher must see
}
