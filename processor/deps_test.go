package processor_test

import (
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDependenciesPointOneWay enforces the README's rule from the import
// graph (as the Go tree's own go/build deps test does): cmd → config,
// sinks/* → processor/pipeline → processor → geo; the engine (geo,
// processor, processor/dossier) imports no edge library (Kafka,
// ClickHouse, Prometheus, the config format); no edge imports another
// (sinks/edge is their shared helpers; the test harnesses chtest,
// kafkatest and nettest are exempt); nothing outside cmd imports cmd.
func TestDependenciesPointOneWay(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports", "github.com/qfence/qfence/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/qfence/qfence/"
	allowed := map[string][]string{ // a package of the module: the module's packages it may import
		"geo":                nil,
		"geo/synth":          {"geo"},
		"processor":          {"geo"},
		"processor/dossier":  {"geo", "processor"},
		"processor/pipeline": {"geo", "processor"},
		"config":             {"processor"},
		"config/contract":    nil,
		"sinks/edge":         {"config"},
		"sinks/api":          {"processor", "processor/dossier", "processor/pipeline", "sinks/edge"},
		"sinks/clickhouse":   {"config", "processor", "processor/dossier", "processor/pipeline", "sinks/edge"},
		"sinks/kafka":        {"config", "geo", "processor", "processor/pipeline", "sinks/edge"},
		"sinks/local":        {"sinks/edge"},
	}
	engine := []string{"geo", "processor", "processor/dossier"}
	forbidden := []string{"github.com/segmentio/kafka-go", "github.com/twmb/franz-go", "github.com/ClickHouse/", "github.com/prometheus/",
		"github.com/knadh/koanf", "go.yaml.in/yaml", "net/http", "os/exec"}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(p.ImportPath, mod)
		if p.ImportPath == strings.TrimSuffix(mod, "/") {
			continue
		}
		seen++
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, mod+"cmd") && !strings.HasPrefix(name, "cmd") {
				t.Errorf("%s imports %s: nothing outside cmd may", name, imp)
			}
			if slices.Contains(engine, name) {
				for _, f := range forbidden {
					if strings.HasPrefix(imp, f) {
						t.Errorf("the engine package %s imports %s", name, imp)
					}
				}
			}
			may, ruled := allowed[name]
			if !ruled || !strings.HasPrefix(imp, mod) {
				continue
			}
			if dep := strings.TrimPrefix(imp, mod); !slices.Contains(may, dep) {
				t.Errorf("%s imports %s, which the dependency rule does not allow (README, Map of the code)", name, dep)
			}
		}
	}
	if seen < len(allowed) {
		t.Errorf("go list named %d packages, fewer than the %d ruled: the rule is stale", seen, len(allowed))
	}
}
