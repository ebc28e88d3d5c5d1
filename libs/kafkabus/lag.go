package kafkabus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// LagReader reads how far a consumer group is behind on a topic.
type LagReader struct {
	client *kafka.Client
	topic  string
	group  string
	parts  []int
}

// NewLagReader returns a reader of group's lag on topic (names before the
// configured prefix).
func NewLagReader(c *Config, topic, group string) *LagReader {
	return &LagReader{client: &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 5 * time.Second},
		topic: c.Topic(topic), group: c.Group(group)}
}

// End returns the topic's end offsets summed over partitions: how many records
// it has ever held. It only grows while records are produced.
func (l *LagReader) End(ctx context.Context) (int64, error) {
	if err := l.partitions(ctx); err != nil {
		return 0, err
	}
	reqs := make([]kafka.OffsetRequest, 0, len(l.parts))
	for _, p := range l.parts {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	ends, err := l.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{l.topic: reqs}})
	if err != nil {
		return 0, fmt.Errorf("offsets of %s: %w", l.topic, err)
	}
	var n int64
	for _, p := range ends.Topics[l.topic] {
		if p.Error != nil {
			return 0, fmt.Errorf("offsets of %s/%d: %w", l.topic, p.Partition, p.Error)
		}
		n += p.LastOffset
	}
	return n, nil
}

func (l *LagReader) partitions(ctx context.Context) error {
	if l.parts != nil {
		return nil
	}
	md, err := l.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{l.topic}})
	if err != nil {
		return fmt.Errorf("metadata of %s: %w", l.topic, err)
	}
	for _, t := range md.Topics {
		if t.Error != nil {
			return fmt.Errorf("metadata of %s: %w", l.topic, t.Error)
		}
		for _, p := range t.Partitions {
			l.parts = append(l.parts, p.ID)
		}
	}
	if len(l.parts) == 0 {
		return fmt.Errorf("topic %s has no partitions", l.topic)
	}
	return nil
}

// Lag returns the records of the topic that the group has not committed yet,
// summed over partitions, and the group's committed position summed over
// partitions (it grows by the records the group finished).
func (l *LagReader) Lag(ctx context.Context) (lag, committed int64, err error) {
	if err := l.partitions(ctx); err != nil {
		return 0, 0, err
	}
	reqs := make([]kafka.OffsetRequest, 0, 2*len(l.parts))
	for _, p := range l.parts {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	ends, err := l.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{l.topic: reqs}})
	if err != nil {
		return 0, 0, fmt.Errorf("offsets of %s: %w", l.topic, err)
	}
	done, err := l.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: l.group, Topics: map[string][]int{l.topic: l.parts}})
	if err != nil {
		return 0, 0, fmt.Errorf("offsets of group %s: %w", l.group, err)
	}
	if errors.Is(done.Error, kafka.GroupIdNotFound) {
		done.Error = nil // the group never committed: everything retained waits
	}
	if done.Error != nil {
		return 0, 0, fmt.Errorf("offsets of group %s: %w", l.group, done.Error)
	}
	committedAt := map[int]int64{}
	for _, p := range done.Topics[l.topic] {
		if p.Error == nil {
			committedAt[p.Partition] = p.CommittedOffset
		}
	}
	for _, p := range ends.Topics[l.topic] {
		if p.Error != nil {
			return 0, 0, fmt.Errorf("offsets of %s/%d: %w", l.topic, p.Partition, p.Error)
		}
		c, ok := committedAt[p.Partition]
		if !ok || c < p.FirstOffset {
			c = p.FirstOffset // nothing committed yet: everything retained waits
		}
		lag += max(p.LastOffset-c, 0)
		committed += c
	}
	return lag, committed, nil
}
