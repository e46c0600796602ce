package kafka_test

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/qfence/qfence/processor"
	qkafka "github.com/qfence/qfence/sinks/kafka"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
)

// Regression tests for the defects of the adversarial sweep (issue 16),
// each against the embedded broker over TCP.

// An empty (zero-length, not null) value on the orders topic is a
// malformed order, not a revocation: only a null value is a tombstone.
func TestAnEmptyOrderValueIsMalformedNotARevocation(t *testing.T) {
	addr, k, d := setup(t)
	order := kafka.Message{Key: []byte("p-1"), Value: []byte(`{"patient_id":"p-1","home":{"lat":55.75,"lon":37.61},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`)}
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Orders, []kafka.Message{order, {Key: []byte("p-1"), Value: []byte{}}})
	d.Sink = kafkatest.NewRecorder()
	svc := kafkatest.RunServiceWith(t, *d)
	kafkatest.WaitFor(t, time.Minute, "orders loaded", svc.Svc.OrdersLoaded)
	kafkatest.WaitFor(t, time.Minute, "the empty value dead-lettered", func() bool {
		return len(kafkatest.ReadAll(t, k, d.Config.Kafka.Topics.OrdersDLQ)[0]) == 1
	})
	if d.Book.Lookup("p-1") == nil {
		t.Fatal("an empty value revoked the order")
	}
	dlq := kafkatest.ReadAll(t, k, d.Config.Kafka.Topics.OrdersDLQ)[0][0]
	if got := header(dlq, "qfence-reason"); got != string(processor.MalformedJSON) {
		t.Errorf("reason %q, want malformed_json", got)
	}
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Orders, []kafka.Message{{Key: []byte("p-1"), Value: nil}})
	kafkatest.WaitFor(t, time.Minute, "the tombstone applied", func() bool { return d.Book.Lookup("p-1") == nil })
	svc.Stop(t)
}

// Three rejected pings of ~500 KB fetched together, and one of 1.5 MB on a
// pings topic that allows it, all reach pings-dlq (the broker takes ~1 MB a
// batch): batches the broker accepts, and a truncated copy of the one that
// alone is too large, with a header saying so. The partition commits.
func TestDeadLettersAlwaysFitTheBroker(t *testing.T) {
	addr := kafkatest.StartBroker(t)
	cfg := kafkatest.Config(addr)
	admin := kafkatest.Admin(t, addr)
	if _, err := admin.CreateTopics(t.Context(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: cfg.Kafka.Topics.Pings,
		NumPartitions: 4, ReplicationFactor: 1, ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: "3000000"}}}}}); err != nil {
		t.Fatal(err)
	}
	cfg, k := kafkatest.KafkaAt(t, addr)
	w := kafkatest.Writer(t, addr, cfg.Kafka.Topics.Pings)
	pad := func(n int) []byte {
		return []byte(`{"patient_id":"p-a","ts":"2026-04-02T08:00:00Z","lat":55.75,"lon":37.61,"pad":"` + strings.Repeat("x", n) + `"}`)
	}
	sizes := []int{500 << 10, 500 << 10, 500 << 10, 1500 << 10}
	for _, n := range sizes {
		if err := w.WriteMessages(t.Context(), kafka.Message{Key: []byte("p-a"), Value: pad(n)}); err != nil {
			t.Fatal(err)
		}
	}
	svc := kafkatest.RunService(t, cfg, processor.NewOrderBook(), kafkatest.NewRecorder(), time.Now)
	kafkatest.WaitFor(t, time.Minute, "every ping committed", func() bool { return kafkatest.CaughtUp(t, k, cfg.Kafka.Topics.Pings) })
	svc.Stop(t)
	var got []kafka.Message
	for _, msgs := range kafkatest.ReadAll(t, k, cfg.Kafka.Topics.PingsDLQ) {
		got = append(got, msgs...)
	}
	if len(got) != len(sizes) {
		t.Fatalf("%d dead letters, want %d", len(got), len(sizes))
	}
	truncated := 0
	for _, m := range got {
		if header(m, "qfence-reason") != string(processor.TooLarge) || header(m, "qfence-offset") == "" {
			t.Errorf("dead letter without its reason and origin: %v", m.Headers)
		}
		if n := header(m, "qfence-truncated"); n != "" {
			truncated++
			if orig, _ := strconv.Atoi(n); orig != len(pad(1500<<10)) || !bytes.HasPrefix(pad(1500<<10), m.Value) || len(m.Value) > 1<<20 {
				t.Errorf("truncated copy: header %s, %d bytes kept", n, len(m.Value))
			}
		} else if len(m.Value) != len(pad(500<<10)) {
			t.Errorf("a dead letter that fits was changed: %d bytes", len(m.Value))
		}
	}
	if truncated != 1 {
		t.Errorf("%d truncated dead letters, want 1", truncated)
	}
}

// A qfence-state topic (or orders topic) created beforehand with
// cleanup.policy=delete is refused with the command that fixes it.
func TestANonCompactedTableTopicIsRefused(t *testing.T) {
	addr := kafkatest.StartBroker(t)
	cfg := kafkatest.Config(addr)
	admin := kafkatest.Admin(t, addr)
	if _, err := admin.CreateTopics(t.Context(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: cfg.Kafka.Topics.State,
		NumPartitions: 4, ReplicationFactor: 1, ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "delete"}}}}}); err != nil {
		t.Fatal(err)
	}
	k, err := kafkatest.NewClient(t, cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	err = k.EnsureTopics(t.Context())
	if err == nil || !strings.Contains(err.Error(), "cleanup.policy=delete") || !strings.Contains(err.Error(), "--add-config cleanup.policy=compact") {
		t.Fatalf("got %v, want a refusal saying how to compact %s", err, cfg.Kafka.Topics.State)
	}
}

// One garbage record in qfence-state is counted and skipped: the partition
// is processed, its other patients keep their state.
func TestAGarbageStateRecordIsSkipped(t *testing.T) {
	addr, k, d := setup(t)
	data := kafkatest.GenData(7, 200, 4000, 0)
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Orders, data.Orders)
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Pings, data.Pings)
	w := kafkatest.Writer(t, addr, d.Config.Kafka.Topics.State)
	if err := w.WriteMessages(t.Context(), kafka.Message{Key: []byte("p-000001"), Value: []byte("\xffgarbage")},
		kafka.Message{Key: []byte(processor.MetaKey), Value: []byte("\x00")}); err != nil {
		t.Fatal(err)
	}
	sink := kafkatest.NewRecorder()
	d.Sink, d.Now = sink, func() time.Time { return data.End }
	svc := kafkatest.RunServiceWith(t, *d)
	kafkatest.WaitFor(t, time.Minute, "every ping committed", func() bool { return kafkatest.CaughtUp(t, k, d.Config.Kafka.Topics.Pings) })
	if n := testutil.ToFloat64(svc.Metrics.StateRestoreErrors); n < 1 {
		t.Errorf("qfence_state_restore_errors_total = %v, want at least 1", n)
	}
	svc.Stop(t)
	if unique, _ := sink.Count(); unique != data.Valid {
		t.Errorf("%d pings stored, want %d", unique, data.Valid)
	}
}

// Reachable makes a real round trip: a cluster that died is unreachable at
// once, whatever metadata the client has cached.
func TestReachabilityIsARealRoundTrip(t *testing.T) {
	c, err := kfake.NewCluster(kfake.Ports(0), kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	cfg := kafkatest.Config(c.ListenAddrs()[0])
	k, err := kafkatest.NewClient(t, cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Reachable(t.Context()); err != nil {
		t.Fatalf("a live broker: %v", err)
	}
	if _, err := k.Partitions(t.Context(), cfg.Kafka.Topics.Pings); err != nil {
		t.Fatal(err)
	}
	c.Close()
	start := time.Now()
	if err := k.Reachable(t.Context()); err == nil {
		t.Fatal("a dead broker answered")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the probe took %s, want at most its 2 s timeout", took)
	}
}

// A restart that finds the group's offsets behind the checkpoint (lost or
// never committed) resumes after the checkpoint: what it covers was stored
// and emitted already, and deciding it again against the newer state would
// store every ping again as late.
func TestARestartResumesAfterTheCheckpoint(t *testing.T) {
	addr, k, d := setup(t)
	data := kafkatest.GenData(8, 1000, 20_000, 0)
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Orders, data.Orders)
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Pings, data.Pings)
	first := kafkatest.NewRecorder()
	d.Sink, d.Now = first, func() time.Time { return data.End }
	svc := kafkatest.RunServiceWith(t, *d)
	kafkatest.WaitFor(t, time.Minute, "every ping committed", func() bool { return kafkatest.CaughtUp(t, k, d.Config.Kafka.Topics.Pings) })
	svc.Stop(t)
	_, events := kafkatest.EventsByID(t, k, d.Config.Kafka.Topics.Violations)

	// A new group id has no committed offsets: the group starts from the
	// first offset, as after committed offsets were lost.
	second := kafkatest.NewRecorder()
	again := *d
	cfg := *d.Config
	cfg.Kafka.GroupID = "qfence-again"
	again.Config, again.Sink, again.Book = &cfg, second, processor.NewOrderBook()
	svc = kafkatest.RunServiceWith(t, again)
	kafkatest.WaitFor(t, time.Minute, "the second group ready", func() bool { return svc.Svc.Ready(context.Background()) == "" })
	svc.Stop(t)
	if _, stored := second.Count(); stored != 0 {
		t.Errorf("the restart stored %d rows again, want 0", stored)
	}
	if _, n := kafkatest.EventsByID(t, k, d.Config.Kafka.Topics.Violations); n != events {
		t.Errorf("the restart emitted %d events again", n-events)
	}
}

// With the broker gone, the service turns not ready within a few seconds
// (it once stayed ready for a whole 30 s outage, answering from cached
// metadata), and the check itself answers at once.
func TestTheServiceIsNotReadyWhileTheBrokerIsGone(t *testing.T) {
	c, err := kfake.NewCluster(kfake.Ports(0), kfake.NumBrokers(1), kfake.DefaultNumPartitions(4))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg, _ := kafkatest.KafkaAt(t, c.ListenAddrs()[0])
	svc := kafkatest.RunService(t, cfg, processor.NewOrderBook(), kafkatest.NewRecorder(), time.Now)
	kafkatest.WaitFor(t, time.Minute, "ready", func() bool { return svc.Svc.Ready(t.Context()) == "" })
	c.Close()
	kafkatest.WaitFor(t, 10*time.Second, "not ready with the broker gone", func() bool {
		start := time.Now()
		why := svc.Svc.Ready(t.Context())
		if took := time.Since(start); took > 100*time.Millisecond {
			t.Errorf("a readiness check took %s: it must not wait on the network", took)
		}
		return strings.Contains(why, "kafka unreachable")
	})
}

// A record the broker can never take (a notification over the topic's
// max.message.bytes) goes to pings-dlq (cut to fit when it must), naming
// the topic it was meant for, instead of being retried for ever while the partition's
// commits wait: the pings commit, the events go out.
func TestARecordTheBrokerRefusesIsDeadLettered(t *testing.T) {
	addr := kafkatest.StartBroker(t)
	cfg := kafkatest.Config(addr)
	admin := kafkatest.Admin(t, addr)
	if _, err := admin.CreateTopics(t.Context(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: cfg.Kafka.Topics.Notifications,
		NumPartitions: 4, ReplicationFactor: 1, ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: "200"}}}}}); err != nil {
		t.Fatal(err)
	}
	cfg, k := kafkatest.KafkaAt(t, addr)
	start := kafkatest.DataStart
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Orders, []kafka.Message{orderMsg("p-1")})
	d := &qkafka.ServiceDeps{Config: cfg, Book: processor.NewOrderBook(), Sink: kafkatest.NewRecorder(),
		Now: func() time.Time { return start.Add(time.Hour) }}
	svc := kafkatest.RunServiceWith(t, *d)
	kafkatest.WaitFor(t, time.Minute, "ready", func() bool { return svc.Svc.Ready(t.Context()) == "" })
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Pings, []kafka.Message{
		pingMsg("p-1", start, 55.7512), pingMsg("p-1", start.Add(5*time.Minute), 55.76), pingMsg("p-1", start.Add(11*time.Minute), 55.76)})
	kafkatest.WaitFor(t, time.Minute, "every ping committed", func() bool { return kafkatest.CaughtUp(t, k, cfg.Kafka.Topics.Pings) })
	svc.Stop(t)
	if n := countEvents(t, k, "breach_started"); n != 1 {
		t.Errorf("%d breach_started on violations, want 1", n)
	}
	var refused []kafka.Message
	for _, msgs := range kafkatest.ReadAll(t, k, cfg.Kafka.Topics.PingsDLQ) {
		refused = append(refused, msgs...)
	}
	if len(refused) < 2 { // the warning and the check-in request
		t.Fatalf("%d dead letters, want the notifications", len(refused))
	}
	for _, m := range refused {
		if header(m, "qfence-reason") != "too_large" || header(m, "qfence-topic") != cfg.Kafka.Topics.Notifications ||
			!bytes.HasPrefix(m.Value, []byte(`{"notification_id":"`)) || string(m.Key) != "p-1" {
			t.Errorf("dead letter %s: %q", header(m, "qfence-reason"), m.Value)
		}
	}
}
