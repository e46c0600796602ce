package kafka_test

import (
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qfence/qfence/config/contract"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
)

// TestRunMatchesReplay is the differential test: 200k pings for 10k
// patients through the broker, the consumer group and the partition loops
// give the same set of events and notifications, byte for byte, as
// replaying each partition's messages through the engine; with check-ins
// answered and failed, random requests (in run and replay alike), and
// mislocated phones whose episodes recur after an answer taught a circle.
// It runs with the orders as a global table and co-partitioned with pings.
func TestRunMatchesReplay(t *testing.T) {
	for _, co := range []bool{false, true} {
		t.Run(map[bool]string{false: "orders=global", true: "orders=co-partitioned"}[co], func(t *testing.T) { testRunMatchesReplay(t, co) })
	}
}

func testRunMatchesReplay(t *testing.T, coPartitioned bool) {
	addr := kafkatest.StartBroker(t)
	cfg, k := kafkatest.KafkaAt(t, addr)
	cfg.Checkins.RandomPerDay = 4
	cfg.Orders.CoPartitioned = coPartitioned
	d := kafkatest.GenData(1, 10_000, 200_000, 0)
	kafkatest.Mislocate(t, &d)
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Orders, d.Orders)
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Pings, d.Pings)
	now := func() time.Time { return d.End }
	sink := kafkatest.NewRecorder()
	start := time.Now()
	svc := kafkatest.RunService(t, cfg, processor.NewOrderBook(), sink, now)
	kafkatest.WaitFor(t, 3*time.Minute, "the group to commit every ping", func() bool { return kafkatest.CaughtUp(t, k, cfg.Kafka.Topics.Pings) })
	elapsed := time.Since(start)
	svc.Stop(t)

	replayed := kafkatest.ReplayAll(t, cfg, d.Orders, kafkatest.ReadAll(t, k, cfg.Kafka.Topics.Pings), d.End)
	want := replayed.Events
	got, total := kafkatest.EventsByID(t, k, cfg.Kafka.Topics.Violations)
	if len(want) < 1000 {
		t.Fatalf("replay gave only %d events: the data no longer exercises the rules", len(want))
	}
	kafkatest.SameEvents(t, got, want)
	notes, _ := kafkatest.EventsByID(t, k, cfg.Kafka.Topics.Notifications)
	kafkatest.SameEvents(t, notes, replayed.Notifications)
	byType := map[string]int{}
	for _, e := range want {
		var v struct{ Type, Reason string }
		_ = json.Unmarshal([]byte(e), &v)
		byType[v.Type+"/"+v.Reason]++
	}
	for _, typ := range []string{"checkin_requested/random", "checkin_requested/breach_started", "checkin_requested/signal_lost",
		"checkin_failed/", "breach_ended/checkin", "checkin_missed/", "mislocation_learned/"} {
		if byType[typ] == 0 {
			t.Errorf("no %s event: the data no longer exercises check-ins (%v)", typ, byType)
		}
	}
	note, err := contract.Schema(contract.Notification)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range notes {
		if err := contract.Validate(note, []byte(n)); err != nil {
			t.Fatalf("notification %s: %v", n, err)
		}
	}
	event, err := contract.Schema(contract.Event)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range got {
		if err := contract.Validate(event, []byte(e)); err != nil {
			t.Fatalf("event %s: %v", e, err)
		}
	}
	unique, stored := sink.Count()
	if unique != d.Valid {
		t.Errorf("sink holds %d distinct pings, want %d", unique, d.Valid)
	}
	t.Logf("%d pings in %s (%.0f/s); %d events (%d records), %d notifications, %d rows (%d stored twice); %v",
		len(d.Pings), elapsed.Round(time.Millisecond), float64(len(d.Pings))/elapsed.Seconds(), len(want), total, len(notes), unique, stored-unique, byType)
}

// TestRunMatchesReplayAttested is the differential test of contract 2.3:
// with check-in keys configured, enrolled phones, second phones at home,
// signed and forged check-ins, run and replay give the same events.
func TestRunMatchesReplayAttested(t *testing.T) {
	addr := kafkatest.StartBroker(t)
	cfg, k := kafkatest.KafkaAt(t, addr)
	cfg.Checkins.RandomPerDay = 4
	d := kafkatest.GenData(2, 2_000, 40_000, 0)
	kafkatest.Mislocate(t, &d)
	jwks := kafkatest.Attest(t, &d, ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)), "k1")
	keys := filepath.Join(t.TempDir(), "keys.jwks")
	if err := os.WriteFile(keys, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cfg.UseCheckinKeys(keys); err != nil {
		t.Fatal(err)
	}
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Orders, d.Orders)
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Pings, d.Pings)
	now := func() time.Time { return d.End }
	sink := kafkatest.NewRecorder()
	svc := kafkatest.RunService(t, cfg, processor.NewOrderBook(), sink, now)
	kafkatest.WaitFor(t, 3*time.Minute, "the group to commit every ping", func() bool { return kafkatest.CaughtUp(t, k, cfg.Kafka.Topics.Pings) })
	svc.Stop(t)

	replayed := kafkatest.ReplayAll(t, cfg, d.Orders, kafkatest.ReadAll(t, k, cfg.Kafka.Topics.Pings), d.End)
	got, _ := kafkatest.EventsByID(t, k, cfg.Kafka.Topics.Violations)
	kafkatest.SameEvents(t, got, replayed.Events)
	byType := map[string]int{}
	for _, e := range replayed.Events {
		var v struct{ Type, Reason string }
		_ = json.Unmarshal([]byte(e), &v)
		byType[v.Type+"/"+v.Reason]++
	}
	for _, typ := range []string{"checkin_rejected/mismatch", "device_mismatch/", "breach_ended/checkin", "mislocation_learned/"} {
		if byType[typ] == 0 {
			t.Errorf("no %s event: the data no longer exercises contract 2.3 (%v)", typ, byType)
		}
	}
	if unique, _ := sink.Count(); unique != d.Valid {
		t.Errorf("sink holds %d distinct pings, want %d", unique, d.Valid)
	}
	t.Logf("%d events by type %v", len(got), byType)
}
