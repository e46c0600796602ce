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

	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
	qkafka "github.com/qfence/qfence/sinks/kafka"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
)

// BenchmarkOrdersStartup reads an orders topic of QFENCE_BENCH_ORDERS
// orders (default 1M) over 4 partitions as one instance does at start: the
// whole topic as a global table, and co-partitioned, the 2 partitions an
// instance of two owns and the 1 of four. It reports the time until they
// are loaded and the heap they keep per instance.
//
//	QFENCE_BENCH_ORDERS=10000000 go test -run '^$' -bench OrdersStartup -benchtime 1x -timeout 30m ./sinks/kafka/
//
// Its broker compacts hourly, as BenchmarkPassesStartup's.
func BenchmarkOrdersStartup(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("QFENCE_BENCH_ORDERS")); err == nil && v > 0 {
		n = v
	}
	addr := kafkatest.StartBrokerCompacting(b, time.Hour)
	cfg, _ := kafkatest.KafkaAt(b, addr)
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		id := fmt.Sprintf("p-%08d", i)
		msgs[i] = kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil, `{"patient_id":"%s","home":{"lat":55.%06d,"lon":37.%06d},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z","ends_at":"2026-04-15T00:00:00Z","district":"district-%03d"}`,
			id, i%1000000, (i*7)%1000000, i%125)}
	}
	start := time.Now()
	kafkatest.Produce(b, addr, cfg.Kafka.Topics.Orders, msgs)
	b.Logf("%d orders produced in %s", n, time.Since(start).Round(time.Millisecond))
	msgs = nil
	k, err := kafkatest.NewClient(b, cfg.Kafka)
	if err != nil {
		b.Fatal(err)
	}
	for _, held := range []int{4, 2, 1} {
		name := "global"
		if held < 4 {
			name = fmt.Sprintf("co-partitioned/partitions=%d-of-4", held)
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				book := processor.NewOrderBook()
				table := &qkafka.OrdersTable{Kafka: k, Book: book, Zones: nilZones, Metrics: pipeline.NewMetrics(prometheus.NewRegistry()),
					Log: kafkatest.Log(b), Producer: discard{}}
				ctx, cancel := context.WithCancel(context.Background())
				start := time.Now()
				var releases []func()
				if held == 4 {
					done := make(chan error, 1)
					go func() { done <- table.Run(ctx) }()
					for !table.Loaded() {
						time.Sleep(10 * time.Millisecond)
					}
					releases = append(releases, func() { cancel(); <-done })
				} else {
					for p := range held {
						release, err := table.Hold(ctx, p)
						if err != nil {
							b.Fatal(err)
						}
						releases = append(releases, release)
					}
				}
				took := time.Since(start)
				runtime.GC()
				runtime.ReadMemStats(&after)
				orders := book.Len()
				for _, r := range releases {
					r()
				}
				cancel()
				if held == 4 && orders != n || orders == 0 {
					b.Fatalf("%d orders held", orders)
				}
				b.ReportMetric(took.Seconds(), "s-to-load")
				b.ReportMetric(float64(orders)/took.Seconds(), "orders/s")
				b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(1<<20), "held-MiB")
				b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(orders), "bytes/order")
			}
		})
	}
}

func nilZones() *geo.Zones { return nil }

// discard is a producer for dead letters a benchmark does not expect.
type discard struct{}

func (discard) Produce(_ context.Context, _ []pipeline.Record, done func(error)) { done(nil) }
