package groupsync

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// gatedSync is a sync function that reports each start and returns only when
// the test lets it.
type gatedSync struct {
	started chan int // the number of the sync that started
	release chan error
	n       int
}

func newGatedSync() *gatedSync {
	return &gatedSync{started: make(chan int, 100), release: make(chan error)}
}

func (g *gatedSync) sync() error {
	g.n++
	g.started <- g.n
	return <-g.release
}

func waitStarted(t *testing.T, g *gatedSync, want int) {
	t.Helper()
	select {
	case n := <-g.started:
		if n != want {
			t.Fatalf("sync %d started, want %d", n, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("sync %d did not start", want)
	}
}

func isDone(t *Ticket) bool {
	select {
	case <-t.Done():
		return true
	default:
		return false
	}
}

func TestCommitterWaitersShareOneSync(t *testing.T) {
	g := newGatedSync()
	c := NewCommitter(g.sync, t.Logf)
	first := c.Request()
	waitStarted(t, g, 1)
	// 100 waiters arrive while sync 1 runs: all of them share sync 2.
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.Wait()
		}()
	}
	for c.Stats().Requests < 101 {
		time.Sleep(time.Millisecond)
	}
	g.release <- nil
	if err := first.Err(); err != nil {
		t.Fatal(err)
	}
	waitStarted(t, g, 2)
	g.release <- nil
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if s := c.Stats(); s.Syncs != 2 || s.Requests != 101 {
		t.Fatalf("stats %+v, want 101 requests sharing 2 syncs", s)
	}
}

func TestCommitterWaiterDuringSyncWaitsForNext(t *testing.T) {
	g := newGatedSync()
	c := NewCommitter(g.sync, t.Logf)
	early := c.Request()
	waitStarted(t, g, 1)
	late := c.Request() // sync 1 started before this: it cannot cover it
	g.release <- nil
	<-early.Done()
	time.Sleep(10 * time.Millisecond)
	if isDone(late) {
		t.Fatal("a ticket requested during sync 1 was released by sync 1")
	}
	waitStarted(t, g, 2)
	if isDone(late) {
		t.Fatal("released before its own sync returned")
	}
	g.release <- nil
	if err := late.Err(); err != nil {
		t.Fatal(err)
	}
	// Idle again: the next request starts a new sync at once.
	again := c.Request()
	waitStarted(t, g, 3)
	g.release <- nil
	<-again.Done()
	if s := c.Stats(); s.Syncs != 3 {
		t.Fatalf("syncs %d, want 3", s.Syncs)
	}
}

func TestCommitterSyncErrorReachesEveryWaiter(t *testing.T) {
	g := newGatedSync()
	var logged []string
	var mu sync.Mutex
	c := NewCommitter(g.sync, func(format string, args ...any) {
		mu.Lock()
		logged = append(logged, format)
		mu.Unlock()
	})
	a, b := c.Request(), c.Request()
	waitStarted(t, g, 1)
	boom := errors.New("EIO")
	g.release <- boom
	if !errors.Is(a.Err(), boom) || !errors.Is(b.Err(), boom) {
		t.Fatalf("errors %v, %v; want %v", a.Err(), b.Err(), boom)
	}
	mu.Lock()
	defer mu.Unlock()
	if s := c.Stats(); s.Failures != 1 || s.Syncs != 0 || len(logged) != 1 {
		t.Fatalf("stats %+v, %d log lines; want one failure logged once", s, len(logged))
	}
}
