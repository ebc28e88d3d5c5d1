package fedsync_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	fedsync "github.com/fedsync/fedsync/sdk/go"
)

// An agent's loop against make run's mesh: heartbeats with failover to the
// other region, a live subscription to its own documents, and a write.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := fedsync.New(fedsync.Config{
		Edges:    []string{"http://127.0.0.1:8080", "http://127.0.0.1:8090"},
		ClientID: "ai-042", ClientSecret: os.Getenv("FEDSYNC_CLIENT_SECRET"),
	})
	c.EnableCache(fedsync.CacheOptions{}) // the seed's L1 cache: 100 MB, 60 s
	c.OnFailover(func(r fedsync.FailoverReport) {
		log.Printf("failed over %s -> %s; %d documents behind", r.From, r.To, len(r.Behind))
	})
	go c.RunHeartbeats(ctx, 5*time.Second, 3)

	sub := c.Subscribe(ctx, fedsync.Filter{IDPrefix: "ai-042:"}, fedsync.SubscribeOptions{})
	if _, err := c.Push(ctx, fedsync.Delta{ID: "ai-042:beliefs", DataType: "note", Patch: map[string]any{"sky": "blue"}}); err != nil {
		log.Fatal(err)
	}
	for ev := range sub.Events() {
		if ev.Type == fedsync.EventChange {
			fmt.Println(ev.Change.ID, ev.Change.Version, ev.Change.Value)
			return
		}
	}
}

// A strong read-modify-write: Update retries on version conflicts.
func ExampleClient_Update() {
	ctx := context.Background()
	c := fedsync.New(fedsync.Config{BaseURL: "http://127.0.0.1:8080", ClientID: "ai-042", ClientSecret: os.Getenv("FEDSYNC_CLIENT_SECRET")})
	version, err := c.Update(ctx, "ai-042:plan", "note", 5, func(cur *fedsync.State) (map[string]any, error) {
		step := 0.0
		if cur != nil {
			step, _ = cur.Value["step"].(float64)
		}
		return map[string]any{"step": step + 1}, nil
	})
	if fedsync.CodeOf(err) == fedsync.CodePermissionDenied {
		log.Fatal("ai-042 may write only under ai-042:")
	}
	fmt.Println(version, err)
}
