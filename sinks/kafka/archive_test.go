package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
	qkafka "github.com/qfence/qfence/sinks/kafka"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
)

// TestOrdersAreArchivedOnceAcrossStarts: a start archives every order, and
// once the archive said they are stored their offsets are committed, so the
// next start archives only what came after (a new version, a revocation);
// while the archive fails nothing is committed, and a later start archives
// those orders again.
func TestOrdersAreArchivedOnceAcrossStarts(t *testing.T) {
	addr := kafkatest.StartBroker(t)
	cfg, k := kafkatest.KafkaAt(t, addr)
	order := func(i int) kafka.Message {
		id := fmt.Sprintf("p-%04d", i)
		return kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil, `{"patient_id":"%s","home":{"lat":55.75,"lon":37.62},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`, id)}
	}
	var first []kafka.Message
	for i := range 1000 {
		first = append(first, order(i))
	}
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Orders, first)
	archiveCfg := cfg.Kafka
	archiveCfg.GroupID = cfg.Kafka.GroupID + "-orders-archive"
	archive, err := kafkatest.NewClient(t, archiveCfg)
	if err != nil {
		t.Fatal(err)
	}
	committed := func() int64 {
		offs, err := archive.CommittedOffsets(t.Context(), cfg.Kafka.Topics.Orders, 4)
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, o := range offs {
			n += max(o, 0)
		}
		return n
	}
	// start reads the topic with an archive that stores (or fails to);
	// rows says how many rows it archived, asked how often it was asked
	// whether they are stored.
	var asked atomic.Int32
	start := func(stored error) (rows func() int, stop func()) {
		var mu sync.Mutex
		n := 0
		asked.Store(0)
		table := &qkafka.OrdersTable{Kafka: k, Book: processor.NewOrderBook(), Zones: nilZones, Metrics: pipeline.NewMetrics(prometheus.NewRegistry()),
			Log: kafkatest.Log(t), Producer: discard{},
			Archive:  func(pipeline.OrderRow) { mu.Lock(); n++; mu.Unlock() },
			Archived: func(done func(error)) { asked.Add(1); done(stored) }}
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		wg.Go(func() { _ = table.Run(ctx) })
		wg.Go(func() { _ = table.RunArchive(ctx) })
		kafkatest.WaitFor(t, time.Minute, "the orders loaded", table.Loaded)
		return func() int { mu.Lock(); defer mu.Unlock(); return n }, func() { cancel(); wg.Wait() }
	}

	rows, stop := start(nil)
	kafkatest.WaitFor(t, time.Minute, "the archive's offsets committed", func() bool { return committed() == 1000 })
	stop()
	if n := rows(); n != 1000 {
		t.Fatalf("the first start archived %d orders, want 1000", n)
	}

	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Orders, []kafka.Message{order(1), {Key: []byte("p-0002")}})
	rows, stop = start(errors.New("clickhouse is down"))
	kafkatest.WaitFor(t, time.Minute, "the new version and the revocation archived, and the archive asked", func() bool {
		return rows() == 2 && asked.Load() > 0
	})
	stop()
	if n, c := rows(), committed(); n != 2 || c != 1000 {
		t.Fatalf("the second start archived %d rows and left %d offsets committed, want 2 and 1000", n, c)
	}

	rows, stop = start(nil)
	kafkatest.WaitFor(t, time.Minute, "the archive's offsets committed", func() bool { return committed() == 1002 })
	stop()
	if n := rows(); n != 2 {
		t.Fatalf("the third start archived %d rows, want the 2 the failed archive never stored", n)
	}
}
