package devstack

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestEmbeddedBrokerSyncModes(t *testing.T) {
	for _, mode := range []string{"group", "per-batch"} {
		t.Run(mode, func(t *testing.T) {
			s := &Stack{opts: Options{StateDir: t.TempDir(), BrokerSync: mode}}
			if err := s.startBroker(0); err != nil {
				t.Fatal(err)
			}
			defer s.Stop()
			cl, err := kgo.NewClient(kgo.SeedBrokers(s.broker.ListenAddrs()...),
				kgo.RequiredAcks(kgo.AllISRAcks()))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			create := kmsg.NewPtrCreateTopicsRequest()
			topic := kmsg.NewCreateTopicsRequestTopic()
			topic.Topic, topic.NumPartitions, topic.ReplicationFactor = "t", 2, 1
			create.Topics = append(create.Topics, topic)
			if _, err := create.RequestWith(ctx, cl); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("v")}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			stats, ok := s.BrokerSyncStats()
			if ok != (mode == "group") {
				t.Fatalf("group commit stats reported: %v", ok)
			}
			if ok && (stats.Released < 3 || stats.Syncs == 0 || stats.Syncs > stats.Released) {
				t.Fatalf("stats %+v: want every produce response released after a sync", stats)
			}
		})
	}
}

func TestEmbeddedBrokerSyncModeUnknown(t *testing.T) {
	s := &Stack{opts: Options{StateDir: t.TempDir(), BrokerSync: "never"}}
	if err := s.startBroker(0); err == nil {
		s.Stop()
		t.Fatal("unknown broker sync mode accepted")
	}
}
