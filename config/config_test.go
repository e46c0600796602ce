package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestBadConfigsAreRefusedWithTheirReason: every testdata/config/NAME.bad.yaml
// is refused, and the error holds each line of NAME.bad.err.
func TestBadConfigsAreRefusedWithTheirReason(t *testing.T) {
	files, err := filepath.Glob("../testdata/config/*.bad.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad configs found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".err")
			if err != nil {
				t.Fatalf("every bad config needs the error it must produce: %v", err)
			}
			_, err = Load(f, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, line := range strings.Split(strings.TrimSpace(string(want)), "\n") {
				if !strings.Contains(err.Error(), line) {
					t.Errorf("error lacks %q:\n%v", line, err)
				}
			}
		})
	}
}

func TestTheExampleDocumentsEveryKeyWithItsDefault(t *testing.T) {
	got, err := Load("qfence.example.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("the example differs from the defaults:\n got  %+v\n want %+v", *got, want)
	}
	example, _ := os.ReadFile("qfence.example.yaml")
	for _, key := range knownKeys() {
		leaf := key[strings.LastIndex(key, ".")+1:]
		if !strings.Contains(string(example), leaf+":") && !isSecret(key) {
			t.Errorf("the example does not document %s", key)
		}
	}
}

func TestEnvironmentOverridesTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte("kafka:\n  topics:\n    pings: from-file\nrules:\n  breach_after: 7m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, []string{"QFENCE_KAFKA_TOPICS_PINGS=from-env", "QFENCE_LIMITS_MAX_INFLIGHT_ROWS=1234",
		"QFENCE_KAFKA_BROKERS=a:1,b:2", "QFENCE_KAFKA_CREATE_TOPICS=false", "UNRELATED=1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Kafka.Topics.Pings != "from-env" || c.Limits.MaxInflightRows != 1234 || c.Rules.BreachAfter != 7*time.Minute ||
		len(c.Kafka.BrokerList()) != 2 || c.Kafka.CreateTopics {
		t.Errorf("got %+v", c)
	}
}

// TestSecretsNeverPrint: a secret set in the environment appears in no error
// and in no formatting of the config.
func TestSecretsNeverPrint(t *testing.T) {
	const secret = "hunter2-very-secret-and-32-bytes-long"
	env := []string{"QFENCE_CLICKHOUSE_PASSWORD=" + secret, "QFENCE_KAFKA_SASL_PASSWORD=" + secret,
		"QFENCE_PRIVACY_PSEUDONYMIZE_KEY=" + secret, "QFENCE_KAFKA_SASL_MECHANISM=PLAIN", "QFENCE_KAFKA_SASL_USERNAME=u"}
	c, err := Load("", env)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.ClickHouse.Password) != secret || string(c.Privacy.PseudonymizeKey) != secret {
		t.Fatal("secrets were not read from the environment")
	}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", *c, *c, *c, c.Kafka.SASL.Password)} {
		if strings.Contains(s, secret) {
			t.Fatalf("a secret printed: %s", s)
		}
	}
	_, err = Load("", append(env, "QFENCE_LIMITS_MAX_INFLIGHT_ROWS=nope"))
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("error %v holds the secret or is missing", err)
	}
}

func TestSecretFromAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, []byte("from-a-file-of-at-least-32-bytes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load("", []string{"QFENCE_PRIVACY_PSEUDONYMIZE_KEY_FILE=" + path})
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Privacy.PseudonymizeKey) != "from-a-file-of-at-least-32-bytes" {
		t.Errorf("key = %q", string(c.Privacy.PseudonymizeKey))
	}
}

// A key file that is empty, unreadable or short, or a short key in the
// environment, is refused: pseudonymisation must never fail open.
func TestAWeakPseudonymizationKeyIsRefused(t *testing.T) {
	dir := t.TempDir()
	empty, short := filepath.Join(dir, "empty"), filepath.Join(dir, "short")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(short, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  string
		want string
	}{
		{"an empty key file", "QFENCE_PRIVACY_PSEUDONYMIZE_KEY_FILE=" + empty, "holds 0 bytes, at least 32"},
		{"a short key file", "QFENCE_PRIVACY_PSEUDONYMIZE_KEY_FILE=" + short, "holds 5 bytes, at least 32"},
		{"a missing key file", "QFENCE_PRIVACY_PSEUDONYMIZE_KEY_FILE=" + filepath.Join(dir, "none"), "privacy.pseudonymize_key_file: open"},
		{"a short key", "QFENCE_PRIVACY_PSEUDONYMIZE_KEY=abc", "QFENCE_PRIVACY_PSEUDONYMIZE_KEY holds 3 bytes"},
		// The random schedule's key, by the same rule.
		{"a short schedule key", "QFENCE_CHECKINS_SCHEDULE_KEY=abc", "checkins.schedule_key: QFENCE_CHECKINS_SCHEDULE_KEY holds 3 bytes"},
		{"a placeholder schedule key", "QFENCE_CHECKINS_SCHEDULE_KEY=" + strings.Repeat("x", 40), "holds only 1 distinct bytes"},
		{"an empty schedule key file", "QFENCE_CHECKINS_SCHEDULE_KEY_FILE=" + empty, "checkins.schedule_key: the file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load("", []string{tc.env})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// checkins.schedule_key is a secret: refused in the config file, read from
// the environment or its file, redacted when printed, and handed to the
// engine.
func TestTheScheduleKeyIsASecret(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "qfence.yaml")
	if err := os.WriteFile(file, []byte("checkins:\n  schedule_key: in-the-file-and-long-enough-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(file, nil); err == nil || !strings.Contains(err.Error(), "checkins.schedule_key: secrets are not read from the config file") {
		t.Errorf("a schedule key in the config file: %v", err)
	}
	const key = "k3y-of-32-bytes-or-more-0123456789abcdef"
	keyFile := filepath.Join(dir, "schedule.key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, env := range []string{"QFENCE_CHECKINS_SCHEDULE_KEY=" + key, "QFENCE_CHECKINS_SCHEDULE_KEY_FILE=" + keyFile} {
		c, err := Load("", []string{env})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.EngineRules().Checkins.ScheduleKey; got != key || fmt.Sprint(c.Checkins.ScheduleKey) != "[redacted]" {
			t.Errorf("%s: the engine has %q, printed %v", env, got, c.Checkins.ScheduleKey)
		}
	}
}

// A value that cannot be read is reported once, with its key, not again as
// out of range.
func TestAnUnreadableValueIsOneError(t *testing.T) {
	_, err := Load("", []string{"QFENCE_LIMITS_MAX_INFLIGHT_ROWS=lots"})
	if err == nil {
		t.Fatal("accepted")
	}
	if n := strings.Count(err.Error(), "limits.max_inflight_rows"); n != 1 {
		t.Errorf("%d errors name limits.max_inflight_rows, want 1:\n%v", n, err)
	}
}

// FuzzConfig: any file is either loaded or refused with an error naming a
// key or the YAML problem; nothing panics.
func FuzzConfig(f *testing.F) {
	for _, s := range []string{"kafka:\n  brokers: a:1\n", "rules:\n  breach_after: 5m\n", "{", "- 1", "log: {format: json}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path, nil)
		if err == nil && c == nil {
			t.Fatal("no config and no error")
		}
	})
}

// A QFENCE_ variable that names no key is refused with the nearest key's
// name: a typo in a deployment's environment must not pass unnoticed.
func TestAnUnknownEnvironmentVariableIsRefused(t *testing.T) {
	_, err := Load("", []string{"QFENCE_KAFKA_SESION_TIMEOUT=3s"})
	if err == nil || !strings.Contains(err.Error(), "QFENCE_KAFKA_SESION_TIMEOUT: names no configuration key (did you mean QFENCE_KAFKA_SESSION_TIMEOUT?)") {
		t.Errorf("got %v", err)
	}
	_, err = Load("", []string{"QFENCE_CLICKHOUSE_ADRR=ch:9000"})
	if err == nil || !strings.Contains(err.Error(), "did you mean QFENCE_CLICKHOUSE_ADDR?") {
		t.Errorf("a typo of QFENCE_CLICKHOUSE_ADDR: %v", err)
	}
	if _, err := Load("", []string{"QFENCE_SOAK=10m", "PATH=/bin", "QFENCE_CLICKHOUSE_ADDR=ch:9000"}); err != nil {
		t.Errorf("a tool's variable, another program's and a key: %v", err)
	}
}

// The partition loops and the decoders take their settings from the keys
// (the daemon hands them to the Kafka side; it has no constants of its own).
func TestTheLoopAndDecodersFollowTheConfig(t *testing.T) {
	c, err := Load("", []string{"QFENCE_KAFKA_COMMIT_INTERVAL=2s", "QFENCE_LIMITS_MAX_BATCH=10", "QFENCE_SHUTDOWN_TIMEOUT=30s",
		"QFENCE_LIMITS_MAX_INFLIGHT_ROWS=5000", "QFENCE_LIMITS_MAX_MESSAGE_BYTES=1000", "QFENCE_RULES_DEFAULT_ACCURACY_M=30"})
	if err != nil {
		t.Fatal(err)
	}
	l := c.Loop()
	if l.CommitEvery != 2*time.Second || l.MaxBatch != 10 || l.Drain != 20*time.Second || l.MaxInFlight != 5000 || l.Tick != time.Second {
		t.Errorf("loop %+v", l)
	}
	if d := c.PingDecoder(); d.MaxBytes != 1000 || d.DefaultAccuracy != 30 || d.MaxSkew != 5*time.Minute {
		t.Errorf("ping decoder %+v", d)
	}
	if d := c.PassDecoder(nil); d.MaxBytes != 1000 || d.MaxDuration != 12*time.Hour || d.Keys != nil {
		t.Errorf("pass decoder %+v", d)
	}
	def := Default()
	if l := def.Loop(); l.CommitEvery != 5*time.Second || l.MaxBatch != 2000 || def.Kafka.HeartbeatInterval != time.Second {
		t.Errorf("the defaults moved: %+v, heartbeat %s", l, def.Kafka.HeartbeatInterval)
	}
}
