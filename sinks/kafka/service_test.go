package kafka_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qfence/qfence/config/contract"

	qkafka "github.com/qfence/qfence/sinks/kafka"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/qfence/qfence/config"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
)

func setup(t *testing.T) (string, *qkafka.Client, *qkafka.ServiceDeps) {
	t.Helper()
	addr := kafkatest.StartBroker(t)
	cfg, k := kafkatest.KafkaAt(t, addr)
	return addr, k, &qkafka.ServiceDeps{Config: cfg, Book: processor.NewOrderBook()}
}

// deadLetterHeaders is a record's headers as the object the contract's
// dead-letter headers schema describes.
func deadLetterHeaders(m kafka.Message) []byte {
	var keys []string
	var values [][]byte
	for _, h := range m.Headers {
		keys, values = append(keys, h.Key), append(values, h.Value)
	}
	return contract.Headers(keys, values)
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// TestBadInputGoesToTheDeadLetterTopic: 10k broken messages among 100k
// valid ones all land in pings-dlq, unchanged, with the right reason and
// their origin in headers; every valid ping is processed; the service lives.
func TestBadInputGoesToTheDeadLetterTopic(t *testing.T) {
	addr, k, d := setup(t)
	data := kafkatest.GenData(2, 5_000, 110_000, 11)
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Orders, data.Orders)
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Pings, data.Pings)
	sink := kafkatest.NewRecorder()
	d.Sink, d.Now = sink, func() time.Time { return data.End }
	svc := kafkatest.RunServiceWith(t, *d)
	kafkatest.WaitFor(t, 2*time.Minute, "every ping committed", func() bool { return kafkatest.CaughtUp(t, k, d.Config.Kafka.Topics.Pings) })
	if svc.Svc.Ready(t.Context()) != "" {
		t.Errorf("not ready after bad input: %s", svc.Svc.Ready(t.Context()))
	}
	svc.Stop(t)

	bad := 0
	for _, n := range data.Bad {
		bad += n
	}
	if bad != 10_000 || data.Valid != 100_000 {
		t.Fatalf("the generator made %d bad and %d valid pings, want 10000 and 100000", bad, data.Valid)
	}
	headers, err := contract.Schema(contract.DeadLetterHeaders)
	if err != nil {
		t.Fatal(err)
	}
	got := map[processor.Reason]int{}
	for _, msgs := range kafkatest.ReadAll(t, k, d.Config.Kafka.Topics.PingsDLQ) {
		for _, m := range msgs {
			if err := contract.Validate(headers, deadLetterHeaders(m)); err != nil {
				t.Fatalf("dead letter headers %v: %v", m.Headers, err)
			}
			reason := processor.Reason(header(m, "qfence-reason"))
			got[reason]++
			if string(m.Key) != "bad" || header(m, "qfence-error") == "" || header(m, "qfence-topic") != "pings" ||
				header(m, "qfence-partition") == "" || header(m, "qfence-offset") == "" {
				t.Fatalf("dead letter without its origin: key %q headers %v", m.Key, m.Headers)
			}
		}
	}
	for reason, n := range data.Bad {
		if got[reason] < n {
			t.Errorf("%s: %d in the dead-letter topic, want %d", reason, got[reason], n)
		}
	}
	if unique, _ := sink.Count(); unique != data.Valid {
		t.Errorf("%d valid pings stored, want %d", unique, data.Valid)
	}
}

// TestOrdersAreAGlobalTable: not ready before the orders are read to the
// end; a ping before its order is no_order and not stored; a tombstone
// closes an open breach with order_ended.
func TestOrdersAreAGlobalTable(t *testing.T) {
	addr, k, d := setup(t)
	var orders []kafka.Message
	for i := 0; i < 50_000; i++ {
		id := fmt.Sprintf("bulk-%06d", i)
		orders = append(orders, kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil,
			`{"patient_id":%q,"home":{"lat":55.75,"lon":37.62},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`, id)})
	}
	order := func(id string) kafka.Message {
		return kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil,
			`{"patient_id":%q,"home":{"lat":55.7512,"lon":37.6184},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z","district":"CAO"}`, id)}
	}
	ping := func(id string, min int, lat float64) kafka.Message {
		return kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil, `{"patient_id":%q,"ts":%q,"lat":%v,"lon":37.6184,"accuracy_m":5}`,
			id, kafkatest.DataStart.Add(time.Duration(min)*time.Minute).Format(time.RFC3339), lat)}
	}
	orders = append(orders, order("breacher"))
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Orders, orders)

	sink := kafkatest.NewRecorder()
	var clock atomic.Int64
	clock.Store(kafkatest.DataStart.Add(10 * time.Minute).UnixMilli())
	d.Sink, d.Parts = sink, kafkatest.Parts(t, d.Config, 5*time.Second)
	d.Now = func() time.Time { return time.UnixMilli(clock.Load()) }
	svc := kafkatest.RunServiceWith(t, *d)
	if why := svc.Svc.Ready(t.Context()); why == "" {
		t.Error("ready before the orders topic was read")
	}
	kafkatest.WaitFor(t, time.Minute, "orders loaded", svc.Svc.OrdersLoaded)
	if n := d.Book.Len(); n != len(orders) {
		t.Fatalf("loaded with %d orders in the book, want all %d", n, len(orders))
	}

	// A breach, and pings of a patient whose order comes later.
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Pings, []kafka.Message{
		ping("breacher", 0, 55.76), ping("breacher", 6, 55.76), ping("latecomer", 0, 55.7512), ping("latecomer", 1, 55.7512)})
	kafkatest.WaitFor(t, time.Minute, "the breach", func() bool { return countEvents(t, k, "breach_started") == 1 })
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Orders, []kafka.Message{order("latecomer"), {Key: []byte("breacher"), Value: nil}})
	kafkatest.WaitFor(t, time.Minute, "the tombstone applied", func() bool { return d.Book.Lookup("breacher") == nil && d.Book.Lookup("latecomer") != nil })
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Pings, []kafka.Message{ping("latecomer", 2, 55.7512), ping("latecomer", 9, 55.7512)})
	// The breacher's partition hears no more pings: its wall clock moves on
	// and its next sweep finds the order gone.
	clock.Add((20 * time.Minute).Milliseconds())
	kafkatest.WaitFor(t, time.Minute, "order_ended", func() bool { return countEvents(t, k, "breach_ended") == 1 })
	svc.Stop(t)

	var ended map[string]any
	for _, msgs := range kafkatest.ReadAll(t, k, d.Config.Kafka.Topics.Violations) {
		for _, m := range msgs {
			var e map[string]any
			if err := json.Unmarshal(m.Value, &e); err != nil {
				t.Fatal(err)
			}
			if e["type"] == "breach_ended" {
				ended = e
			}
		}
	}
	if ended["reason"] != "order_ended" || ended["patient_id"] != "breacher" || ended["home"] == nil {
		t.Errorf("breach_ended = %v, want reason order_ended with the order's home", ended)
	}
	if sink.Stored("latecomer", kafkatest.DataStart.UnixMilli()) != 0 {
		t.Error("a ping from before the patient's order was stored")
	}
	if sink.Stored("latecomer", kafkatest.DataStart.Add(2*time.Minute).UnixMilli()) == 0 {
		t.Error("a ping after the patient's order arrived was not stored")
	}
}

func countEvents(t testing.TB, k *qkafka.Client, typ string) int {
	n := 0
	for _, msgs := range kafkatest.ReadAll(t, k, "violations") {
		for _, m := range msgs {
			if json.Valid(m.Value) && string(m.Value[len(`{"event_id":"`)+32:len(`{"event_id":"`)+32+len(`","type":"`)+len(typ)]) == `","type":"`+typ {
				n++
			}
		}
	}
	return n
}

// TestIdlePartitionLosesSignalByTheWallClock: nobody pings for 31 minutes
// of (test-driven) wall clock; the silent patient still gets signal_lost.
func TestIdlePartitionLosesSignalByTheWallClock(t *testing.T) {
	addr, k, d := setup(t)
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Orders, []kafka.Message{{Key: []byte("quiet"), Value: []byte(
		`{"patient_id":"quiet","home":{"lat":55.7512,"lon":37.6184},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`)}})
	var clock atomic.Int64
	clock.Store(kafkatest.DataStart.UnixMilli())
	d.Sink, d.Parts = kafkatest.NewRecorder(), kafkatest.Parts(t, d.Config, 5*time.Second)
	d.Now = func() time.Time { return time.UnixMilli(clock.Load()) }
	svc := kafkatest.RunServiceWith(t, *d)
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Pings, []kafka.Message{{Key: []byte("quiet"), Value: fmt.Appendf(nil,
		`{"patient_id":"quiet","ts":%q,"lat":55.7512,"lon":37.6184,"accuracy_m":5}`, kafkatest.DataStart.Format(time.RFC3339))}})
	kafkatest.WaitFor(t, time.Minute, "the ping committed", func() bool { return kafkatest.CaughtUp(t, k, d.Config.Kafka.Topics.Pings) })
	clock.Add((29 * time.Minute).Milliseconds())
	time.Sleep(3 * time.Second) // a few ticks at 29 minutes: nothing may happen yet
	if n := countEvents(t, k, "signal_lost"); n != 0 {
		t.Fatalf("signal_lost after 29 minutes of silence")
	}
	clock.Add((2 * time.Minute).Milliseconds())
	kafkatest.WaitFor(t, 30*time.Second, "signal_lost from the wall clock", func() bool { return countEvents(t, k, "signal_lost") == 1 })
	svc.Stop(t)
}

// TestRebalanceKeepsEveryEventAndOneOwner: two instances share the group;
// one stops midway. The events are those of replay, and no partition ever
// has two live owners.
func TestRebalanceKeepsEveryEventAndOneOwner(t *testing.T) {
	addr, k, d := setup(t)
	data := kafkatest.GenData(3, 4_000, 120_000, 0)
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Orders, data.Orders)
	var mu sync.Mutex
	owners := map[int]int{}
	observe := func(p int, owned bool) {
		mu.Lock()
		defer mu.Unlock()
		if owned {
			owners[p]++
			if owners[p] > 1 {
				t.Errorf("partition %d has %d live owners", p, owners[p])
			}
		} else {
			owners[p]--
		}
	}
	now := func() time.Time { return data.End }
	a := kafkatest.RunServiceWith(t, qkafka.ServiceDeps{Config: d.Config, Book: processor.NewOrderBook(), Sink: kafkatest.NewRecorder(), Now: now, Observe: observe})
	b := kafkatest.RunServiceWith(t, qkafka.ServiceDeps{Config: d.Config, Book: processor.NewOrderBook(), Sink: kafkatest.NewRecorder(), Now: now, Observe: observe})
	kafkatest.WaitFor(t, time.Minute, "both instances to own partitions", func() bool {
		return len(a.Svc.Group().Owned()) > 0 && len(b.Svc.Group().Owned()) > 0
	})
	half := len(data.Pings) / 2
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Pings, data.Pings[:half])
	kafkatest.WaitFor(t, time.Minute, "the first half", func() bool { return kafkatest.CaughtUp(t, k, d.Config.Kafka.Topics.Pings) })
	b.Stop(t)
	kafkatest.Produce(t, addr, d.Config.Kafka.Topics.Pings, data.Pings[half:])
	kafkatest.WaitFor(t, 2*time.Minute, "the second half", func() bool { return kafkatest.CaughtUp(t, k, d.Config.Kafka.Topics.Pings) })
	if n := len(a.Svc.Group().Owned()); n != 4 {
		t.Errorf("the remaining instance owns %d partitions, want 4", n)
	}
	a.Stop(t)

	want := kafkatest.ReplayPartitions(t, d.Config, data.Orders, kafkatest.ReadAll(t, k, d.Config.Kafka.Topics.Pings), data.End)
	got, _ := kafkatest.EventsByID(t, k, d.Config.Kafka.Topics.Violations)
	missing := 0
	for id := range want {
		if _, ok := got[id]; !ok {
			missing++
		}
	}
	if missing > 0 || len(got) != len(want) {
		t.Errorf("run gave %d events, replay %d; %d of replay's missing", len(got), len(want), missing)
	}
	_ = context.Background
}

// TestSessionTimeoutTheBrokersRefuse: a kafka.session_timeout outside the
// brokers' group.min/max.session.timeout.ms stops the service with an error
// that names the key and the brokers' settings (retrying cannot help: the
// group never takes the member); the embedded broker takes qfence's whole
// range, so 3 s joins there.
func TestSessionTimeoutTheBrokersRefuse(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(4), kfake.GroupMinSessionTimeout(6*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cfg, _ := kafkatest.KafkaAt(t, c.ListenAddrs()[0])
	cfg.Kafka.SessionTimeout = 3 * time.Second
	svc := kafkatest.RunServiceWith(t, qkafka.ServiceDeps{Config: cfg, Book: processor.NewOrderBook(), Sink: kafkatest.NewRecorder()})
	err = svc.Wait(t, time.Minute)
	for _, want := range []string{"kafka.session_timeout 3s", "group.min.session.timeout.ms", "[26] Invalid Session Timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("service ended with %v, want an error saying %q", err, want)
		}
	}

	for _, session := range []time.Duration{config.MinSessionTimeout, config.MaxSessionTimeout} {
		_, _, d := setup(t)
		d.Config.Kafka.SessionTimeout, d.Config.Kafka.HeartbeatInterval = session, time.Second
		d.Sink = kafkatest.NewRecorder()
		ok := kafkatest.RunServiceWith(t, *d)
		kafkatest.WaitFor(t, time.Minute, fmt.Sprintf("a member with a %s session ready on the embedded broker", session), func() bool {
			return ok.Svc.Ready(context.Background()) == ""
		})
		ok.Stop(t)
	}
}
