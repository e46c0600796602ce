package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/qfence/qfence/sinks/clickhouse"

	"github.com/qfence/qfence/cmd/internal/daemon"
	"github.com/qfence/qfence/sinks/kafka"
	"github.com/qfence/qfence/sinks/local"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

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
		Interval: 30 * time.Second, Rules: config.DefaultEngineRules()})
	if err := os.WriteFile(zonesPath, s.Zones, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Kafka.Brokers, cfg.ClickHouse.Addr, cfg.ClickHouse.Database = brokerAddr, ch.Addr, "daemon_test"
	cfg.Metrics.Listen, cfg.Zones.File, cfg.ClickHouse.Timeout = metricsAddr, zonesPath, 2*time.Second
	cfg.Rules.BreachAfter, cfg.Rules.SignalTimeout = 2*time.Minute, 5*time.Minute
	cfg.Rules.EscalateAfter = 3 * time.Minute // escalations to review within the 20 simulated minutes
	cfg.ShutdownTimeout = 6 * time.Second
	// The people's API, over TLS, with a police and a reviewer token.
	ca := local.NewTestCA(dir)
	if ca.Err != nil {
		t.Fatal(ca.Err)
	}
	apiAddr, _, err := twoFreeAddrs()
	if err != nil {
		t.Fatal(err)
	}
	tokensPath := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokensPath, []byte("police:officer-7:police-token-0123456789\nreviewer:judge-2:reviewer-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.API.Listen, cfg.API.TokensFile = apiAddr, tokensPath
	cfg.API.TLS.CertFile, cfg.API.TLS.KeyFile = ca.CertFile, ca.KeyFile

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

	t.Run("the pass endpoint answers a scanner, behind tokens, over TLS, audited", func(t *testing.T) {
		testPassAPI(t, k, &cfg, string(sim.Lines(s.Orders)[0].Key), ca.CAFile)
	})

	t.Run("a reviewer reads a breach's dossier in a browser", func(t *testing.T) {
		testDossierAPI(t, &cfg, ca.CAFile)
	})

	t.Run("a reviewer works the review queue in a browser", func(t *testing.T) {
		testReviewInABrowser(t, &cfg, ca.CAFile)
	})

	t.Run("dispositions from the topic are stored once, bad ones dead-lettered", func(t *testing.T) {
		testDispositionsTopic(t, k, &cfg)
	})

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
			"qfence_events_total": {dto.MetricType_COUNTER, []string{"type"}}, "qfence_open_breaches": {dto.MetricType_GAUGE, nil}, "qfence_known_mislocations": {dto.MetricType_GAUGE, nil},
			"qfence_active_orders": {dto.MetricType_GAUGE, nil}, "qfence_event_latency_seconds": {dto.MetricType_HISTOGRAM, nil},
			"qfence_sink_rows_total": {dto.MetricType_COUNTER, []string{"sink"}}, "qfence_sink_flush_seconds": {dto.MetricType_HISTOGRAM, []string{"sink"}},
			"qfence_sink_errors_total": {dto.MetricType_COUNTER, []string{"sink"}}, "qfence_consumer_lag": {dto.MetricType_GAUGE, []string{"partition", "topic"}},
			"qfence_build_info":         {dto.MetricType_GAUGE, []string{"goversion", "version"}},
			"qfence_ready":              {dto.MetricType_GAUGE, nil},
			"qfence_dispositions_total": {dto.MetricType_COUNTER, []string{"channel", "decision"}},
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
		// The reviewer's two decisions and the topic's two valid dispositions.
		decided := map[string]float64{}
		for _, m := range families["qfence_dispositions_total"].GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + " "
			}
			decided[key] = m.GetCounter().GetValue()
		}
		if decided["channel=review decision=dismissed "] < 1 || decided["channel=review decision=confirmed "] < 1 ||
			decided["channel=enforcement decision=confirmed "] < 1 || decided["channel=patient decision=contested "] < 1 {
			t.Errorf("qfence_dispositions_total: %v", decided)
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
			Interval: 30 * time.Second, Rules: cfg.EngineRules()})
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
	families, err := scrapeQuiet(url)
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

// testPassAPI publishes passes of every status for patient, then asks the
// API about each as a scanner would, checks the refusals, a client that
// never sends its headers, and that every request is in api_audit with the
// token's name and never the token.
func testPassAPI(t *testing.T, k *kafka.Client, cfg *config.Config, patient, caFile string) {
	now := time.Now().UTC()
	at := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }
	passes := map[string]string{
		"valid":         `{"pass_id":"P-valid","patient_id":%q,"purpose":"pharmacy","valid_from":%q,"valid_to":%q,"max_distance_m":1500}`,
		"not_yet_valid": `{"pass_id":"P-not_yet_valid","patient_id":%q,"purpose":"grocery","valid_from":%q,"valid_to":%q}`,
		"expired":       `{"pass_id":"P-expired","patient_id":%q,"purpose":"trash","valid_from":%q,"valid_to":%q}`,
		"revoked":       `{"pass_id":"P-revoked","patient_id":%q,"purpose":"pet","valid_from":%q,"valid_to":%q,"revoked_at":"` + at(-10*time.Minute) + `"}`,
	}
	windows := map[string][2]time.Duration{"valid": {-time.Hour, time.Hour}, "not_yet_valid": {time.Hour, 2 * time.Hour},
		"expired": {-3 * time.Hour, -2 * time.Hour}, "revoked": {-time.Hour, time.Hour}}
	var msgs []kafkago.Message
	for status, tmpl := range passes {
		w := windows[status]
		msgs = append(msgs, kafkago.Message{Key: []byte("P-" + status), Value: fmt.Appendf(nil, tmpl, patient, at(w[0]), at(w[1]))})
	}
	if err := k.Publish(t.Context(), cfg.Kafka.Topics.Passes, msgs, 0, nil); err != nil {
		t.Fatal(err)
	}
	client := apiClient(t, caFile)
	base := "https://" + cfg.API.Listen
	get := func(path, token string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	const police, reviewer = "police-token-0123456789", "reviewer-token-0123456789"
	requests := 0
	// The passes sit on several partitions, each read at its own pace:
	// wait for all of them, not for the first.
	if err := waitUntil(t.Context(), time.Minute, func() bool {
		for status := range passes {
			requests++
			if c, _ := get("/v1/passes/P-"+status, police); c != 200 {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal("the passes never all became known to the API")
	}
	for status := range passes {
		code, body := get("/v1/passes/P-"+status, police)
		requests++
		if code != 200 || body["status"] != status || body["pass_id"] != "P-"+status {
			t.Errorf("P-%s: %d %v, want 200 with status %s", status, code, body, status)
		}
		if _, leaked := body["patient_id"]; leaked {
			t.Errorf("the pass endpoint tells the patient id: %v", body)
		}
	}
	for _, tc := range []struct {
		name, path, token string
		want              int
	}{
		{"an unknown pass, asked by a reviewer", "/v1/passes/P-none", reviewer, 404},
		{"no token", "/v1/passes/P-valid", "", 401},
		{"a wrong token", "/v1/passes/P-valid", "police-token-0123456780", 401},
		{"an unknown pass without a token (no hint it is unknown)", "/v1/passes/P-none", "", 401},
		{"a police token on a dossier", "/v1/events/0123456789abcdef0123456789abcdef/dossier", police, 403},
	} {
		requests++
		if code, _ := get(tc.path, tc.token); code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
		}
	}
	// A client that connects and never finishes its handshake or headers
	// is cut off.
	conn, err := net.Dial("tcp", cfg.API.Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Errorf("a silent client was kept for 15 s: %v", err)
	}
	// Every request is audited: rows reach ClickHouse at the next flush.
	ch, err := clickhouse.Connect(t.Context(), cfg.ClickHouse)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	count := func(q string) uint64 {
		var n uint64
		if err := ch.QueryRow(t.Context(), q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	db := cfg.ClickHouse.Database
	if err := waitUntil(t.Context(), 30*time.Second, func() bool {
		return count("SELECT count() FROM "+db+".api_audit") >= uint64(requests)
	}); err != nil {
		t.Errorf("api_audit holds %d rows, want %d", count("SELECT count() FROM "+db+".api_audit"), requests)
	}
	if n := count("SELECT count() FROM " + db + ".api_audit WHERE token_name = 'officer-7' AND role = 'police' AND status = 403"); n != 1 {
		t.Errorf("%d audit rows of officer-7's refused dossier, want 1", n)
	}
	if n := count("SELECT count() FROM " + db + ".api_audit WHERE status = 401 AND token_name = ''"); n < 3 {
		t.Errorf("%d audit rows of refused anonymous requests, want 3", n)
	}
	if n := count("SELECT count() FROM " + db + ".api_audit WHERE positionCaseInsensitive(token_name, 'token-0123') > 0 OR positionCaseInsensitive(path, 'token-0123') > 0"); n != 0 {
		t.Errorf("%d audit rows hold a token", n)
	}
	if n := count("SELECT count() FROM " + db + ".passes WHERE pass_id = 'P-valid'"); n == 0 {
		t.Error("the passes table lacks P-valid")
	}
}

// testDossierAPI checks the dossier endpoint's refusals, then opens a
// breach's dossier in headless Chromium (-update writes testdata/dossier/dossier.png from
// its screenshot).
func testDossierAPI(t *testing.T, cfg *config.Config, caFile string) {
	ch, err := clickhouse.Connect(t.Context(), cfg.ClickHouse)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	var id string
	if err := waitUntil(t.Context(), 30*time.Second, func() bool {
		return ch.QueryRow(t.Context(), "SELECT event_id FROM "+cfg.ClickHouse.Database+".events FINAL WHERE type = 'breach_started' ORDER BY at LIMIT 1").Scan(&id) == nil
	}); err != nil {
		t.Fatal("no breach in ClickHouse to show")
	}
	client := apiClient(t, caFile)
	const reviewer = "reviewer-token-0123456789"
	base := "https://" + cfg.API.Listen + "/v1/events/"
	for _, tc := range []struct {
		name, path, token string
		want              int
	}{
		{"no token", id, "", 401},
		{"an unknown event", "0123456789abcdef0123456789abcdef", reviewer, 404},
		{"the breach", id, reviewer, 200},
	} {
		req, _ := http.NewRequest(http.MethodGet, base+tc.path+"/dossier", nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, resp.StatusCode, body, tc.want)
		}
		if tc.want == 200 && (!bytes.Contains(body, []byte("<svg")) || len(body) > 1<<20) {
			t.Errorf("the dossier is %d bytes and has no map", len(body))
		}
	}
	shot := ""
	if *update { // the README's picture is this test's own screenshot: it cannot fall behind the page
		shot = "../../testdata/dossier/dossier.png"
	}
	testDossierInABrowser(t, base+id+"/dossier", reviewer, shot)
	// Every call, the browser's too, is audited.
	if err := waitUntil(t.Context(), 30*time.Second, func() bool {
		var n uint64
		return ch.QueryRow(t.Context(), "SELECT count() FROM "+cfg.ClickHouse.Database+".api_audit WHERE path LIKE '/v1/events/%/dossier' AND token_name IN ('', 'judge-2')").Scan(&n) == nil && n >= 4 // 401, 404, 200 and the browser's
	}); err != nil {
		t.Error("the dossier requests are not all in api_audit")
	}
}

// apiClient is an HTTPS client that trusts the test CA; its connections
// close when the test ends.
func apiClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	t.Cleanup(client.CloseIdleConnections)
	return client
}
