package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qfence/qfence/sinks/clickhouse/chtest"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
)

// TestRunTakesTheContainersMemoryLimit: `qfence run` in a memory cgroup of
// 2 GiB (as a container with that limit) gives the collector a soft limit
// of 90 % of it; GOMEMLIMIT set by hand wins. It needs a writable cgroup
// v1 memory hierarchy (root on the CI machine), and skips without one.
func TestRunTakesTheContainersMemoryLimit(t *testing.T) {
	root := "/sys/fs/cgroup/memory"
	group := filepath.Join(root, fmt.Sprintf("qfence-test-%d", os.Getpid()))
	if err := os.Mkdir(group, 0o755); err != nil {
		t.Skipf("no writable cgroup v1 memory hierarchy at %s: %v", root, err)
	}
	t.Cleanup(func() { _ = os.Remove(group) })
	const limit = 2 << 30
	if err := os.WriteFile(filepath.Join(group, "memory.limit_in_bytes"), []byte(fmt.Sprint(limit)), 0o644); err != nil {
		t.Skipf("cannot set a memory limit: %v", err)
	}
	addr := kafkatest.StartBroker(t)
	ch := chtest.DB(t, chtest.Addr)
	for _, tt := range []struct {
		name string
		env  []string
		want float64
	}{
		{"from the cgroup", nil, float64(limit) * 0.9},
		{"GOMEMLIMIT wins", []string{"GOMEMLIMIT=1000MiB"}, 1000 << 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			metrics := freeAddr(t)
			env := append([]string{"QFENCE_KAFKA_BROKERS=" + addr, "QFENCE_CLICKHOUSE_ADDR=" + chtest.Addr, "QFENCE_CLICKHOUSE_DATABASE=" + ch.Database,
				"QFENCE_LOG_LEVEL=" + childLogLevel(), "QFENCE_METRICS_LISTEN=" + metrics}, tt.env...)
			// The shell moves itself into the cgroup, then becomes qfence.
			c := startCommand(t, exec.Command("sh", "-c", `echo $$ > "$1/cgroup.procs" && exec "$2" run`, "sh", group, qfenceBinary(t)), env)
			var got float64
			kafkatest.WaitFor(t, time.Minute, "the collector's memory limit exported", func() bool {
				fam, err := scrapeQuiet("http://" + metrics + "/metrics")
				if err != nil || fam["go_gc_gomemlimit_bytes"] == nil {
					return false
				}
				got = fam["go_gc_gomemlimit_bytes"].GetMetric()[0].GetGauge().GetValue()
				return true
			})
			if diff := got - tt.want; diff < -(1<<20) || diff > 1<<20 {
				t.Errorf("GOMEMLIMIT is %.0f bytes, want %.0f", got, tt.want)
			}
			c.term(t, 30*time.Second)
		})
	}
}

// TestAStopWhileWaitingExitsZero: SIGTERM while qfence run still waits for
// ClickHouse, or for Kafka, is the stop asked for, not a failure: exit 0
// (it exited 1 with "context canceled").
func TestAStopWhileWaitingExitsZero(t *testing.T) {
	addr := kafkatest.StartBroker(t)
	ch := chtest.DB(t, chtest.Addr)
	nowhere := freeAddr(t) // nothing listens there
	for _, tt := range []struct{ name, brokers, clickhouse, waiting string }{
		{"for ClickHouse", addr, nowhere, "ClickHouse"},
		{"for Kafka", nowhere, chtest.Addr, "orders not yet read"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			metrics := freeAddr(t)
			c := startChild(t, []string{"QFENCE_KAFKA_BROKERS=" + tt.brokers, "QFENCE_CLICKHOUSE_ADDR=" + tt.clickhouse,
				"QFENCE_CLICKHOUSE_DATABASE=" + ch.Database, "QFENCE_LOG_LEVEL=" + childLogLevel(), "QFENCE_METRICS_LISTEN=" + metrics}, "run")
			kafkatest.WaitFor(t, time.Minute, "/readyz saying what it waits for", func() bool {
				resp, err := http.Get("http://" + metrics + "/readyz")
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(strings.ToLower(string(body)), strings.ToLower(tt.waiting))
			})
			c.term(t, 30*time.Second) // fails unless it exits 0
		})
	}
}
