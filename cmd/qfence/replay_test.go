package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qfence/qfence/config"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/scenarios")

const scenarios = "../../testdata/scenarios"

// TestScenarios replays every testdata/scenarios/NAME.ndjson with the shared
// orders.ndjson and zones.geojson and compares the events with NAME.golden.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(scenarios, "*.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	n := 0
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".ndjson")
		if name == "orders" {
			continue
		}
		n++
		t.Run(name, func(t *testing.T) {
			in, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			var stdout, stderr bytes.Buffer
			if err := replay(&cfg, filepath.Join(scenarios, "orders.ndjson"), filepath.Join(scenarios, "zones.geojson"), in, &stdout, &stderr); err != nil {
				t.Fatalf("replay: %v\n%s", err, stderr.String())
			}
			golden := filepath.Join(scenarios, name+".golden")
			if *update {
				if err := os.WriteFile(golden, stdout.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./cmd/qfence -run TestScenarios -update to create it)", err)
			}
			if !bytes.Equal(stdout.Bytes(), want) {
				t.Errorf("events differ from %s (if the change is intended: go test ./cmd/qfence -run TestScenarios -update)\ngot:\n%s\nwant:\n%s", golden, stdout.String(), want)
			}
		})
	}
	if n == 0 {
		t.Fatal("no scenarios found")
	}
}
