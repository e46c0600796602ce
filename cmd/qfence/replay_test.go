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
// orders.ndjson, zones.geojson and passes.ndjson (signed with the key of
// pass-keys.txt) and compares the events with NAME.golden.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(scenarios, "*.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Passes.VerifyKeysFile = filepath.Join(scenarios, "pass-keys.txt") // passes.ndjson's third is forged
	n := 0
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".ndjson")
		if name == "orders" || name == "passes" {
			continue
		}
		n++
		t.Run(name, func(t *testing.T) {
			in, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			var stdout, notes, stderr bytes.Buffer
			if err := replay(&cfg, replayInputs{orders: filepath.Join(scenarios, "orders.ndjson"), zones: filepath.Join(scenarios, "zones.geojson"),
				passes: filepath.Join(scenarios, "passes.ndjson")}, in, &stdout, &notes, &stderr); err != nil {
				t.Fatalf("replay: %v\n%s", err, stderr.String())
			}
			checkGolden(t, filepath.Join(scenarios, name+".notifications"), notes.Bytes())
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

// checkGolden compares got with the golden file (absent: no output), and
// rewrites it under -update.
func checkGolden(t *testing.T, golden string, got []byte) {
	t.Helper()
	if *update {
		if len(got) == 0 {
			_ = os.Remove(golden)
		} else if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (if the change is intended: go test ./cmd/qfence -run TestScenarios -update)\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
}
