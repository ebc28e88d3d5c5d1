package periodic

import (
	"context"
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
