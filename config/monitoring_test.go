package config

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// contractMetrics are the metrics qfence exports (the README's table); the
// dashboard and the alerts may name no other.
var contractMetrics = []string{"qfence_pings_total", "qfence_pings_rejected_total", "qfence_events_total", "qfence_open_breaches", "qfence_known_mislocations",
	"qfence_active_orders", "qfence_orders_total", "qfence_event_latency_seconds", "qfence_sink_rows_total", "qfence_sink_flush_seconds",
	"qfence_sink_errors_total", "qfence_consumer_lag", "qfence_zones", "qfence_zones_reload_errors_total", "qfence_build_info", "qfence_ready", "qfence_state_restore_errors_total", "qfence_passes_total", "qfence_active_passes", "up"}

var metricName = regexp.MustCompile(`\b(qfence_[a-z_]+|up)\b`)

func checkNames(t *testing.T, where, expr string) {
	t.Helper()
	names := metricName.FindAllString(expr, -1)
	if len(names) == 0 {
		t.Errorf("%s: %q names no metric", where, expr)
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")
		if !slices.Contains(contractMetrics, base) {
			t.Errorf("%s: %q names %s, which qfence does not export", where, expr, n)
		}
	}
}

func TestDashboardNamesOnlyExistingMetrics(t *testing.T) {
	b, err := os.ReadFile("monitoring/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	panels, queries, err := DashboardQueries(b)
	if err != nil {
		t.Fatal(err)
	}
	if panels < 6 {
		t.Fatalf("%d panels", panels)
	}
	for _, q := range queries {
		checkNames(t, q.Panel, q.Expr)
	}
}

func TestAlertsNameOnlyExistingMetricsAndCarryRunbooks(t *testing.T) {
	b, err := os.ReadFile("monitoring/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			checkNames(t, r.Alert, r.Expr)
			if len(r.Annotations["runbook"]) < 40 {
				t.Errorf("%s has no runbook worth the name", r.Alert)
			}
		}
	}
	if n < 5 {
		t.Errorf("%d alerts, want lag, sink, readiness, DLQ and no-pings", n)
	}
}
