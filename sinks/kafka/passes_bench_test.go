package kafka_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
	qkafka "github.com/qfence/qfence/sinks/kafka"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
)

// BenchmarkPassesStartup reads a passes topic of a whole city at start:
// QFENCE_BENCH_PASSES passes (default 1M; BENCHMARKS.md reports 10M), 1 %
// of them for patients under an order. It reports the time until the table
// is loaded, the read rate, and the heap the held passes keep. Run it as
//
//	QFENCE_BENCH_PASSES=10000000 go test -run '^$' -bench PassesStartup -benchtime 1x -timeout 30m ./sinks/kafka/
//
// Its broker compacts hourly: the embedded broker's every 15 s would stall
// it at ten million passes (kfake compacts in its request loop; a
// compaction of them outlasts the interval), and this measures qfence's
// reading, not kfake's cleaner.
func BenchmarkPassesStartup(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("QFENCE_BENCH_PASSES")); err == nil && v > 0 {
		n = v
	}
	addr := kafkatest.StartBrokerCompacting(b, time.Hour)
	cfg, k := kafkatest.KafkaAt(b, addr)
	orders := processor.NewOrderBook()
	now := time.Now().UTC()
	msgs := make([]kafka.Message, 0, n)
	for i := range n {
		patient := fmt.Sprintf("resident-%08d", i)
		if i%100 == 0 {
			patient = fmt.Sprintf("p-%08d", i)
			orders.Put(&processor.Order{PatientID: patient, RadiusM: 50, StartsAt: now.Add(-time.Hour).UnixMilli(), EndsAt: now.Add(24 * time.Hour).UnixMilli()})
		}
		msgs = append(msgs, passMsg(fmt.Sprintf("PX-%08d", i), patient, now.Add(-time.Hour), now.Add(time.Hour)))
	}
	start := time.Now()
	kafkatest.Produce(b, addr, cfg.Kafka.Topics.Passes, msgs)
	b.Logf("%d passes produced in %s", n, time.Since(start).Round(time.Millisecond))
	msgs = nil
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		table := &qkafka.PassesTable{Kafka: k, Book: processor.NewPassBook(), Orders: orders, Metrics: pipeline.NewMetrics(prometheus.NewRegistry()),
			Log: kafkatest.Log(b), Now: time.Now, Decoder: processor.PassDecoder{MaxDuration: 12 * time.Hour}}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- table.Run(ctx) }()
		for !table.Loaded() {
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&after)
		cancel()
		<-done
		if table.Book.Len() != n/100 {
			b.Fatalf("%d passes held, want %d", table.Book.Len(), n/100)
		}
		b.ReportMetric(took.Seconds(), "s-to-load")
		b.ReportMetric(float64(n)/took.Seconds(), "passes/s")
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(1<<20), "held-MiB")
	}
}
