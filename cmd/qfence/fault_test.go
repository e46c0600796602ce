package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qfence/qfence/sinks/clickhouse/chtest"
	qkafka "github.com/qfence/qfence/sinks/kafka"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
	"github.com/qfence/qfence/sinks/local"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/qfence/qfence/processor"
)

func freeAddr(t testing.TB) string {
	t.Helper()
	ports, err := local.FreePorts(1)
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
	return startCommand(t, exec.Command(qfenceBinary(t), args...), env)
}

// startCommand starts cmd (qfence, or a shell that becomes qfence) as a
// child with env added to the test's.
func startCommand(t testing.TB, cmd *exec.Cmd, env []string) *child {
	t.Helper()
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
func committed(k *qkafka.Client, topic string) int64 {
	parts, err := k.Partitions(context.Background(), topic)
	if err != nil {
		return 0
	}
	c, err := k.CommittedOffsets(context.Background(), topic, parts[topic])
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
	addr := kafkatest.StartBroker(t)
	cfg := kafkatest.Config(addr)
	ch := chtest.DB(t, chtest.Addr)
	k := kafkatest.Topics(t, cfg)
	d := kafkatest.GenData(4, 10_000, 200_000, 0)
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Orders, d.Orders)
	metricsAddr := freeAddr(t)
	env := []string{"QFENCE_KAFKA_BROKERS=" + addr, "QFENCE_CLICKHOUSE_ADDR=" + chtest.Addr, "QFENCE_CLICKHOUSE_DATABASE=" + ch.Database,
		"QFENCE_METRICS_LISTEN=" + metricsAddr, "QFENCE_LOG_LEVEL=" + childLogLevel(), "QFENCE_CLICKHOUSE_FLUSH_INTERVAL=200ms",
		"QFENCE_CLICKHOUSE_RETENTION_DAYS=3650"} // the data is from April: keep it
	conn := chtest.Conn(t, chtest.Addr)
	r := rand.New(rand.NewPCG(seedOf(t), 4))
	// People's decisions arrive beside the pings, a chunk with each run.
	disps := dispositionsFor(600)
	dcfg := *cfg
	dcfg.Kafka.GroupID = qkafka.DispositionsGroup(cfg.Kafka.GroupID)
	dk, err := kafkatest.NewClient(t, dcfg.Kafka)
	if err != nil {
		t.Fatal(err)
	}
	// Six chunks of pings: five runs are killed part-way into theirs, the
	// sixth finishes.
	chunk := len(d.Pings) / 6
	dchunk := len(disps) / 6
	for i := 0; i < 6; i++ {
		c := startChild(t, env, "run")
		kafkatest.WaitFor(t, time.Minute, "the child ready", func() bool { return httpOK("http://" + metricsAddr + "/readyz") })
		end := (i + 1) * chunk
		if i == 5 {
			end = len(d.Pings)
		}
		kafkatest.Produce(t, addr, cfg.Kafka.Topics.Dispositions, disps[i*dchunk:(i+1)*dchunk])
		kafkatest.Produce(t, addr, cfg.Kafka.Topics.Pings, d.Pings[i*chunk:end])
		if i == 5 {
			kafkatest.WaitFor(t, 3*time.Minute, "every ping committed", func() bool { return kafkatest.CaughtUp(t, k, cfg.Kafka.Topics.Pings) })
			kafkatest.WaitFor(t, time.Minute, "every disposition committed", func() bool {
				return committed(dk, cfg.Kafka.Topics.Dispositions) == int64(len(disps))
			})
			c.term(t, 20*time.Second)
			break
		}
		// Somewhere while it decides, flushes and commits the chunk.
		time.Sleep(time.Duration(200+r.IntN(7800)) * time.Millisecond) // before or after the first commit (every 5 s)
		c.kill()
		n := committed(k, cfg.Kafka.Topics.Pings)
		rows := chtest.Count(t, conn, "SELECT count() FROM "+ch.Database+".pings")
		t.Logf("kill -9 number %d at %d committed pings (%d rows in ClickHouse)", i+1, n, rows)
		if rows < uint64(n) {
			t.Errorf("after kill %d: %d pings committed but only %d rows in ClickHouse", i+1, n, rows)
		}
		nd, drows := committed(dk, cfg.Kafka.Topics.Dispositions), chtest.Count(t, conn, "SELECT count() FROM "+ch.Database+".dispositions")
		if drows < uint64(nd) {
			t.Errorf("after kill %d: %d dispositions committed but only %d rows in ClickHouse", i+1, nd, drows)
		}
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+ch.Database+".dispositions FINAL"); n != uint64(len(disps)) {
		t.Errorf("ClickHouse holds %d distinct dispositions, want %d", n, len(disps))
	}

	replayed := kafkatest.ReplayAll(t, cfg, d.Orders, kafkatest.ReadAll(t, k, cfg.Kafka.Topics.Pings), d.End)
	want := replayed.Events
	got, records := kafkatest.EventsByID(t, k, cfg.Kafka.Topics.Violations)
	kafkatest.SameEvents(t, got, want)
	// Notifications are delivered as events are: none lost to a kill either.
	notes, _ := kafkatest.EventsByID(t, k, cfg.Kafka.Topics.Notifications)
	kafkatest.SameEvents(t, notes, replayed.Notifications)
	if len(notes) == 0 {
		t.Error("no notification to check")
	}
	final := chtest.Count(t, conn, "SELECT count() FROM "+ch.Database+".pings FINAL")
	rows := chtest.Count(t, conn, "SELECT count() FROM "+ch.Database+".pings")
	if final != uint64(d.Valid) {
		t.Errorf("ClickHouse holds %d distinct pings, want %d; missing: %v", final, d.Valid, missingPings(t, conn, ch.Database, d))
	}
	t.Logf("after 5 kills: %d events (%d records, %d duplicated), %d pings (%d rows, %d duplicated before merges)",
		len(want), records, records-len(got), final, rows, rows-final)
}

// dispositionsFor makes n valid dispositions of as many events, keyed by
// event, as an enforcement system produces them.
func dispositionsFor(n int) []kafka.Message {
	out := make([]kafka.Message, n)
	for i := range out {
		d := processor.Disposition{DispositionID: fmt.Sprintf("E-%06d", i), EventID: fmt.Sprintf("%032x", i+1), Decision: "confirmed",
			Reason: "confirmed_absence", DecidedBy: "enforcement:7", DecidedAt: 1775127720000 + int64(i), Channel: "enforcement"}
		out[i] = kafka.Message{Key: []byte(d.EventID), Value: d.AppendJSON(nil)}
	}
	return out
}

func seedOf(t testing.TB) uint64 {
	s := rand.Uint64()
	if env := os.Getenv("QFENCE_SEED"); env != "" {
		s, _ = strconv.ParseUint(env, 10, 64)
	}
	t.Logf("seed %d (rerun with QFENCE_SEED=%d)", s, s)
	return s
}

// TestBrokerRestartMidRun kills `qfence broker --data-dir` three times in
// the middle of a run and starts it again each time; the pipeline
// reconnects by itself, loses nothing, and every stored row is the row
// replay stores (a re-read after a broker crash once re-decided delivered
// pings against newer state and stored them again as late).
func TestBrokerRestartMidRun(t *testing.T) {
	addr := freeAddr(t)
	dir := t.TempDir()
	broker := startChild(t, nil, "broker", "--listen", addr, "--data-dir", dir)
	if err := qkafka.WaitKafka(t.Context(), addr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	cfg, k := kafkatest.KafkaAt(t, addr)
	d := kafkatest.GenData(5, 5_000, 100_000, 0)
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Orders, d.Orders)
	sink := kafkatest.NewRecorder()
	svc := kafkatest.RunService(t, cfg, processor.NewOrderBook(), sink, func() time.Time { return d.End })
	kafkatest.WaitFor(t, time.Minute, "ready", func() bool { return svc.Svc.Ready(t.Context()) == "" })
	r := rand.New(rand.NewPCG(seedOf(t), 5))
	chunk := len(d.Pings) / 4
	for i := range 4 {
		end := min((i+1)*chunk, len(d.Pings))
		if i == 3 {
			end = len(d.Pings)
		}
		kafkatest.Produce(t, addr, cfg.Kafka.Topics.Pings, d.Pings[i*chunk:end])
		if i == 3 {
			break
		}
		time.Sleep(time.Duration(200+r.IntN(5000)) * time.Millisecond) // before or after a commit (every 5 s)
		before := committed(k, cfg.Kafka.Topics.Pings)
		broker.kill()
		time.Sleep(2 * time.Second) // the pipeline sees the broker gone
		broker = startChild(t, nil, "broker", "--listen", addr, "--data-dir", dir)
		if err := qkafka.WaitKafka(t.Context(), addr, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		t.Logf("broker kill %d: %d pings committed before, %d after the restart", i+1, before, committed(k, cfg.Kafka.Topics.Pings))
	}
	kafkatest.WaitFor(t, 3*time.Minute, "every ping committed after the restarts", func() bool { return kafkatest.CaughtUp(t, k, cfg.Kafka.Topics.Pings) })
	svc.Stop(t)

	want, rows := kafkatest.Replay(t, cfg, d.Orders, kafkatest.ReadAll(t, k, cfg.Kafka.Topics.Pings), d.End)
	got, _ := kafkatest.EventsByID(t, k, cfg.Kafka.Topics.Violations)
	kafkatest.SameEvents(t, got, want)
	kafkatest.SameRows(t, sink.Rows(), rows)
	if unique, _ := sink.Count(); unique != d.Valid {
		t.Errorf("%d pings stored, want %d", unique, d.Valid)
	}
}

// TestClickHouseOutage stops ClickHouse (SIGSTOP) for 60 s in the middle of
// 200k pings: readiness turns false, the rows waiting stay under
// limits.max_inflight_rows, and once the server is back every ping and
// event is there, exactly once under FINAL.
func TestClickHouseOutage(t *testing.T) {
	addr := kafkatest.StartBroker(t)
	cfg, k := kafkatest.KafkaAt(t, addr)
	cfg.Limits.MaxInflightRows = 30_000
	cfg.ClickHouse = chtest.DB(t, chtest.Addr)
	cfg.ClickHouse.Timeout = 3 * time.Second
	d := kafkatest.GenData(6, 10_000, 200_000, 0)
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Orders, d.Orders)
	sink := chtest.OpenSink(t, cfg.ClickHouse, "")
	svc := kafkatest.RunServiceWith(t, qkafka.ServiceDeps{Config: cfg, Book: processor.NewOrderBook(), Sink: sink, Now: func() time.Time { return d.End }})
	ready := func() string {
		if why := svc.Svc.Ready(t.Context()); why != "" {
			return why
		}
		return sink.Ready(t.Context())
	}
	kafkatest.WaitFor(t, time.Minute, "ready", func() bool { return ready() == "" })
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Pings, d.Pings[:len(d.Pings)/2])
	kafkatest.WaitFor(t, time.Minute, "a quarter processed", func() bool { return committed(k, cfg.Kafka.Topics.Pings) >= int64(len(d.Pings)/4) })

	if err := chtest.Server.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = chtest.Server.Signal(syscall.SIGCONT)
		}
	}()
	kafkatest.Produce(t, addr, cfg.Kafka.Topics.Pings, d.Pings[len(d.Pings)/2:])
	outageEnd := time.Now().Add(60 * time.Second)
	sawNotReady, maxPending := false, 0
	var maxHeap uint64
	for time.Now().Before(outageEnd) {
		if why := ready(); why != "" {
			sawNotReady = true
		}
		maxPending = max(maxPending, sink.Pending())
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		maxHeap = max(maxHeap, ms.HeapAlloc)
		time.Sleep(500 * time.Millisecond)
	}
	if err := chtest.Server.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	kafkatest.WaitFor(t, 3*time.Minute, "every ping committed after the outage", func() bool { return kafkatest.CaughtUp(t, k, cfg.Kafka.Topics.Pings) })
	kafkatest.WaitFor(t, time.Minute, "ready again", func() bool { return ready() == "" })
	svc.Stop(t)

	if !sawNotReady {
		t.Error("readiness never turned false during a 60 s ClickHouse outage")
	}
	if maxPending > cfg.Limits.MaxInflightRows {
		t.Errorf("%d rows waited for ClickHouse, more than limits.max_inflight_rows (%d)", maxPending, cfg.Limits.MaxInflightRows)
	}
	conn := chtest.Conn(t, chtest.Addr)
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.ClickHouse.Database+".pings FINAL"); n != uint64(d.Valid) {
		t.Errorf("after the outage ClickHouse holds %d distinct pings, want %d", n, d.Valid)
	}
	want := kafkatest.ReplayPartitions(t, cfg, d.Orders, kafkatest.ReadAll(t, k, cfg.Kafka.Topics.Pings), d.End)
	if n := chtest.Count(t, conn, "SELECT count() FROM "+cfg.ClickHouse.Database+".events FINAL"); n != uint64(len(want)) {
		t.Errorf("after the outage ClickHouse holds %d events, want %d", n, len(want))
	}
	t.Logf("during the outage: at most %d rows waited (bound %d), heap at most %d MiB", maxPending, cfg.Limits.MaxInflightRows, maxHeap>>20)
}

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
func missingPings(t testing.TB, conn driver.Conn, db string, d kafkatest.Dataset) []string {
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
	for _, m := range d.Pings {
		if dec.Decode(m.Value, 0, &p) != nil {
			continue
		}
		if !have[string(p.PatientID)+"|"+strconv.FormatInt(p.TS, 10)] && len(out) < 10 {
			out = append(out, string(m.Value))
		}
	}
	return out
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// qfenceBinary builds cmd/qfence once for the tests that run it as a child
// (it is removed with the test binary's temporary directory).
func qfenceBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("QFENCE_TEST_BINARY"); bin != "" { // another build, for A/B benchmarks
		return bin
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "qfence-bin-")
		if binErr == nil {
			out, err := exec.Command("go", "build", "-o", binDir+"/qfence", "github.com/qfence/qfence/cmd/qfence").CombinedOutput()
			if err != nil {
				binErr = fmt.Errorf("go build: %v\n%s", err, out)
			}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir + "/qfence"
}
