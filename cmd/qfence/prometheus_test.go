package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/sinks/clickhouse/chtest"
	"github.com/qfence/qfence/sinks/kafka/kafkatest"
	"github.com/qfence/qfence/sinks/local/nettest"
)

// prometheusBinary is Debian's prometheus (make prometheus installs it).
func prometheusBinary(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("QFENCE_REQUIRE_PROMETHEUS") == "1" {
			t.Fatal("prometheus is not installed: run make prometheus (Debian's package)")
		}
		t.Skip("prometheus is not installed (make prometheus); make test runs this")
	}
	return p
}

// TestPrometheusSeesQfence runs Debian's Prometheus against a running
// qfence with the shipped alert rules (their for: durations shortened to
// seconds): with the broker cut off, QfenceNotReady fires; with it back,
// the alert resolves. Every query of the shipped dashboard runs against
// that Prometheus without error and returns a series.
func TestPrometheusSeesQfence(t *testing.T) {
	prom := prometheusBinary(t)
	kafkaAt := freeAddr(t)
	brokers := kafkatest.StartBrokers(t, []string{kafkaAt})
	kp := nettest.NewProxy(t, "kafka", kafkaAt, brokers.Addrs[0]) // the brokers advertise kafkaAt: every connection goes through the proxy
	cfg, _ := kafkatest.KafkaAt(t, kp.Addr())
	ch := chtest.DB(t, chtest.Addr)
	d := kafkatest.GenData(5, 200, 4_000, 0)
	kafkatest.Produce(t, kp.Addr(), cfg.Kafka.Topics.Orders, d.Orders)
	kafkatest.Produce(t, kp.Addr(), cfg.Kafka.Topics.Pings, d.Pings)
	metricsAddr := freeAddr(t)
	c := startChild(t, []string{"QFENCE_KAFKA_BROKERS=" + kp.Addr(), "QFENCE_CLICKHOUSE_ADDR=" + chtest.Addr,
		"QFENCE_CLICKHOUSE_DATABASE=" + ch.Database, "QFENCE_METRICS_LISTEN=" + metricsAddr, "QFENCE_LOG_LEVEL=" + childLogLevel(),
		"QFENCE_CLICKHOUSE_RETENTION_DAYS=3650"}, "run")
	defer c.term(t, 20*time.Second)
	kafkatest.WaitFor(t, time.Minute, "qfence ready", func() bool { return httpOK("http://" + metricsAddr + "/readyz") })

	dir := t.TempDir()
	rules, err := os.ReadFile("../../config/monitoring/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fast := regexp.MustCompile(`for: \d+m`).ReplaceAll(rules, []byte("for: 3s"))
	if err := os.WriteFile(filepath.Join(dir, "alerts.yaml"), fast, 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := freeAddr(t)
	conf := fmt.Sprintf("global: {scrape_interval: 1s, evaluation_interval: 1s}\nrule_files: [%q]\n"+
		"scrape_configs: [{job_name: qfence, static_configs: [{targets: [%q]}]}]\n", filepath.Join(dir, "alerts.yaml"), metricsAddr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := exec.Command(prom, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr)
	p.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Process.Kill(); _ = p.Wait() }()
	api := "http://" + promAddr + "/api/v1/"
	query := func(q string) (int, error) {
		resp, err := http.Get(api + "query?query=" + url.QueryEscape(q))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				Result []json.RawMessage `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return 0, err
		}
		if r.Status != "success" {
			return 0, fmt.Errorf("%s: %s", r.Status, r.Error)
		}
		return len(r.Data.Result), nil
	}
	alert := func() string { // the state of QfenceNotReady: "", pending or firing
		resp, err := http.Get(api + "alerts")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Alerts []struct {
					Labels map[string]string `json:"labels"`
					State  string            `json:"state"`
				} `json:"alerts"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil {
			return ""
		}
		for _, a := range r.Data.Alerts {
			if a.Labels["alertname"] == "QfenceNotReady" {
				return a.State
			}
		}
		return ""
	}
	kafkatest.WaitFor(t, time.Minute, "Prometheus scraping qfence, ready", func() bool {
		n, err := query(`qfence_ready{job="qfence"} == 1`)
		return err == nil && n == 1
	})
	if s := alert(); s != "" {
		t.Fatalf("QfenceNotReady is %s while qfence is ready", s)
	}
	kp.Add(t, nettest.Toxic{Type: "timeout", Attributes: map[string]any{"timeout": 0}})
	kafkatest.WaitFor(t, time.Minute, "QfenceNotReady firing with the broker cut off", func() bool { return alert() == "firing" })
	kp.Clear(t)
	kafkatest.WaitFor(t, 2*time.Minute, "QfenceNotReady resolved with the broker back", func() bool { return alert() == "" })

	b, err := os.ReadFile("../../config/monitoring/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	_, queries, err := config.DashboardQueries(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queries {
		n, err := query(q.Expr)
		if err != nil || n == 0 {
			t.Errorf("dashboard %q: %s: %d series, %v", q.Panel, q.Expr, n, err)
		}
	}
}
