package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
)

// TestRestoreReadsToTheEndAndSurvivesAnEmptiedPartition: Restore returns
// every record in order, and returns at once (instead of waiting for
// records that will never come) when compaction or retention has moved the
// log start to the end.
func TestRestoreReadsToTheEndAndSurvivesAnEmptiedPartition(t *testing.T) {
	c, err := kfake.NewCluster(kfake.Ports(0), kfake.NumBrokers(1), kfake.DefaultNumPartitions(4))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg, k := kafkatest.KafkaAt(t, c.ListenAddrs()[0])
	log := k.NewChangelog()
	defer log.Close()
	recs := []processor.StateRecord{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}, {Key: "a", Value: nil}}
	if err := log.Checkpoint(t.Context(), 2, recs); err != nil {
		t.Fatal(err)
	}
	var got []string
	n, err := log.Restore(t.Context(), 2, func(key string, value []byte) error {
		got = append(got, key+"="+string(value))
		return nil
	})
	if err != nil || n != 3 || len(got) != 3 || got[0] != "a=1" || got[2] != "a=" {
		t.Fatalf("restored %d records %v (%v), want a=1 b=2 a=<tombstone>", n, got, err)
	}
	if err := c.DeleteRecords(cfg.Kafka.Topics.State, 2, 3); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if n, err := log.Restore(ctx, 2, func(string, []byte) error { return nil }); err != nil || n != 0 {
		t.Fatalf("an emptied partition restored %d records, err %v; want 0 at once", n, err)
	}
}

// A checkpoint larger than a chunk (a sweep can make every patient of a
// partition dirty) arrives whole and in order, the meta record last; its
// records are the size of a patient's state, so that a chunk is larger than
// the broker takes in one batch (Kafka's default max.message.bytes, 1 MB:
// a two-million-patient failover hung retrying a 2 MB batch).
func TestACheckpointOfManyChunksKeepsItsOrder(t *testing.T) {
	addr := kafkatest.StartBroker(t)
	_, k := kafkatest.KafkaAt(t, addr)
	log := k.NewChangelog()
	defer log.Close()
	const n = 25_001
	recs := make([]processor.StateRecord, 0, n+1)
	for i := range n {
		recs = append(recs, processor.StateRecord{Key: fmt.Sprintf("p-%08d", i), Value: fmt.Appendf(nil, "%0200d", i)})
	}
	recs = append(recs, processor.StateRecord{Key: processor.MetaKey, Value: []byte("meta")})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := log.Checkpoint(ctx, 1, recs); err != nil {
		t.Fatal(err)
	}
	i := 0
	got, err := log.Restore(t.Context(), 1, func(key string, value []byte) error {
		if i < len(recs) && (key != recs[i].Key || string(value) != string(recs[i].Value)) {
			return fmt.Errorf("record %d is %s=%s, want %s=%s", i, key, value, recs[i].Key, recs[i].Value)
		}
		i++
		return nil
	})
	if err != nil || got != len(recs) {
		t.Fatalf("restored %d records (%v), want %d in the order written", got, err, len(recs))
	}
}
