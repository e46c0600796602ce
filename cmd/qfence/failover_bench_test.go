package main

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/qfence/qfence/sinks/clickhouse/chtest"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
)

// BenchmarkFailover measures a failover at size: two `qfence run` over 4
// partitions hold the state of QFENCE_BENCH_PATIENTS patients (default
// 200k), one is SIGKILLed, and the time is taken until the other owns all
// 4 partitions, their state restored, and is ready, with the default
// session timeout (10 s; QFENCE_BENCH_SESSION_TIMEOUT sets another). Its
// broker compacts hourly (see BenchmarkPassesStartup).
//
//	QFENCE_BENCH_PATIENTS=2000000 go test -run '^$' -bench Failover -benchtime 1x -timeout 30m ./cmd/qfence/
func BenchmarkFailover(b *testing.B) {
	n := 200_000
	if v, err := strconv.Atoi(os.Getenv("QFENCE_BENCH_PATIENTS")); err == nil && v > 0 {
		n = v
	}
	session := 10 * time.Second
	if v, err := time.ParseDuration(os.Getenv("QFENCE_BENCH_SESSION_TIMEOUT")); err == nil {
		session = v
	}
	{
		b.Run(fmt.Sprintf("patients=%dk/session_timeout=%s", n/1000, session), func(b *testing.B) {
			for b.Loop() {
				b.ReportMetric(failover(b, n, session).Seconds(), "s-to-failover")
			}
		})
	}
}

func failover(b *testing.B, n int, session time.Duration) time.Duration {
	addr := kafkatest.StartBrokerCompacting(b, time.Hour)
	cfg := kafkatest.Config(addr)
	ch := chtest.DB(b, chtest.Addr)
	k := kafkatest.Topics(b, cfg)
	orders, pings := make([]kafka.Message, n), make([]kafka.Message, n)
	// The pings are of the last two minutes, as a live deployment's: older
	// ones would have the idle watermark (which follows the clock) declare
	// every patient's signal lost at once, and the failover would measure
	// that sweep's checkpoint instead.
	from := time.Now().Add(-2 * time.Minute).UnixMilli()
	for i := range n {
		id := fmt.Sprintf("p-%08d", i)
		orders[i] = kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil, `{"patient_id":"%s","home":{"lat":55.75,"lon":37.62},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`, id)}
		pings[i] = kafka.Message{Key: []byte(id), Value: fmt.Appendf(nil, `{"patient_id":"%s","ts":%d,"lat":55.75,"lon":37.62,"accuracy_m":10}`,
			id, from+int64(i)*120_000/int64(n))}
	}
	kafkatest.Produce(b, addr, cfg.Kafka.Topics.Orders, orders)
	env := []string{"QFENCE_KAFKA_BROKERS=" + addr, "QFENCE_CLICKHOUSE_ADDR=" + chtest.Addr, "QFENCE_CLICKHOUSE_DATABASE=" + ch.Database,
		"QFENCE_CLICKHOUSE_RETENTION_DAYS=3650", "QFENCE_LOG_LEVEL=" + childLogLevel(), "QFENCE_KAFKA_SESSION_TIMEOUT=" + session.String()}
	var metrics [2]string
	var children [2]*child
	for i := range children {
		metrics[i] = freeAddr(b)
		children[i] = startChild(b, append(env, "QFENCE_METRICS_LISTEN="+metrics[i]), "run")
		kafkatest.WaitFor(b, 5*time.Minute, "an instance ready", func() bool { return httpOK("http://" + metrics[i] + "/readyz") })
	}
	kafkatest.Produce(b, addr, cfg.Kafka.Topics.Pings, pings)
	kafkatest.WaitFor(b, 10*time.Minute, "every ping committed", func() bool { return kafkatest.CaughtUp(b, k, cfg.Kafka.Topics.Pings) })
	owned := func(m string) int {
		fam, err := scrapeQuiet("http://" + m + "/metrics")
		if err != nil {
			return -1
		}
		return len(fam["qfence_partition_owned"].GetMetric())
	}
	kafkatest.WaitFor(b, time.Minute, "both instances owning partitions", func() bool { return owned(metrics[0]) > 0 && owned(metrics[1]) > 0 })
	start := time.Now()
	children[0].kill()
	kafkatest.WaitFor(b, 5*time.Minute, "the survivor owning every partition, ready", func() bool {
		return owned(metrics[1]) == 4 && httpOK("http://"+metrics[1]+"/readyz")
	})
	took := time.Since(start)
	children[1].term(b, 30*time.Second)
	return took
}
