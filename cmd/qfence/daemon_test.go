package main

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qfence/qfence/cmd/internal/daemon"
	"github.com/qfence/qfence/sinks/kafka"
	"github.com/qfence/qfence/sinks/local"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/qfence/qfence/cmd/internal/sim"
	"github.com/qfence/qfence/config"
)

// TestDaemon runs `qfence run` in-process against a private ClickHouse and
// the embedded broker, then checks what ops see: every contract metric with
// its type and labels (and no patient id in a label), readiness flipping to
// 503 while ClickHouse is stopped and back, and SIGHUP with a good and a
// broken zones file.
func TestDaemon(t *testing.T) {
	ctx := t.Context()
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ch, err := local.StartClickHouseServer(ctx, log)
	if err != nil {
		t.Fatalf("no ClickHouse server: %v", err)
	}
	defer ch.Stop()
	brokerAddr, metricsAddr, err := twoFreeAddrs()
	if err != nil {
		t.Fatal(err)
	}
	broker, err := local.StartBroker(brokerAddr, "", 4)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	dir := t.TempDir()
	zonesPath := filepath.Join(dir, "zones.geojson")
	s := sim.Generate(sim.Params{Seed: 3, Patients: 200, Start: time.Now().UTC().Add(-20 * time.Minute), Duration: 20 * time.Minute,
		Interval: 30 * time.Second, Rules: config.Default().Rules.Engine()})
	if err := os.WriteFile(zonesPath, s.Zones, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Kafka.Brokers, cfg.ClickHouse.Addr, cfg.ClickHouse.Database = brokerAddr, ch.Addr, "daemon_test"
	cfg.Metrics.Listen, cfg.Zones.File, cfg.ClickHouse.Timeout = metricsAddr, zonesPath, 2*time.Second
	cfg.Rules.BreachAfter, cfg.Rules.SignalTimeout = 2*time.Minute, 5*time.Minute
	cfg.ShutdownTimeout = 6 * time.Second

	dctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- daemon.Run(dctx, &cfg, log, nil) }()
	stopped := false
	defer func() {
		if !stopped {
			stop()
			<-done
		}
	}()
	base := "http://" + metricsAddr
	waitHTTP(t, base+"/healthz", 200, time.Minute)
	k, err := kafka.NewClient(cfg.Kafka, log)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if err := k.EnsureTopics(ctx); err != nil {
		t.Fatal(err)
	}
	if err := k.Publish(ctx, cfg.Kafka.Topics.Orders, sim.Messages(sim.Lines(s.Orders)), 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := k.Publish(ctx, cfg.Kafka.Topics.Pings, sim.Messages(s.Pings), 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := waitUntil(ctx, 2*time.Minute, func() bool { lag, err := k.Lag(ctx, cfg.Kafka.Topics.Pings); return err == nil && lag == 0 }); err != nil {
		t.Fatal("the daemon did not drain the pings")
	}
	waitHTTP(t, base+"/readyz", 200, time.Minute)

	t.Run("no patient id in a log line at info level or above", func(t *testing.T) {
		if strings.Contains(logs.String(), "p-0") {
			t.Errorf("a log line holds a patient id:\n%s", logs.String())
		}
		if !strings.Contains(logs.String(), "qfence running") {
			t.Error("the log was not captured")
		}
	})

	t.Run("every contract metric exists with its type and labels", func(t *testing.T) {
		families := scrape(t, base+"/metrics")
		want := map[string]struct {
			typ    dto.MetricType
			labels []string
		}{
			"qfence_pings_total": {dto.MetricType_COUNTER, []string{"outcome"}}, "qfence_pings_rejected_total": {dto.MetricType_COUNTER, []string{"reason"}},
			"qfence_events_total": {dto.MetricType_COUNTER, []string{"type"}}, "qfence_open_breaches": {dto.MetricType_GAUGE, nil},
			"qfence_active_orders": {dto.MetricType_GAUGE, nil}, "qfence_event_latency_seconds": {dto.MetricType_HISTOGRAM, nil},
			"qfence_sink_rows_total": {dto.MetricType_COUNTER, []string{"sink"}}, "qfence_sink_flush_seconds": {dto.MetricType_HISTOGRAM, []string{"sink"}},
			"qfence_sink_errors_total": {dto.MetricType_COUNTER, []string{"sink"}}, "qfence_consumer_lag": {dto.MetricType_GAUGE, []string{"partition", "topic"}},
			"qfence_build_info": {dto.MetricType_GAUGE, []string{"goversion", "version"}},
			"qfence_ready":      {dto.MetricType_GAUGE, nil},
		}
		for name, w := range want {
			f, ok := families[name]
			if !ok {
				t.Errorf("%s is missing", name)
				continue
			}
			if f.GetType() != w.typ {
				t.Errorf("%s is a %s, want %s", name, f.GetType(), w.typ)
			}
			for _, m := range f.GetMetric() {
				var names []string
				for _, l := range m.GetLabel() {
					names = append(names, l.GetName())
				}
				slices.Sort(names)
				if !slices.Equal(names, w.labels) {
					t.Errorf("%s has labels %v, want %v", name, names, w.labels)
				}
			}
		}
		if v := families["qfence_pings_total"]; v == nil || sum(v) < float64(len(s.Pings)) {
			t.Errorf("qfence_pings_total = %v, want at least %d", sum(v), len(s.Pings))
		}
		for _, f := range families {
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if strings.HasPrefix(l.GetValue(), "p-0") {
						t.Errorf("%s has a patient id in label %s=%s", f.GetName(), l.GetName(), l.GetValue())
					}
				}
			}
		}
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		problems, err := promlint.New(resp.Body).Lint()
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			if strings.HasPrefix(p.Metric, "qfence_") {
				t.Errorf("promlint: %s: %s", p.Metric, p.Text)
			}
		}
	})

	t.Run("readiness flips to 503 while ClickHouse is stopped and back after", func(t *testing.T) {
		if err := ch.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		waitHTTP(t, base+"/readyz", 503, 30*time.Second)
		if err := ch.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		waitHTTP(t, base+"/readyz", 200, time.Minute)
	})

	defer t.Run("SIGTERM with ClickHouse stopped still ends within shutdown_timeout", func(t *testing.T) {
		// More pings, so that rows wait for the stopped ClickHouse.
		more := sim.Generate(sim.Params{Seed: 4, Patients: 200, Start: time.Now().UTC().Add(-10 * time.Minute), Duration: 10 * time.Minute,
			Interval: 30 * time.Second, Rules: cfg.Rules.Engine()})
		if err := ch.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer ch.Signal(syscall.SIGCONT) //nolint:errcheck // best effort: Stop also continues it
		decided := sum(scrape(t, base+"/metrics")["qfence_pings_total"])
		if err := k.Publish(ctx, cfg.Kafka.Topics.Pings, sim.Messages(more.Pings), 0, nil); err != nil {
			t.Fatal(err)
		}
		// Every one decided: their rows now wait for ClickHouse.
		waitMetric(t, base, "qfence_pings_total", decided+float64(len(more.Pings)))
		start := time.Now()
		stop()
		stopped = true
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("daemon: %v", err)
			}
			if took := time.Since(start); took > cfg.ShutdownTimeout+time.Second {
				t.Errorf("stopped after %s, shutdown_timeout is %s", took, cfg.ShutdownTimeout)
			}
		case <-time.After(cfg.ShutdownTimeout + 10*time.Second):
			t.Fatalf("still running %s after SIGTERM with shutdown_timeout %s", cfg.ShutdownTimeout+10*time.Second, cfg.ShutdownTimeout)
		}
	})

	t.Run("SIGHUP reloads good zones and refuses broken ones", func(t *testing.T) {
		one := `{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"id":"only","kind":"district"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}}]}`
		if err := os.WriteFile(zonesPath, []byte(one), 0o644); err != nil {
			t.Fatal(err)
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGHUP)
		waitMetric(t, base, "qfence_zones", 1)
		if err := os.WriteFile(zonesPath, []byte(`{"type":"FeatureCollection","features":[{"broken`), 0o644); err != nil {
			t.Fatal(err)
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGHUP)
		waitMetric(t, base, "qfence_zones_reload_errors_total", 1)
		if v := sum(scrape(t, base+"/metrics")["qfence_zones"]); v != 1 {
			t.Errorf("after a broken file, %v zones are in force, want the old 1", v)
		}
	})
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

func sum(f *dto.MetricFamily) float64 {
	var v float64
	for _, m := range f.GetMetric() {
		v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return v
}

func waitMetric(t *testing.T, base, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for sum(scrape(t, base+"/metrics")[name]) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not reach %v", name, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitHTTP(t *testing.T, url string, code int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	last := 0
	for {
		if resp, err := http.Get(url); err == nil {
			last = resp.StatusCode
			resp.Body.Close()
			if last == code {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s answered %d, not %d, within %s", url, last, code, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
