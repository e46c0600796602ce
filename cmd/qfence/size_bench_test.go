package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/qfence/qfence/sinks/clickhouse/chtest"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
)

// BenchmarkReadyAtSize starts whole `qfence run` processes over an orders
// topic of QFENCE_BENCH_ORDERS orders (default 1M; 4 partitions) and
// reports the time until every one is ready and the largest peak RSS among
// them (VmHWM: the whole process, the collector's headroom included): one
// instance holding the global table, and two and three instances with
// orders.co_partitioned; each first on a fresh deployment (its start
// archives every order in ClickHouse) and then restarted (it archives only
// what is new). QFENCE_BENCH_GOMEMLIMIT sets the instances' GOMEMLIMIT.
// Its broker compacts hourly (see BenchmarkPassesStartup).
//
//	QFENCE_BENCH_ORDERS=10000000 go test -run '^$' -bench ReadyAtSize -benchtime 1x -timeout 60m ./cmd/qfence/
func BenchmarkReadyAtSize(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("QFENCE_BENCH_ORDERS")); err == nil && v > 0 {
		n = v
	}
	addr := kafkatest.StartBrokerCompacting(b, time.Hour)
	cfg := kafkatest.Config(addr)
	ch := chtest.DB(b, chtest.Addr)
	kafkatest.Topics(b, cfg)
	const chunk = 1_000_000
	start := time.Now()
	for from := 0; from < n; from += chunk {
		msgs := make([]kafka.Message, min(chunk, n-from))
		for j := range msgs {
			i := from + j
			id := fmt.Sprintf("p-%08d", i)
			msgs[j] = kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil, `{"patient_id":"%s","home":{"lat":55.%06d,"lon":37.%06d},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z","ends_at":"2026-04-15T00:00:00Z","district":"district-%03d"}`,
				id, i%1000000, (i*7)%1000000, i%125)}
		}
		kafkatest.Produce(b, addr, cfg.Kafka.Topics.Orders, msgs)
	}
	b.Logf("%d orders produced in %s", n, time.Since(start).Round(time.Second))
	for _, instances := range []int{1, 2, 3} {
		name := "global/instances=1"
		if instances > 1 {
			name = fmt.Sprintf("co-partitioned/instances=%d", instances)
		}
		b.Run(fmt.Sprintf("orders=%dk/%s", n/1000, name), func(b *testing.B) {
			for b.Loop() {
				env := []string{"QFENCE_KAFKA_BROKERS=" + addr, "QFENCE_CLICKHOUSE_ADDR=" + chtest.Addr, "QFENCE_CLICKHOUSE_DATABASE=" + ch.Database,
					"QFENCE_LOG_LEVEL=" + childLogLevel(), "QFENCE_KAFKA_GROUP_ID=" + strings.ReplaceAll(b.Name(), "/", "-"),
					"QFENCE_ORDERS_CO_PARTITIONED=" + strconv.FormatBool(instances > 1)}
				if v := os.Getenv("QFENCE_BENCH_GOMEMLIMIT"); v != "" {
					env = append(env, "GOMEMLIMIT="+v)
				}
				for _, run := range []string{"first", "restart"} {
					took, peak := startAtSize(b, env, instances)
					b.ReportMetric(took.Seconds(), "s-to-ready-"+run)
					b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB-"+run)
				}
			}
		})
	}
}

// startAtSize starts instances with env, waits until every one is ready,
// stops them and returns the time it took and their largest peak RSS (KiB).
func startAtSize(b *testing.B, env []string, instances int) (time.Duration, int64) {
	start := time.Now()
	children, metrics := make([]*child, instances), make([]string, instances)
	for i := range children {
		metrics[i] = freeAddr(b)
		children[i] = startChild(b, append(env, "QFENCE_METRICS_LISTEN="+metrics[i]), "run")
	}
	kafkatest.WaitFor(b, 20*time.Minute, "every instance ready", func() bool {
		for _, m := range metrics {
			if !httpOK("http://" + m + "/readyz") {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	var peak int64
	for _, c := range children {
		peak = max(peak, procStatus(c.cmd.Process.Pid, "VmHWM"))
	}
	for _, c := range children {
		c.term(b, time.Minute)
	}
	return took, peak
}
