package main

import (
	"testing"
	"time"

	"github.com/qfence/qfence/sinks/clickhouse/chtest"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
	"github.com/qfence/qfence/sinks/local/nettest"
)

// netFault is one fault between qfence and its neighbours, on both links
// (qfence ↔ broker and qfence ↔ ClickHouse) at once.
type netFault struct {
	name  string
	toxic nettest.Toxic
	hold  time.Duration
	// breaks: nothing can get through while it lasts, so /readyz must say
	// 503 then.
	breaks bool
}

var netFaults = []netFault{
	{"latency 300±100 ms", nettest.Toxic{Type: "latency", Attributes: map[string]any{"latency": 300, "jitter": 100}}, 15 * time.Second, false},
	{"bandwidth 200 KB/s", nettest.Toxic{Type: "bandwidth", Attributes: map[string]any{"rate": 200}}, 15 * time.Second, false},
	{"reset_peer every 2 s", nettest.Toxic{Type: "reset_peer", Attributes: map[string]any{"timeout": 2000}}, 15 * time.Second, false},
	{"black hole for 20 s", nettest.Toxic{Type: "timeout", Attributes: map[string]any{"timeout": 0}}, 20 * time.Second, true},
	{"slow_close 3 s", nettest.Toxic{Type: "slow_close", Attributes: map[string]any{"delay": 3000}}, 15 * time.Second, false},
}

// TestNetworkFaults runs qfence (the binary) through 200k pings with a
// real TCP proxy (toxiproxy, embedded) in front of the broker and of
// ClickHouse, and puts one fault on both links while it works. After each:
// the events equal replay's by id, every ping's row is in ClickHouse once
// under FINAL and is the row replay stores (flags included), the peak RSS
// stays bounded, /readyz was 503 while nothing could get through and is
// 200 within 30 s of the fault's end; the time to recover is reported.
func TestNetworkFaults(t *testing.T) {
	for i, f := range netFaults {
		t.Run(f.name, func(t *testing.T) { testNetFault(t, f, uint64(20+i)) })
	}
}

func testNetFault(t *testing.T, f netFault, seed uint64) {
	kafkaAt := freeAddr(t)
	brokers := kafkatest.StartBrokers(t, []string{kafkaAt})
	kp := nettest.NewProxy(t, "kafka", kafkaAt, brokers.Addrs[0])
	cp := nettest.NewProxy(t, "clickhouse", freeAddr(t), chtest.Addr)
	cfg, k := kafkatest.KafkaAt(t, kp.Addr())
	ch := chtest.DB(t, chtest.Addr)
	d := kafkatest.GenData(seed, 10_000, 200_000, 0)
	// Everything is produced before qfence starts, so the test's own
	// producer does not go through the fault.
	kafkatest.Produce(t, kp.Addr(), cfg.Kafka.Topics.Orders, d.Orders)
	kafkatest.Produce(t, kp.Addr(), cfg.Kafka.Topics.Pings, d.Pings)
	metricsAddr := freeAddr(t)
	c := startChild(t, []string{"QFENCE_KAFKA_BROKERS=" + kp.Addr(), "QFENCE_CLICKHOUSE_ADDR=" + cp.Addr(),
		"QFENCE_CLICKHOUSE_DATABASE=" + ch.Database, "QFENCE_METRICS_LISTEN=" + metricsAddr, "QFENCE_LOG_LEVEL=" + childLogLevel(),
		"QFENCE_CLICKHOUSE_FLUSH_INTERVAL=200ms", "QFENCE_CLICKHOUSE_RETENTION_DAYS=3650", "QFENCE_CLICKHOUSE_TIMEOUT=3s",
		// A small budget makes the run last, so the fault meets it busy.
		"QFENCE_LIMITS_MAX_INFLIGHT_ROWS=10000"}, "run")
	base := "http://" + metricsAddr
	accepted := func() float64 {
		if f := scrape(t, base+"/metrics")["qfence_pings_total"]; f != nil {
			for _, m := range f.GetMetric() {
				if m.GetLabel()[0].GetValue() == "accepted" {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
	// The fault comes as soon as qfence has begun: it meets the drain of
	// the 200k pings (a few seconds without it) in full flow.
	kafkatest.WaitFor(t, time.Minute, "qfence ready and deciding", func() bool { return httpOK(base+"/readyz") && accepted() > 0 })

	before := accepted()
	kp.Add(t, f.toxic)
	cp.Add(t, f.toxic)
	faultStart := time.Now()
	sawNotReady := false
	peak := rss(c.cmd.Process.Pid)
	for time.Since(faultStart) < f.hold {
		if !httpOK(base + "/readyz") {
			sawNotReady = true
		}
		peak = max(peak, rss(c.cmd.Process.Pid))
		time.Sleep(250 * time.Millisecond)
	}
	during := accepted()
	kp.Clear(t)
	cp.Clear(t)
	cleared := time.Now()
	kafkatest.WaitFor(t, 30*time.Second, "/readyz 200 after the fault", func() bool {
		peak = max(peak, rss(c.cmd.Process.Pid))
		return httpOK(base + "/readyz")
	})
	readyAfter := time.Since(cleared)
	kafkatest.WaitFor(t, 3*time.Minute, "every ping committed after the fault", func() bool {
		peak = max(peak, rss(c.cmd.Process.Pid))
		return kafkatest.CaughtUp(t, k, cfg.Kafka.Topics.Pings)
	})
	caughtUp := time.Since(cleared)
	c.term(t, 20*time.Second)

	if f.breaks && !sawNotReady {
		t.Errorf("/readyz stayed 200 through %s", f.name)
	}
	if peak > 1<<30 {
		t.Errorf("peak RSS %d MiB, more than 1 GiB", peak>>20)
	}
	want, rows := kafkatest.Replay(t, cfg, d.Orders, kafkatest.ReadAll(t, k, cfg.Kafka.Topics.Pings), d.End)
	all, records := kafkatest.EventsByID(t, k, cfg.Kafka.Topics.Violations)
	got := kafkatest.BeforeEnd(t, all, d.End)
	kafkatest.SameEvents(t, got, want)
	conn := chtest.Conn(t, chtest.Addr)
	stored := chtest.Rows(t, conn, ch.Database)
	kafkatest.SameRows(t, stored, rows)
	if len(stored) != d.Valid {
		t.Errorf("ClickHouse holds %d distinct pings, want %d", len(stored), d.Valid)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+ch.Database+".events FINAL"); n != uint64(len(all)) {
		t.Errorf("ClickHouse holds %d events, the topic %d", n, len(all))
	}
	t.Logf("%s for %s: %.0f of %d pings decided at its start, %.0f by its end, ready %s after it (not ready during: %v), every ping committed %s after it; "+
		"peak RSS %d MiB; %d events (%d records; %d more, dated after the data, by the wall-clock watermark)", f.name, f.hold, before, d.Valid, during,
		readyAfter.Round(100*time.Millisecond), sawNotReady, caughtUp.Round(100*time.Millisecond), peak>>20, len(want), records, len(all)-len(got))
}

// rss is a process's resident set size in bytes (0 when unknown).
func rss(pid int) uint64 { return uint64(procStatus(pid, "VmRSS")) << 10 }
