package kafka_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
)

// TestACLusterThatMoves runs 200k pings through a cluster of three
// brokers whose partition leaders move while qfence works: every leader
// re-elected at once, the pings partitions moved to other brokers one by
// one, and one broker stopped and started again on its port. The events
// equal replay's, every ping is stored once with the row replay stores,
// and the heap stays bounded.
func TestAClusterThatMoves(t *testing.T) {
	c := kafkatest.StartBrokers(t, []string{"", "", ""})
	real := c.Addrs
	cfg, k := kafkatest.KafkaAt(t, strings.Join(real, ","))
	d := kafkatest.GenData(31, 10_000, 200_000, 0)
	kafkatest.Produce(t, real[0], cfg.Kafka.Topics.Orders, d.Orders)
	sink := kafkatest.NewRecorder()
	svc := kafkatest.RunService(t, cfg, processor.NewOrderBook(), sink, func() time.Time { return d.End })
	kafkatest.WaitFor(t, time.Minute, "ready", func() bool { return svc.Svc.Ready(t.Context()) == "" })
	topic := cfg.Kafka.Topics.Pings
	var maxHeap uint64
	heap := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		maxHeap = max(maxHeap, ms.HeapAlloc)
	}
	moves := []struct {
		what string
		move func() error
	}{
		{"every leader re-elected", func() error { c.ShufflePartitionLeaders(); return nil }},
		{"the pings partitions moved one broker on", func() error {
			for p := range int32(4) {
				if err := c.MoveTopicPartition(topic, p, (c.LeaderFor(topic, p)+1)%3); err != nil {
					return err
				}
			}
			return nil
		}},
		{"a broker stopped and started again", func() error {
			node := c.LeaderFor(topic, 0)
			if err := c.Stop(node); err != nil {
				return err
			}
			time.Sleep(3 * time.Second) // the clients meet the missing broker
			return c.Start(node)
		}},
	}
	chunk := len(d.Pings) / (len(moves) + 1)
	for i := range len(moves) + 1 {
		end := min((i+1)*chunk, len(d.Pings))
		if i == len(moves) {
			end = len(d.Pings)
		}
		kafkatest.Produce(t, real[0], topic, d.Pings[i*chunk:end])
		heap()
		if i == len(moves) {
			break
		}
		if err := moves[i].move(); err != nil {
			t.Fatalf("%s: %v", moves[i].what, err)
		}
		t.Logf("%s after %d pings were produced", moves[i].what, end)
		start := time.Now()
		kafkatest.WaitFor(t, time.Minute, "the pings so far committed after "+moves[i].what, func() bool { heap(); return kafkatest.CaughtUp(t, k, topic) })
		t.Logf("  every ping so far committed %s later", time.Since(start).Round(100*time.Millisecond))
	}
	start := time.Now()
	kafkatest.WaitFor(t, 3*time.Minute, "every ping committed", func() bool { heap(); return kafkatest.CaughtUp(t, k, topic) })
	t.Logf("caught up %s after the last chunk; heap at most %d MiB", time.Since(start).Round(100*time.Millisecond), maxHeap>>20)
	svc.Stop(t)

	want, rows := kafkatest.Replay(t, cfg, d.Orders, kafkatest.ReadAll(t, k, topic), d.End)
	got, _ := kafkatest.EventsByID(t, k, cfg.Kafka.Topics.Violations)
	kafkatest.SameEvents(t, got, want)
	kafkatest.SameRows(t, sink.Rows(), rows)
	if unique, _ := sink.Count(); unique != d.Valid {
		t.Errorf("%d pings stored, want %d", unique, d.Valid)
	}
	if maxHeap > 1<<30 {
		t.Errorf("heap reached %d MiB", maxHeap>>20)
	}
}
