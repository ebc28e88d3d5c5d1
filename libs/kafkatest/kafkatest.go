// Package kafkatest gives tests a Kafka to talk to: the real broker named by
// FEDSYNC_TEST_KAFKA (as make test-integration sets it), or else an in-process
// kfake broker that speaks the Kafka wire protocol.
package kafkatest

import (
	"os"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// EnvBrokers names the environment variable that points tests at a real broker.
const EnvBrokers = "FEDSYNC_TEST_KAFKA"

// Brokers returns bootstrap addresses for a test. With FEDSYNC_TEST_KAFKA unset it
// starts an embedded broker that stops when the test ends.
func Brokers(t testing.TB) []string {
	t.Helper()
	if env := os.Getenv(EnvBrokers); env != "" {
		return strings.Split(env, ",")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(4))
	if err != nil {
		t.Fatalf("start embedded kafka: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// Real reports whether tests run against a real broker.
func Real() bool { return os.Getenv(EnvBrokers) != "" }
