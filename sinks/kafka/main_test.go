package kafka_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that every goroutine the Kafka side starts has an owner
// that waits for it. The Kafka tests need no ClickHouse: the pipeline's
// sink is a kafkatest.Recorder.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
