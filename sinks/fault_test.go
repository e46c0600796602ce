package sinks

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/processor"
)

func freeAddr(t testing.TB) string {
	t.Helper()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
}

// child is a qfence process run by a test.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startChild(t testing.TB, env []string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(qfenceBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if os.Getenv("QFENCE_TEST_LOG") != "" {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-c.done })
	return c
}

func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
}

func (c *child) term(t testing.TB, within time.Duration) {
	t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		if code := c.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("qfence exited %d after SIGTERM, want 0", code)
		}
	case <-time.After(within):
		t.Fatalf("qfence did not exit within %s of SIGTERM", within)
	}
}

// committed is how many pings the group has committed, over all partitions.
func committed(k *Kafka, topic string) int64 {
	c, err := k.CommittedOffsets(context.Background(), topic, 4)
	if err != nil {
		return 0
	}
	var n int64
	for _, v := range c {
		n += max(v, 0)
	}
	return n
}

// TestKillNineLosesNothing runs qfence as a child process, SIGKILLs it at
// five random points while it works through 200k pings, restarts it each
// time, and then checks: the event ids equal replay's, no event missing,
// every valid ping in ClickHouse at least once (exactly once under FINAL).
func TestKillNineLosesNothing(t *testing.T) {
	addr := startBroker(t)
	cfg := testConfig(addr)
	ch := chConfig(t, chAddr)
	k, err := newTestKafka(t, cfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureTopics(t.Context()); err != nil {
		t.Fatal(err)
	}
	d := genData(4, 10_000, 200_000, 0)
	produce(t, addr, cfg.Kafka.Topics.Orders, d.orders)
	metricsAddr := freeAddr(t)
	env := []string{"QFENCE_KAFKA_BROKERS=" + addr, "QFENCE_CLICKHOUSE_ADDR=" + chAddr, "QFENCE_CLICKHOUSE_DATABASE=" + ch.Database,
		"QFENCE_METRICS_LISTEN=" + metricsAddr, "QFENCE_LOG_LEVEL=" + childLogLevel(), "QFENCE_CLICKHOUSE_FLUSH_INTERVAL=200ms",
		"QFENCE_CLICKHOUSE_RETENTION_DAYS=3650"} // the data is from April: keep it
	conn := chConn(t, chAddr)
	r := rand.New(rand.NewPCG(seedOf(t), 4))
	// Six chunks of pings: five runs are killed part-way into theirs, the
	// sixth finishes.
	chunk := len(d.pings) / 6
	for i := 0; i < 6; i++ {
		c := startChild(t, env, "run")
		waitFor(t, time.Minute, "the child ready", func() bool { return httpOK("http://" + metricsAddr + "/readyz") })
		end := (i + 1) * chunk
		if i == 5 {
			end = len(d.pings)
		}
		produce(t, addr, cfg.Kafka.Topics.Pings, d.pings[i*chunk:end])
		if i == 5 {
			waitFor(t, 3*time.Minute, "every ping committed", func() bool { return caughtUp(t, k, cfg.Kafka.Topics.Pings) })
			c.term(t, 20*time.Second)
			break
		}
		// Somewhere while it decides, flushes and commits the chunk.
		time.Sleep(time.Duration(200+r.IntN(7800)) * time.Millisecond) // before or after the first commit (every 5 s)
		c.kill()
		n := committed(k, cfg.Kafka.Topics.Pings)
		rows := count(t, conn, "SELECT count() FROM "+ch.Database+".pings")
		t.Logf("kill -9 number %d at %d committed pings (%d rows in ClickHouse)", i+1, n, rows)
		if rows < uint64(n) {
			t.Errorf("after kill %d: %d pings committed but only %d rows in ClickHouse", i+1, n, rows)
		}
	}

	want := replayPartitions(t, cfg, d.orders, readAll(t, k, cfg.Kafka.Topics.Pings), d.end)
	got, records := eventsByID(t, k, cfg.Kafka.Topics.Violations)
	sameEvents(t, got, want)
	final := count(t, conn, "SELECT count() FROM "+ch.Database+".pings FINAL")
	rows := count(t, conn, "SELECT count() FROM "+ch.Database+".pings")
	if final != uint64(d.valid) {
		t.Errorf("ClickHouse holds %d distinct pings, want %d; missing: %v", final, d.valid, missingPings(t, conn, ch.Database, d))
	}
	t.Logf("after 5 kills: %d events (%d records, %d duplicated), %d pings (%d rows, %d duplicated before merges)",
		len(want), records, records-len(got), final, rows, rows-final)
}

func seedOf(t testing.TB) uint64 {
	s := rand.Uint64()
	if env := os.Getenv("QFENCE_SEED"); env != "" {
		s, _ = strconv.ParseUint(env, 10, 64)
	}
	t.Logf("seed %d (rerun with QFENCE_SEED=%d)", s, s)
	return s
}

// TestBrokerRestartMidRun kills `qfence broker --data-dir` in the middle of
// a run and starts it again; the pipeline reconnects by itself and loses
// nothing.
func TestBrokerRestartMidRun(t *testing.T) {
	addr := freeAddr(t)
	dir := t.TempDir()
	broker := startChild(t, nil, "broker", "--listen", addr, "--data-dir", dir)
	if err := WaitKafka(t.Context(), addr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	cfg, k := kafkaAt(t, addr)
	d := genData(5, 5_000, 100_000, 0)
	produce(t, addr, cfg.Kafka.Topics.Orders, d.orders)
	sink := newRecorder()
	svc := runService(t, cfg, processor.NewOrderBook(), sink, func() time.Time { return d.end })
	waitFor(t, time.Minute, "ready", func() bool { return svc.svc.Ready(t.Context()) == "" })
	half := len(d.pings) / 2
	produce(t, addr, cfg.Kafka.Topics.Pings, d.pings[:half])
	time.Sleep(300 * time.Millisecond) // mid-way through the first half
	t.Logf("killing the broker at %d committed pings", committed(k, cfg.Kafka.Topics.Pings))
	broker.kill()
	time.Sleep(2 * time.Second) // the pipeline sees the broker gone
	startChild(t, nil, "broker", "--listen", addr, "--data-dir", dir)
	if err := WaitKafka(t.Context(), addr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	produce(t, addr, cfg.Kafka.Topics.Pings, d.pings[half:])
	waitFor(t, 3*time.Minute, "every ping committed after the restart", func() bool { return caughtUp(t, k, cfg.Kafka.Topics.Pings) })
	svc.stop(t)

	want := replayPartitions(t, cfg, d.orders, readAll(t, k, cfg.Kafka.Topics.Pings), d.end)
	got, _ := eventsByID(t, k, cfg.Kafka.Topics.Violations)
	for id, w := range want {
		if _, ok := got[id]; !ok {
			t.Errorf("event lost: %s", w)
		}
	}
	if unique, _ := sink.count(); unique != d.valid {
		t.Errorf("%d pings stored, want %d", unique, d.valid)
	}
}

// TestClickHouseOutage stops ClickHouse (SIGSTOP) for 60 s in the middle of
// 200k pings: readiness turns false, the rows waiting stay under
// limits.max_inflight_rows, and once the server is back every ping and
// event is there, exactly once under FINAL.
func TestClickHouseOutage(t *testing.T) {
	addr := startBroker(t)
	cfg, k := kafkaAt(t, addr)
	cfg.Limits.MaxInflightRows = 30_000
	cfg.ClickHouse = chConfig(t, chAddr)
	cfg.ClickHouse.Timeout = 3 * time.Second
	d := genData(6, 10_000, 200_000, 0)
	produce(t, addr, cfg.Kafka.Topics.Orders, d.orders)
	sink := openSink(t, cfg.ClickHouse, "")
	svc := runServiceWith(t, ServiceDeps{Config: cfg, Book: processor.NewOrderBook(), Sink: sink, Now: func() time.Time { return d.end }, IdleAfter: time.Hour})
	ready := func() string {
		if why := svc.svc.Ready(t.Context()); why != "" {
			return why
		}
		return sink.Ready(t.Context())
	}
	waitFor(t, time.Minute, "ready", func() bool { return ready() == "" })
	produce(t, addr, cfg.Kafka.Topics.Pings, d.pings[:len(d.pings)/2])
	waitFor(t, time.Minute, "a quarter processed", func() bool { return committed(k, cfg.Kafka.Topics.Pings) >= int64(len(d.pings)/4) })

	if err := chServer.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = chServer.Signal(syscall.SIGCONT)
		}
	}()
	produce(t, addr, cfg.Kafka.Topics.Pings, d.pings[len(d.pings)/2:])
	outageEnd := time.Now().Add(60 * time.Second)
	sawNotReady, maxPending := false, 0
	var maxHeap uint64
	for time.Now().Before(outageEnd) {
		if why := ready(); why != "" {
			sawNotReady = true
		}
		sink.mu.Lock()
		maxPending = max(maxPending, sink.pending.rows)
		sink.mu.Unlock()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		maxHeap = max(maxHeap, ms.HeapAlloc)
		time.Sleep(500 * time.Millisecond)
	}
	if err := chServer.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	waitFor(t, 3*time.Minute, "every ping committed after the outage", func() bool { return caughtUp(t, k, cfg.Kafka.Topics.Pings) })
	waitFor(t, time.Minute, "ready again", func() bool { return ready() == "" })
	svc.stop(t)

	if !sawNotReady {
		t.Error("readiness never turned false during a 60 s ClickHouse outage")
	}
	if maxPending > cfg.Limits.MaxInflightRows {
		t.Errorf("%d rows waited for ClickHouse, more than limits.max_inflight_rows (%d)", maxPending, cfg.Limits.MaxInflightRows)
	}
	conn := chConn(t, chAddr)
	if n := count(t, conn, "SELECT count() FROM "+cfg.ClickHouse.Database+".pings FINAL"); n != uint64(d.valid) {
		t.Errorf("after the outage ClickHouse holds %d distinct pings, want %d", n, d.valid)
	}
	want := replayPartitions(t, cfg, d.orders, readAll(t, k, cfg.Kafka.Topics.Pings), d.end)
	if n := count(t, conn, "SELECT count() FROM "+cfg.ClickHouse.Database+".events FINAL"); n != uint64(len(want)) {
		t.Errorf("after the outage ClickHouse holds %d events, want %d", n, len(want))
	}
	t.Logf("during the outage: at most %d rows waited (bound %d), heap at most %d MiB", maxPending, cfg.Limits.MaxInflightRows, maxHeap>>20)
}

var _ = config.Default

func childLogLevel() string {
	if os.Getenv("QFENCE_TEST_LOG") != "" {
		return "info"
	}
	return "warn"
}

func httpOK(url string) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// missingPings lists (up to ten) generated pings that ClickHouse lacks.
func missingPings(t testing.TB, conn driver.Conn, db string, d dataset) []string {
	rows, err := conn.Query(context.Background(), "SELECT DISTINCT patient_id, toUnixTimestamp(ts) * 1000 + ts_ms FROM "+db+".pings")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for rows.Next() {
		var id string
		var ms uint64
		if err := rows.Scan(&id, &ms); err != nil {
			t.Fatal(err)
		}
		have[id+"|"+strconv.FormatUint(ms, 10)] = true
	}
	rows.Close()
	var out []string
	var p processor.Ping
	dec := processor.PingDecoder{MaxBytes: 4096}
	for _, m := range d.pings {
		if dec.Decode(m.Value, 0, &p) != nil {
			continue
		}
		if !have[string(p.PatientID)+"|"+strconv.FormatInt(p.TS, 10)] && len(out) < 10 {
			out = append(out, string(m.Value))
		}
	}
	return out
}
