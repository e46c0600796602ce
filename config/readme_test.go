package config

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/qfence/qfence/processor"
)

// TestTheReadmeStaysTrue keeps the README's reference in step with the
// code: every configuration key, every metric qfence registers (every
// "qfence_…" name in the code), every topic and every event type appears
// in it, and it counts none of them in words (the eight topics became
// nine, and the README did not follow).
func TestTheReadmeStaysTrue(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	var missing []string
	need := func(what, s string) {
		if !strings.Contains(readme, s) {
			missing = append(missing, what+" "+s)
		}
	}
	for _, key := range knownKeys() {
		need("key", key)
	}
	topics := Default().Kafka.Topics
	for _, topic := range []string{topics.Pings, topics.Orders, topics.Violations, topics.State, topics.PingsDLQ, topics.OrdersDLQ,
		topics.Passes, topics.PassesDLQ, topics.Notifications} {
		need("topic", "`"+topic+"`")
	}
	for _, typ := range processor.EventTypes {
		need("event type", "`"+typ.String()+"`")
	}
	metric := regexp.MustCompile(`Name:\s*"(qfence_[a-z_]+)"`)
	files, err := filepath.Glob("../*/*.go")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("../*/*/*.go")
	more2, _ := filepath.Glob("../*/*/*/*.go")
	for _, f := range append(append(files, more...), more2...) {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range metric.FindAllStringSubmatch(string(src), -1) {
			need("metric (from "+filepath.Base(f)+")", "| `"+m[1]+"` |") // a row of the Metrics table
		}
	}
	if len(missing) > 0 {
		t.Errorf("the README does not mention:\n  %s", strings.Join(missing, "\n  "))
	}
	words := regexp.MustCompile(`(?i)\b(two|three|four|five|six|seven|eight|nine|ten|eleven|twelve) (topics|tables|metrics|event types|endpoints)\b`)
	if m := words.FindAllString(readme, -1); len(m) > 0 {
		t.Errorf("the README counts in words what changes with the code: %q", m)
	}
}

// Every QFENCE_ variable the repository names (code, Makefile, CI) is a
// configuration key's or one of toolVars: otherwise Load would refuse the
// environment the tests and tools run in.
func TestEveryQfenceVariableIsKnown(t *testing.T) {
	keys := map[string]bool{}
	for _, k := range knownKeys() {
		keys[EnvName(k)] = true
	}
	name := regexp.MustCompile(`QFENCE_[A-Z0-9_]*[A-Z0-9]`)
	var files []string
	for _, pattern := range []string{"../*/*.go", "../*/*/*.go", "../*/*/*/*.go", "../Makefile", "../.ci/run"} {
		m, _ := filepath.Glob(pattern)
		files = append(files, m...)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "config/config_test.go") { // its typos are on purpose
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range name.FindAllString(string(b), -1) {
			if !keys[n] && !slices.Contains(toolVars, n) && !keys[n+"_FILE"] && n != "QFENCE_" {
				t.Errorf("%s names %s, neither a key nor a tool's variable (add it to toolVars)", f, n)
			}
		}
	}
}
