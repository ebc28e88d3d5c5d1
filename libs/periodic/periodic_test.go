package periodic

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestRunCallsAtOnceThenEveryInterval(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Millisecond)
	defer cancel()
	n := 0
	if err := Run(ctx, 20*time.Millisecond, func(context.Context) { n++ }); err != nil {
		t.Fatal(err)
	}
	if n < 2 || n > 4 {
		t.Fatalf("called %d times in 55ms at 20ms, want 3 or so", n)
	}
}

func TestBackoffDoublesUpToMaxAndResets(t *testing.T) {
	b := &Backoff{Min: time.Millisecond, Max: 4 * time.Millisecond}
	var got []time.Duration
	for i := 0; i < 4; i++ {
		got = append(got, b.Delay())
		if !b.Wait(context.Background()) {
			t.Fatal("Wait ended without a cancelled context")
		}
	}
	if fmt.Sprint(got) != "[1ms 2ms 4ms 4ms]" {
		t.Fatalf("delays %v", got)
	}
	b.Reset()
	if b.Delay() != time.Millisecond {
		t.Fatalf("after Reset: %v", b.Delay())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if (&Backoff{Min: time.Hour, Max: time.Hour}).Wait(ctx) {
		t.Fatal("Wait on a cancelled context reported true")
	}
}
