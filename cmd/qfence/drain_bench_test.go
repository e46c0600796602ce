package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	qch "github.com/qfence/qfence/sinks/clickhouse"
	"github.com/qfence/qfence/sinks/clickhouse/chtest"
	qkafka "github.com/qfence/qfence/sinks/kafka"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
	"github.com/qfence/qfence/sinks/local"

	"github.com/segmentio/kafka-go"

	"github.com/qfence/qfence/config"
)

// BenchmarkDrain is the end-to-end drain of issue 3: 2M pings for 100k
// patients preloaded into a `qfence broker` process, then `qfence run`
// (a child process, ClickHouse sink on) started; the time until every ping
// is decided and its row acknowledged by ClickHouse (the sink acknowledges
// after the insert). Commits follow every 5 s, so lag 0 is checked after,
// untimed: timing it would measure the commit cadence. In the same run, a
// plain kafka-go consumer-group reader drains the same topic with no
// processing: the baseline.
//
// It runs twice: with the default in-flight budget (limits.max_inflight_rows
// 200000) and with 500000. The sink inserts at once when half the budget
// waits for it, so the budget no longer caps the rate by the flush pace;
// what is left between the two is how long the pipeline waits for its
// budget while ClickHouse writes (backpressure-share), and memory
// (BENCHMARKS.md). A third run, tables=null, has the server discard the
// rows it receives (nullTables): with the server sharing qfence's cores,
// its sorting, compressing and merging of parts is a third of the
// machine's CPU in a drain, and this run shows qfence's pace without it.
// QFENCE_DRAIN_PROFILE=FILE saves a CPU profile of the daemon (FILE) and
// its heap (FILE.heap) while it drains; QFENCE_TEST_BINARY runs another
// build of qfence (an A/B comparison in the same session).
//
//	go test -run '^$' -bench '^BenchmarkDrain$' -benchtime 1x ./cmd/qfence/
func BenchmarkDrain(b *testing.B) {
	const patients, pings = 100_000, 2_000_000
	addr := freeAddr(b)
	startChild(b, nil, "broker", "--listen", addr, "--data-dir", b.TempDir())
	if err := qkafka.WaitKafka(context.Background(), addr, 30*time.Second); err != nil {
		b.Fatal(err)
	}
	cfg, _ := kafkatest.KafkaAt(b, addr)
	d := kafkatest.GenData(9, patients, pings, 0)
	kafkatest.Produce(b, addr, cfg.Kafka.Topics.Orders, d.Orders)
	kafkatest.Produce(b, addr, cfg.Kafka.Topics.Pings, d.Pings)
	for _, budget := range []int{200_000, 500_000} {
		b.Run(fmt.Sprintf("inflight=%dk", budget/1000), func(b *testing.B) {
			drain(b, addr, cfg, d, budget, false)
		})
	}
	b.Run("inflight=200k/tables=null", func(b *testing.B) {
		drain(b, addr, cfg, d, 200_000, true)
	})
}

// nullTables makes the database's pings, events and notifications tables
// Null tables of the same columns: the server receives every insert and
// keeps nothing, so it neither sorts, compresses and writes parts nor
// merges them. A materialized view counts the pings received. On a machine
// where ClickHouse shares qfence's two cores, that is qfence's own ceiling.
func nullTables(b *testing.B, ch config.ClickHouse) {
	ctx := context.Background()
	if err := qch.Migrate(ctx, ch, kafkatest.Log(b)); err != nil {
		b.Fatal(err)
	}
	conn := chtest.Conn(b, ch.Addr)
	for _, t := range []string{"pings", "events", "notifications"} {
		for _, q := range []string{"RENAME TABLE %[1]s.%[2]s TO %[1]s.%[2]s_kept", "CREATE TABLE %[1]s.%[2]s AS %[1]s.%[2]s_kept ENGINE = Null",
			"DROP TABLE %[1]s.%[2]s_kept"} {
			if err := conn.Exec(ctx, fmt.Sprintf(q, ch.Database, t)); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := conn.Exec(ctx, "CREATE MATERIALIZED VIEW "+ch.Database+".pings_seen ENGINE = Memory AS SELECT toUInt64(count()) AS n FROM "+ch.Database+".pings"); err != nil {
		b.Fatal(err)
	}
}

func drain(b *testing.B, addr string, cfg *config.Config, d kafkatest.Dataset, budget int, null bool) {
	const pings = 2_000_000
	for b.Loop() {
		rawRate, rawCPU := drainRaw(b, addr, cfg.Kafka.Topics.Pings, pings)
		ch := chtest.DB(b, chtest.Addr)
		// The parts' row counts, not count(): on 18.16 count() reads a
		// column of every part, and twenty of them a second took CPU from
		// the drain being measured.
		stored := "SELECT sum(rows) FROM system.parts WHERE active AND database = '" + ch.Database + "' AND table = 'pings'"
		if null {
			nullTables(b, ch)
			stored = "SELECT sum(n) FROM " + ch.Database + ".pings_seen"
		}
		metrics := freeAddr(b)
		start := time.Now()
		// Each run has its own group and its own state topic: another run's
		// checkpoints would make this one's pings duplicates.
		group := "drain-" + strconv.FormatInt(time.Now().UnixNano(), 10)
		env := []string{}
		if os.Getenv("QFENCE_DRAIN_PROFILE") != "" {
			env = append(env, "QFENCE_METRICS_PPROF=true")
		}
		c := startChild(b, append(env, "QFENCE_KAFKA_BROKERS="+addr, "QFENCE_KAFKA_GROUP_ID="+group, "QFENCE_KAFKA_TOPICS_STATE="+group+"-state", "QFENCE_CLICKHOUSE_ADDR="+chtest.Addr,
			"QFENCE_CLICKHOUSE_DATABASE="+ch.Database, "QFENCE_CLICKHOUSE_RETENTION_DAYS=3650", "QFENCE_METRICS_LISTEN="+metrics,
			"QFENCE_LOG_LEVEL=warn", "QFENCE_LIMITS_MAX_INFLIGHT_ROWS="+strconv.Itoa(budget)), "run")
		kcfg := cfg.Kafka
		kcfg.GroupID = group
		gk, err := kafkatest.NewClient(b, kcfg)
		if err != nil {
			b.Fatal(err)
		}
		conn := chtest.Conn(b, chtest.Addr)
		var peakRSS int64
		if prof := os.Getenv("QFENCE_DRAIN_PROFILE"); prof != "" {
			go func() { // a CPU profile of the run while it drains, then its heap
				time.Sleep(2 * time.Second)
				for _, q := range []struct{ path, file string }{{"profile?seconds=5", prof}, {"heap", prof + ".heap"}} {
					resp, err := http.Get("http://" + metrics + "/debug/pprof/" + q.path)
					if err != nil {
						return
					}
					f, _ := os.Create(q.file)
					_, _ = io.Copy(f, resp.Body)
					f.Close()
					resp.Body.Close()
				}
			}()
		}
		// How much of the drain the pipeline waits for its budget: /readyz
		// says back-pressure then.
		var polls, blocked atomic.Int64
		stopPoll := make(chan struct{})
		polled := make(chan struct{})
		go func() {
			defer close(polled)
			for {
				select {
				case <-stopPoll:
					return
				case <-time.After(20 * time.Millisecond):
				}
				resp, err := http.Get("http://" + metrics + "/readyz")
				if err != nil {
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				polls.Add(1)
				if strings.Contains(string(body), "back-pressure") {
					blocked.Add(1)
				}
			}
		}()
		kafkatest.WaitFor(b, 10*time.Minute, "every ping stored", func() bool {
			peakRSS = max(peakRSS, procStatus(c.cmd.Process.Pid, "VmHWM"))
			var n uint64
			err := conn.QueryRow(context.Background(), stored).Scan(&n)
			return err == nil && n >= uint64(d.Valid)
		})
		took := time.Since(start)
		close(stopPoll)
		<-polled
		cpu := procCPU(c.cmd.Process.Pid)
		kafkatest.WaitFor(b, 2*time.Minute, "every ping committed", func() bool {
			lag, err := gk.Lag(context.Background(), kcfg.Topics.Pings)
			return err == nil && lag == 0
		})
		c.term(b, 30*time.Second)
		rate := float64(pings) / took.Seconds()
		b.ReportMetric(rate, "pings/s")
		b.ReportMetric(rawRate, "raw-reader-msgs/s")
		b.ReportMetric(rate/rawRate, "ratio-vs-raw")
		b.ReportMetric(cpu.Seconds()/pings*1e6, "cpu-us/ping")
		b.ReportMetric(rawCPU.Seconds()/pings*1e6, "raw-cpu-us/msg")
		b.ReportMetric(float64(peakRSS)/1024, "peak-rss-MiB")
		b.ReportMetric(float64(blocked.Load())/float64(max(polls.Load(), 1)), "backpressure-share")
	}
}

// drainRaw reads the whole topic with a plain consumer-group reader.
func drainRaw(b *testing.B, addr, topic string, n int) (rate float64, cpu time.Duration) {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, GroupID: "raw-" + strconv.FormatInt(time.Now().UnixNano(), 10),
		Topic: topic, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 250 * time.Millisecond, CommitInterval: time.Second, QueueCapacity: 4096})
	defer r.Close()
	cpu0 := selfCPU()
	start := time.Now()
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := r.ReadMessage(ctx)
		cancel()
		if err != nil {
			b.Fatalf("raw reader after %d messages: %v", i, err)
		}
	}
	return float64(n) / time.Since(start).Seconds(), selfCPU() - cpu0
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is a live process's user+system CPU time.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // clock ticks (USER_HZ = 100)
}

// procStatus reads a kB field of /proc/PID/status.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field+":") {
			v, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return v
		}
	}
	return 0
}

// BenchmarkGroupDrain drains 2M pings (100k patients, 12 partitions) with
// one, two and three `qfence run` instances in one group, into one
// ClickHouse server and into a cluster of two shards: the rate, and the
// CPU per ping summed over the instances (the number the README's sizing
// rests on). On two cores the instances share the machine with the broker
// and ClickHouse, so the point is that the work spreads and nothing is
// lost, not speed.
//
//	go test -run '^$' -bench GroupDrain -benchtime 1x -timeout 30m ./cmd/qfence/
func BenchmarkGroupDrain(b *testing.B) {
	const patients, pings = 100_000, 2_000_000
	addr := freeAddr(b)
	startChild(b, nil, "broker", "--listen", addr, "--data-dir", b.TempDir())
	if err := qkafka.WaitKafka(context.Background(), addr, 30*time.Second); err != nil {
		b.Fatal(err)
	}
	cfg := kafkatest.Config(addr)
	cfg.Kafka.Partitions = 12
	kafkatest.Topics(b, cfg)
	d := kafkatest.GenData(9, patients, pings, 0)
	kafkatest.Produce(b, addr, cfg.Kafka.Topics.Orders, d.Orders)
	kafkatest.Produce(b, addr, cfg.Kafka.Topics.Pings, d.Pings)
	servers := chtest.Cluster(b, 2)
	for _, target := range []string{"server", "cluster"} {
		for n := 1; n <= 3; n++ {
			b.Run(fmt.Sprintf("clickhouse=%s/instances=%d", target, n), func(b *testing.B) {
				for b.Loop() {
					groupDrain(b, addr, d, n, target == "cluster", servers[0].Addr)
				}
			})
		}
	}
}

func groupDrain(b *testing.B, addr string, d kafkatest.Dataset, n int, cluster bool, clusterAddr string) {
	group := "gdrain-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	db := "d" + strconv.FormatInt(time.Now().UnixNano(), 10)
	chAddr, env := chtest.Addr, []string{}
	if cluster {
		chAddr, env = clusterAddr, []string{"QFENCE_CLICKHOUSE_CLUSTER=" + local.ClusterName}
	}
	env = append(env, "QFENCE_KAFKA_BROKERS="+addr, "QFENCE_KAFKA_GROUP_ID="+group, "QFENCE_KAFKA_TOPICS_STATE="+group+"-state",
		"QFENCE_KAFKA_PARTITIONS=12", "QFENCE_CLICKHOUSE_ADDR="+chAddr, "QFENCE_CLICKHOUSE_DATABASE="+db,
		"QFENCE_CLICKHOUSE_RETENTION_DAYS=3650", "QFENCE_LOG_LEVEL=warn")
	// The schema first, so that the instances' own migrations do not race.
	m := startChild(b, env, "migrate")
	<-m.done
	start := time.Now()
	var children []*child
	for range n {
		children = append(children, startChild(b, append(env, "QFENCE_METRICS_LISTEN="+freeAddr(b)), "run"))
	}
	conn := chtest.Conn(b, chAddr)
	kafkatest.WaitFor(b, 10*time.Minute, "every ping stored", func() bool {
		var c uint64
		err := conn.QueryRow(context.Background(), "SELECT count() FROM "+db+".pings").Scan(&c)
		return err == nil && c >= uint64(d.Valid)
	})
	took := time.Since(start)
	var cpu time.Duration
	for _, c := range children {
		cpu += procCPU(c.cmd.Process.Pid)
	}
	for _, c := range children {
		c.term(b, 30*time.Second)
	}
	b.ReportMetric(float64(len(d.Pings))/took.Seconds(), "pings/s")
	b.ReportMetric(cpu.Seconds()/float64(len(d.Pings))*1e6, "cpu-us/ping")
}
