package kafka_test

import (
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
)

// With orders.co_partitioned on, an orders topic whose partition count is
// not the pings topic's is refused with the commands that fix it; off, it
// is taken.
func TestCoPartitionedOrdersNeedTheSamePartitions(t *testing.T) {
	addr := kafkatest.StartBroker(t)
	cfg := kafkatest.Config(addr)
	admin := kafkatest.Admin(t, addr)
	if _, err := admin.CreateTopics(t.Context(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: cfg.Kafka.Topics.Orders,
		NumPartitions: 2, ReplicationFactor: 1, ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"}}}}}); err != nil {
		t.Fatal(err)
	}
	k, err := kafkatest.NewClient(t, cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureTopics(t.Context()); err != nil {
		t.Fatalf("a global table of 2 partitions beside 4 of pings is refused: %v", err)
	}
	k.CoPartitionedOrders = true
	err = k.EnsureTopics(t.Context())
	if err == nil || !strings.Contains(err.Error(), "has 2 partitions") || !strings.Contains(err.Error(), "--create --topic "+cfg.Kafka.Topics.Orders+" --partitions 4") {
		t.Fatalf("got %v, want a refusal with the commands that recreate %s with 4 partitions", err, cfg.Kafka.Topics.Orders)
	}
}

// Co-partitioned, an instance holds only the orders of the partitions it
// owns: with two instances in the group each holds part of them, together
// all, and none twice; when one stops, the other takes its partitions and
// their orders.
func TestCoPartitionedOrdersFollowThePartitions(t *testing.T) {
	addr := kafkatest.StartBroker(t)
	cfg, k := kafkatest.KafkaAt(t, addr)
	cfg.Orders.CoPartitioned = true
	d := kafkatest.GenData(3, 2_000, 20_000, 0)
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Orders, d.Orders)
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Pings, d.Pings)
	now := func() time.Time { return d.End }
	books := []*processor.OrderBook{processor.NewOrderBook(), processor.NewOrderBook()}
	a := kafkatest.RunService(t, cfg, books[0], kafkatest.NewRecorder(), now)
	b := kafkatest.RunService(t, cfg, books[1], kafkatest.NewRecorder(), now)
	kafkatest.WaitFor(t, 3*time.Minute, "every ping committed", func() bool { return kafkatest.CaughtUp(t, k, cfg.Kafka.Topics.Pings) })
	kafkatest.WaitFor(t, time.Minute, "both instances owning partitions", func() bool {
		return len(a.Svc.Group().Owned()) > 0 && len(b.Svc.Group().Owned()) > 0 && len(a.Svc.Group().Owned())+len(b.Svc.Group().Owned()) == 4
	})
	held := books[0].Len() + books[1].Len()
	if books[0].Len() == 0 || books[1].Len() == 0 || held != len(d.Orders) {
		t.Errorf("the instances hold %d and %d orders, want parts of all %d", books[0].Len(), books[1].Len(), len(d.Orders))
	}
	for _, m := range d.Orders {
		if (books[0].Get(m.Key) != nil) == (books[1].Get(m.Key) != nil) {
			t.Fatalf("the order of %s is held by both or neither", m.Key)
		}
	}
	b.Stop(t)
	kafkatest.WaitFor(t, time.Minute, "the first instance holding every order", func() bool { return books[0].Len() == len(d.Orders) })
	a.Stop(t)
}
