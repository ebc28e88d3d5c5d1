package kafkabus

import (
	"context"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/twmb/franz-go/pkg/kgo"
)

// WatchAssignments joins group on topic only to share the topic's partitions
// among the group's members: each partition belongs to one member at a time.
// assigned and revoked are told which partitions this member gained and lost;
// revoked must return only once the member stopped acting on them, so a
// partition is never acted on by two members at once. Records are not
// processed and no offsets are committed. It runs until ctx ends.
func WatchAssignments(ctx context.Context, c *Config, topic, group string, logger log.Logger, assigned, revoked func([]int32)) error {
	name := c.Topic(topic)
	pick := func(m map[string][]int32) []int32 { return m[name] }
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.Brokers...),
		kgo.ConsumerGroup(c.Group(group)),
		kgo.ConsumeTopics(name),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), // only membership matters, not the records
		kgo.Balancers(kgo.RoundRobinBalancer()),         // eager: all revoked before any is assigned again
		kgo.SessionTimeout(10*time.Second),
		kgo.HeartbeatInterval(time.Second),
		kgo.FetchMaxBytes(1<<20),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { assigned(pick(m)) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { revoked(pick(m)) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { revoked(pick(m)) }),
	)
	if err != nil {
		return err
	}
	defer cl.Close() // leaves the group: its partitions go to the others at once
	for ctx.Err() == nil {
		fetches := cl.PollFetches(ctx) // keeps the member alive; the records are not needed here
		fetches.EachError(func(_ string, p int32, err error) {
			if ctx.Err() == nil {
				level.Debug(logger).Log("msg", "assignment watch fetch", "partition", p, "err", err)
			}
		})
	}
	return nil
}
