package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/qfence/qfence/sinks/clickhouse/chtest"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
	"github.com/qfence/qfence/sinks/local"
)

// owners samples which live instance owns which partition, and remembers
// any instant at which two owned the same one.
type owners struct {
	mu       sync.Mutex
	overlaps []string
	samples  int
}

func (o *owners) watch(ctx context.Context, metrics func() map[string]string) {
	for ctx.Err() == nil {
		owner := map[string]string{} // partition → instance
		for name, addr := range metrics() {
			fam, err := scrapeQuiet("http://" + addr + "/metrics")
			if err != nil {
				continue // not up (or killed): owns nothing live
			}
			for _, m := range fam["qfence_partition_owned"].GetMetric() {
				p := m.GetLabel()[0].GetValue()
				if prev, ok := owner[p]; ok {
					o.mu.Lock()
					o.overlaps = append(o.overlaps, fmt.Sprintf("partition %s owned by %s and %s at once", p, prev, name))
					o.mu.Unlock()
				}
				owner[p] = name
			}
		}
		o.mu.Lock()
		o.samples++
		o.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAGroupOverACluster runs three `qfence run` instances as one consumer
// group over a 12-partition pings topic, writing to a two-shard ClickHouse
// cluster (clickhouse.cluster). In the middle of 300k pings one instance
// is SIGKILLed and another added; then one shard is stopped for 30 s while
// 50k more arrive. The events equal replay's by id, no partition has two
// live owners at any sampled instant, every ping is stored once (each
// patient on one shard), readiness turned false on every instance while
// the shard was away, and the lag returns to 0.
func TestAGroupOverACluster(t *testing.T) {
	servers := chtest.Cluster(t, 2)
	addr := kafkatest.StartBroker(t)
	cfg := kafkatest.Config(addr)
	cfg.Kafka.Partitions = 12
	k := kafkatest.Topics(t, cfg)
	d := kafkatest.GenData(41, 10_000, 350_000, 0)
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Orders, d.Orders)
	env := []string{"QFENCE_KAFKA_BROKERS=" + addr, "QFENCE_KAFKA_PARTITIONS=12", "QFENCE_CLICKHOUSE_ADDR=" + servers[0].Addr,
		"QFENCE_CLICKHOUSE_CLUSTER=" + local.ClusterName, "QFENCE_CLICKHOUSE_DATABASE=qfence", "QFENCE_CLICKHOUSE_TIMEOUT=3s",
		"QFENCE_CLICKHOUSE_FLUSH_INTERVAL=200ms", "QFENCE_CLICKHOUSE_RETENTION_DAYS=3650", "QFENCE_LOG_LEVEL=" + childLogLevel()}
	migrate := startChild(t, env, "migrate")
	<-migrate.done
	if code := migrate.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("qfence migrate on the cluster exited %d", code)
	}
	var mu sync.Mutex
	live := map[string]string{} // instance → metrics address
	children := map[string]*child{}
	start := func(name string) {
		m := freeAddr(t)
		c := startChild(t, append(env, "QFENCE_METRICS_LISTEN="+m), "run")
		kafkatest.WaitFor(t, time.Minute, name+" ready", func() bool { return httpOK("http://" + m + "/readyz") })
		mu.Lock()
		live[name], children[name] = m, c
		mu.Unlock()
	}
	for _, name := range []string{"a", "b", "c"} {
		start(name)
	}
	var o owners
	ctx, stop := context.WithCancel(t.Context())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		o.watch(ctx, func() map[string]string {
			mu.Lock()
			defer mu.Unlock()
			out := map[string]string{}
			for k, v := range live {
				out[k] = v
			}
			return out
		})
	}()
	defer func() { stop(); <-watched }()

	chunk := 100_000
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Pings, d.Pings[:chunk])
	kafkatest.WaitFor(t, time.Minute, "some pings decided", func() bool { return committed(k, cfg.Kafka.Topics.Pings) > 0 })
	children["b"].kill()
	mu.Lock()
	delete(live, "b")
	mu.Unlock()
	t.Log("instance b SIGKILLed")
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Pings, d.Pings[chunk:2*chunk])
	start("d")
	t.Log("instance d added")
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Pings, d.Pings[2*chunk:3*chunk])
	kafkatest.WaitFor(t, 3*time.Minute, "300k pings committed", func() bool { return committed(k, cfg.Kafka.Topics.Pings) >= int64(3*chunk) })

	// One shard away for 30 s.
	if err := servers[1].Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = servers[1].Signal(syscall.SIGCONT)
		}
	}()
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Pings, d.Pings[3*chunk:])
	notReady := map[string]bool{}
	before := committed(k, cfg.Kafka.Topics.Pings)
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); {
		for name, m := range live {
			if !httpOK("http://" + m + "/readyz") {
				notReady[name] = true
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	during := committed(k, cfg.Kafka.Topics.Pings) - before
	if err := servers[1].Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	back := time.Now()
	kafkatest.WaitFor(t, 3*time.Minute, "every ping committed after the shard returned", func() bool { return kafkatest.CaughtUp(t, k, cfg.Kafka.Topics.Pings) })
	t.Logf("shard away 30 s: %d of %d new pings committed meanwhile (the rows of the other shard's patients wait with them); caught up %s after it returned",
		during, len(d.Pings)-3*chunk, time.Since(back).Round(100*time.Millisecond))
	for name := range live {
		if !notReady[name] {
			t.Errorf("instance %s stayed ready while a shard was away", name)
		}
	}
	stop()
	<-watched
	for _, name := range []string{"a", "c", "d"} {
		children[name].term(t, 20*time.Second)
	}

	if len(o.overlaps) > 0 {
		t.Errorf("%d sampled instants with two owners, e.g. %s", len(o.overlaps), o.overlaps[0])
	}
	want := kafkatest.ReplayPartitions(t, cfg, d.Orders, kafkatest.ReadAll(t, k, cfg.Kafka.Topics.Pings), d.End)
	all, records := kafkatest.EventsByID(t, k, cfg.Kafka.Topics.Violations)
	got := kafkatest.BeforeEnd(t, all, d.End)
	kafkatest.SameEvents(t, got, want)
	conn := chtest.Conn(t, servers[0].Addr)
	if n := chtest.Count(t, conn, "SELECT count() FROM qfence.pings FINAL"); n != uint64(d.Valid) {
		t.Errorf("the cluster holds %d distinct pings, want %d", n, d.Valid)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM qfence.events FINAL"); n != uint64(len(all)) {
		t.Errorf("the cluster holds %d events, the topic %d", n, len(all))
	}
	var perShard []uint64
	for _, s := range servers {
		perShard = append(perShard, chtest.Count(t, chtest.Conn(t, s.Addr), "SELECT count() FROM qfence.pings_local FINAL"))
	}
	t.Logf("%d events as replay (%d more, dated after the data, by the wall-clock watermark; %d records in all), pings per shard %v, %d ownership samples",
		len(want), len(all)-len(got), records, perShard, o.samples)
}

// scrapeQuiet reads a /metrics page, or says why it could not.
func scrapeQuiet(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(resp.Body)
}
