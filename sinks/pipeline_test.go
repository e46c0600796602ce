package sinks

import (
	"testing"
	"time"

	"github.com/qfence/qfence/processor"
)

// TestRunMatchesReplay is the differential test: 200k pings for 10k
// patients through the broker, the consumer group and the partition loops
// give the same set of events, byte for byte, as replaying each partition's
// messages through the engine.
func TestRunMatchesReplay(t *testing.T) {
	addr := startBroker(t)
	cfg, k := kafkaAt(t, addr)
	d := genData(1, 10_000, 200_000, 0)
	produce(t, addr, cfg.Kafka.Topics.Orders, d.orders)
	produce(t, addr, cfg.Kafka.Topics.Pings, d.pings)
	now := func() time.Time { return d.end }
	sink := newRecorder()
	start := time.Now()
	svc := runService(t, cfg, processor.NewOrderBook(), sink, now)
	waitFor(t, 3*time.Minute, "the group to commit every ping", func() bool { return caughtUp(t, k, cfg.Kafka.Topics.Pings) })
	elapsed := time.Since(start)
	svc.stop(t)

	want := replayPartitions(t, cfg, d.orders, readAll(t, k, cfg.Kafka.Topics.Pings), d.end)
	got, total := eventsByID(t, k, cfg.Kafka.Topics.Violations)
	if len(want) < 1000 {
		t.Fatalf("replay gave only %d events: the data no longer exercises the rules", len(want))
	}
	sameEvents(t, got, want)
	unique, stored := sink.count()
	if unique != d.valid {
		t.Errorf("sink holds %d distinct pings, want %d", unique, d.valid)
	}
	t.Logf("%d pings in %s (%.0f/s); %d events (%d records), %d rows (%d stored twice)",
		len(d.pings), elapsed.Round(time.Millisecond), float64(len(d.pings))/elapsed.Seconds(), len(want), total, unique, stored-unique)
}
