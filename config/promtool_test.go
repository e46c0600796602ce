package config

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"
)

// RequirePrometheusEnv, set to 1, makes a missing promtool an error
// instead of a skip (make test sets it; make prometheus installs it).
const RequirePrometheusEnv = "QFENCE_REQUIRE_PROMETHEUS"

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv(RequirePrometheusEnv) == "1" {
			t.Fatal("promtool is not installed: run make prometheus (Debian's prometheus package)")
		}
		t.Skip("promtool is not installed (make prometheus); make test runs this")
	}
	return p
}

// alertCase is one promtool unit test of an alert: the series, and when
// the alert must be quiet and when it must fire (with which labels).
type alertCase struct {
	alert  string
	series map[string]string // series → promtool values
	quiet  []string          // eval times when it must not fire
	fires  string            // eval time when it must fire
	labels []map[string]string
}

var alertCases = []alertCase{
	{"QfenceNotReady", map[string]string{`qfence_ready{instance="a"}`: "0x20", `qfence_ready{instance="b"}`: "1x20"},
		[]string{"4m"}, "6m", []map[string]string{{"instance": "a", "severity": "page"}}},
	{"QfenceConsumerLagGrowing", map[string]string{`qfence_consumer_lag{topic="pings",partition="0"}`: "100000+5000x40",
		`qfence_consumer_lag{topic="flat",partition="0"}`: "200000x40"},
		[]string{"5m"}, "30m", []map[string]string{{"topic": "pings", "severity": "page"}}},
	{"QfenceSinkFailing", map[string]string{`qfence_sink_errors_total{sink="clickhouse"}`: "0+1x30", `qfence_sink_rows_total{sink="clickhouse"}`: "100x30",
		`qfence_sink_errors_total{sink="kafka"}`: "0+1x30", `qfence_sink_rows_total{sink="kafka"}`: "0+10x30"},
		[]string{"3m"}, "15m", []map[string]string{{"sink": "clickhouse", "severity": "page"}}},
	{"QfenceDeadLetterRate", map[string]string{`qfence_pings_rejected_total{reason="malformed_json"}`: "0+20x40",
		`qfence_pings_total{outcome="accepted"}`: "0+1000x40"},
		[]string{"10m"}, "25m", []map[string]string{{"severity": "ticket"}}},
	{"QfenceDeadLetterRate", map[string]string{`qfence_pings_rejected_total{reason="malformed_json"}`: "0+4x40",
		`qfence_pings_total{outcome="accepted"}`: "0+1000x40"},
		[]string{"10m", "25m", "39m"}, "", nil},
	{"QfenceNoPings", map[string]string{`qfence_pings_total{outcome="accepted"}`: "500x40", `qfence_active_orders`: "10x40"},
		[]string{"10m"}, "30m", []map[string]string{{"severity": "page"}}},
	{"QfenceNoPings", map[string]string{`qfence_pings_total{outcome="accepted"}`: "0+100x40", `qfence_active_orders`: "10x40"},
		[]string{"30m"}, "", nil},
	{"QfenceStateRecordsSkipped", map[string]string{`qfence_state_restore_errors_total`: "0 0 0 1 1 1 1 1"},
		[]string{"2m"}, "5m", []map[string]string{{"severity": "ticket"}}},
}

// The shipped alert rules pass promtool check rules, and each alert has a
// promtool unit test: it stays quiet when it should, and fires with its
// labels when it should (the annotations are the rule's own).
func TestAlertRulesWithPromtool(t *testing.T) {
	bin := promtool(t)
	rulesFile, err := filepath.Abs("monitoring/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "check", "rules", rulesFile).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	annotations := map[string]map[string]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			annotations[r.Alert] = r.Annotations
		}
	}
	type expAlert struct {
		Labels      map[string]string `yaml:"exp_labels"`
		Annotations map[string]string `yaml:"exp_annotations"`
	}
	type alertTest struct {
		EvalTime  string     `yaml:"eval_time"`
		Alertname string     `yaml:"alertname"`
		ExpAlerts []expAlert `yaml:"exp_alerts"`
	}
	type series struct {
		Series string `yaml:"series"`
		Values string `yaml:"values"`
	}
	type group struct {
		Interval    string      `yaml:"interval"`
		InputSeries []series    `yaml:"input_series"`
		Tests       []alertTest `yaml:"alert_rule_test"`
	}
	doc := struct {
		RuleFiles          []string `yaml:"rule_files"`
		EvaluationInterval string   `yaml:"evaluation_interval"`
		Tests              []group  `yaml:"tests"`
	}{RuleFiles: []string{rulesFile}, EvaluationInterval: "1m"}
	tested := map[string]bool{}
	for _, c := range alertCases {
		if annotations[c.alert] == nil {
			t.Fatalf("no alert %s in the rules", c.alert)
		}
		tested[c.alert] = true
		g := group{Interval: "1m"}
		for s, v := range c.series {
			g.InputSeries = append(g.InputSeries, series{s, v})
		}
		for _, q := range c.quiet {
			g.Tests = append(g.Tests, alertTest{EvalTime: q, Alertname: c.alert, ExpAlerts: []expAlert{}})
		}
		if c.fires != "" {
			var exp []expAlert
			for _, l := range c.labels {
				exp = append(exp, expAlert{Labels: l, Annotations: annotations[c.alert]})
			}
			g.Tests = append(g.Tests, alertTest{EvalTime: c.fires, Alertname: c.alert, ExpAlerts: exp})
		}
		doc.Tests = append(doc.Tests, g)
	}
	for alert := range annotations {
		if !tested[alert] {
			t.Errorf("alert %s has no promtool unit test", alert)
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	testFile := filepath.Join(t.TempDir(), "alerts_test.yaml")
	if err := os.WriteFile(testFile, out, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := exec.Command(bin, "test", "rules", testFile).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) || err != nil {
		t.Fatalf("promtool test rules: %v\n%s\n--- the tests:\n%s", err, res, out)
	}
}
