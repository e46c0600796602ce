package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qfence/qfence/config/contract"
)

func runQfence(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// qfence version and --version say the build, the Go version and the
// contract it implements.
func TestVersionNamesTheContract(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := runQfence(t, args...)
		if err != nil || !strings.HasPrefix(out, "qfence ") || !strings.Contains(out, "contract "+contract.Version()) || !strings.Contains(out, "go1.") {
			t.Errorf("%v: %q, %v", args, out, err)
		}
	}
}

// qfence check validates as run would, files included, without a server:
// a good configuration is printed with its secrets redacted; a bad one is
// refused with every problem.
func TestCheckValidatesTheConfigurationWithoutServers(t *testing.T) {
	dir := t.TempDir()
	const secret = "a pseudonymisation key of 32+ bytes, really"
	t.Setenv("QFENCE_PRIVACY_PSEUDONYMIZE_KEY", secret)
	t.Setenv("QFENCE_KAFKA_BROKERS", "127.0.0.1:1") // nothing listens: check must not dial
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("rules:\n  margin_m: 30\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runQfence(t, "check", "--config", good)
	if err != nil || !strings.Contains(out, "the configuration is valid") || !strings.Contains(out, "margin_m: 30") ||
		!strings.Contains(out, "pseudonymize_key: '[redacted]'") || strings.Contains(out, secret) {
		t.Errorf("a good configuration: %v\n%s", err, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("zones:\n  file: "+filepath.Join(dir, "none.geojson")+"\napi:\n  listen: 127.0.0.1:0\n  tokens_file: "+filepath.Join(dir, "none")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runQfence(t, "check", "--config", bad); err == nil || !strings.Contains(err.Error(), "zones file") || !strings.Contains(err.Error(), "api.tokens_file") {
		t.Errorf("a bad configuration: %v", err)
	}
}
