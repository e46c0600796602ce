// Package config loads qfence's one YAML file, applies QFENCE_* environment
// overrides, and validates everything in one pass into typed values.
// Defaults live in Default (and, for the rules, processor.DefaultRules).
package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/providers/structs"
	"github.com/knadh/koanf/v2"

	"github.com/qfence/qfence/processor"
)

// Config is the whole configuration.
type Config struct {
	Kafka           Kafka         `koanf:"kafka"`
	ClickHouse      ClickHouse    `koanf:"clickhouse"`
	Orders          Orders        `koanf:"orders"`
	Passes          Passes        `koanf:"passes"`
	API             API           `koanf:"api"`
	Zones           Zones         `koanf:"zones"`
	Metrics         Metrics       `koanf:"metrics"`
	Privacy         Privacy       `koanf:"privacy"`
	Rules           Rules         `koanf:"rules"`
	Checkins        Checkins      `koanf:"checkins"`
	Notifications   Notifications `koanf:"notifications"`
	Limits          Limits        `koanf:"limits"`
	Log             Log           `koanf:"log"`
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`
}

// Kafka is the `kafka` section.
type Kafka struct {
	// Brokers is "embedded" or a comma-separated host:port list.
	Brokers      string `koanf:"brokers"`
	GroupID      string `koanf:"group_id"`
	Topics       Topics `koanf:"topics"`
	CreateTopics bool   `koanf:"create_topics"`
	// Partitions is used when qfence creates the pings and state topics.
	Partitions int `koanf:"partitions"`
	// SessionTimeout is the consumer group's session: how long the group
	// waits for a member that stopped heartbeating (killed, cut off)
	// before its partitions move to another instance.
	SessionTimeout time.Duration `koanf:"session_timeout"`
	// HeartbeatInterval is how often a member tells the group it is alive.
	HeartbeatInterval time.Duration `koanf:"heartbeat_interval"`
	// CommitInterval spaces a partition's checkpoints and offset commits:
	// a crash re-reads at most about this much (deduplicated).
	CommitInterval time.Duration `koanf:"commit_interval"`
	TLS            TLS           `koanf:"tls"`
	SASL           SASL          `koanf:"sasl"`
}

// MinSessionTimeout and MaxSessionTimeout bound kafka.session_timeout (the
// brokers' group.min/max.session.timeout.ms bound it too: Kafka's defaults
// are 6s and 30m).
const (
	MinSessionTimeout = 3 * time.Second
	MaxSessionTimeout = 30 * time.Minute
)

// Topics names every topic qfence uses.
type Topics struct {
	Pings      string `koanf:"pings"`
	Orders     string `koanf:"orders"`
	Violations string `koanf:"violations"`
	State      string `koanf:"state"`
	PingsDLQ   string `koanf:"pings_dlq"`
	OrdersDLQ  string `koanf:"orders_dlq"`
	Passes     string `koanf:"passes"`
	PassesDLQ  string `koanf:"passes_dlq"`
	// Notifications are the messages to patients (contract 3.3).
	Notifications string `koanf:"notifications"`
	// Dispositions are what people decided about events (contract 1.5).
	Dispositions    string `koanf:"dispositions"`
	DispositionsDLQ string `koanf:"dispositions_dlq"`
}

// TLS configures a client TLS connection.
type TLS struct {
	Enabled            bool   `koanf:"enabled"`
	CAFile             string `koanf:"ca_file"`
	CertFile           string `koanf:"cert_file"`
	KeyFile            string `koanf:"key_file"`
	InsecureSkipVerify bool   `koanf:"insecure_skip_verify"`
}

// SASL configures Kafka authentication.
type SASL struct {
	// Mechanism is "", PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	Mechanism    string `koanf:"mechanism"`
	Username     string `koanf:"username"`
	Password     Secret `koanf:"password"`
	PasswordFile string `koanf:"password_file"`
}

// ClickHouse is the `clickhouse` section.
type ClickHouse struct {
	Addr          string        `koanf:"addr"`
	Database      string        `koanf:"database"`
	Username      string        `koanf:"username"`
	Password      Secret        `koanf:"password"`
	PasswordFile  string        `koanf:"password_file"`
	TLS           TLS           `koanf:"tls"`
	RetentionDays int           `koanf:"retention_days"`
	BatchRows     int           `koanf:"batch_rows"`
	FlushInterval time.Duration `koanf:"flush_interval"`
	Timeout       time.Duration `koanf:"timeout"`
	// Compression of the native protocol: auto (none to a loopback
	// address, lz4 elsewhere, as clickhouse-client does since 21.4), lz4,
	// zstd or none.
	Compression string `koanf:"compression"`
	// Cluster is a cluster of the servers' remote_servers ("": one
	// server): local tables on every shard, Distributed tables under the
	// contract's names.
	Cluster string `koanf:"cluster"`
}

// File names an optional input file.
type File struct {
	File string `koanf:"file"`
}

// Orders is the `orders` section.
type Orders struct {
	File string `koanf:"file"`
	// CoPartitioned reads the orders topic co-partitioned with pings: an
	// instance holds only the orders of the pings partitions it owns,
	// loaded when a partition is assigned (before its first ping) and
	// dropped when it is revoked. Off: every instance holds the whole
	// topic (a global table).
	CoPartitioned bool `koanf:"co_partitioned"`
}

// Passes is the `passes` section (QR passes, contract 1.4).
type Passes struct {
	File string `koanf:"file"`
	// VerifyKeysFile holds the issuers' Ed25519 public keys, one base64 key
	// a line; without it signatures are not checked (a warning at start).
	VerifyKeysFile string        `koanf:"verify_keys_file"`
	MaxDuration    time.Duration `koanf:"max_duration"`
}

// API is the `api` section: what people reach (officers' scanners,
// reviewers), never without a token.
type API struct {
	Listen     string `koanf:"listen"` // "" is off
	TokensFile string `koanf:"tokens_file"`
	TLS        struct {
		CertFile string `koanf:"cert_file"`
		KeyFile  string `koanf:"key_file"`
	} `koanf:"tls"`
}

// Zones is the `zones` section.
type Zones struct {
	File string `koanf:"file"`
	// AllowEmpty accepts a zones file with no features (every zone
	// dropped); without it such a file is taken for a mistake and refused.
	AllowEmpty bool `koanf:"allow_empty"`
}

// Metrics is the `metrics` section: the operators' HTTP listener.
type Metrics struct {
	Listen string `koanf:"listen"`
	// WebConfigFile is a Prometheus exporter-toolkit web configuration
	// (TLS and basic auth for /metrics, /healthz, /readyz).
	WebConfigFile string `koanf:"web_config_file"`
	// Pprof serves /debug/pprof/ (off by default: profiles reveal memory).
	Pprof bool `koanf:"pprof"`
}

// Privacy is the `privacy` section.
type Privacy struct {
	PseudonymizeKey     Secret `koanf:"pseudonymize_key"`
	PseudonymizeKeyFile string `koanf:"pseudonymize_key_file"`
}

// Limits is the `limits` section.
type Limits struct {
	MaxMessageBytes int           `koanf:"max_message_bytes"`
	MaxClockSkew    time.Duration `koanf:"max_clock_skew"`
	MaxInflightRows int           `koanf:"max_inflight_rows"`
	// MaxBatch bounds the messages a partition decides as one batch.
	MaxBatch int `koanf:"max_batch"`
}

// Log is the `log` section.
type Log struct {
	Format string `koanf:"format"` // text or json
	Level  string `koanf:"level"`  // debug, info, warn, error
}

// Secret is a string that never prints: it is redacted in logs, errors and
// fmt verbs, so a secret cannot leak by accident.
type Secret string

func (Secret) String() string { return "[redacted]" }

// GoString redacts %#v too.
func (Secret) GoString() string { return "[redacted]" }

// Default is the configuration with nothing set: every default of
// config/contract/CONTRACT.md section 5.
func Default() Config {
	return Config{
		Kafka: Kafka{
			Brokers: "embedded",
			GroupID: "qfence",
			Topics: Topics{Pings: "pings", Orders: "quarantine-orders", Violations: "violations",
				State: "qfence-state", PingsDLQ: "pings-dlq", OrdersDLQ: "quarantine-orders-dlq",
				Passes: "passes", PassesDLQ: "passes-dlq", Notifications: "notifications",
				Dispositions: "dispositions", DispositionsDLQ: "dispositions-dlq"},
			CreateTopics:      true,
			Partitions:        4,
			SessionTimeout:    10 * time.Second,
			HeartbeatInterval: time.Second,
			CommitInterval:    5 * time.Second,
		},
		ClickHouse: ClickHouse{Addr: "127.0.0.1:9000", Database: "qfence", Username: "default",
			RetentionDays: 28, BatchRows: 50000, FlushInterval: time.Second, Timeout: 30 * time.Second, Compression: "auto"},
		Metrics:  Metrics{Listen: "127.0.0.1:9464"},
		Passes:   Passes{MaxDuration: 12 * time.Hour},
		Rules:    rulesOf(processor.DefaultRules()),
		Checkins: checkinsOf(processor.DefaultRules().Checkins),
		Notifications: Notifications{Templates: Templates{Warning: processor.DefaultWarningTemplate,
			CheckinRequest: processor.DefaultCheckinRequestTemplate}, MaxTextBytes: 480},
		Limits:          Limits{MaxMessageBytes: 4096, MaxClockSkew: 5 * time.Minute, MaxInflightRows: 200000, MaxBatch: 2000},
		Log:             Log{Format: "text", Level: "info"},
		ShutdownTimeout: 15 * time.Second,
	}
}

// toolVars are the QFENCE_ variables that are not configuration keys:
// what qfence's simulator, benchmarks and tests read. Any other QFENCE_
// variable that names no key is refused (a typo must not pass unnoticed).
var toolVars = []string{"QFENCE_SEED", "QFENCE_DRAIN_PROFILE", "QFENCE_SOAK", "QFENCE_SOAK_REPORT", "QFENCE_TEST_BINARY",
	"QFENCE_TEST_LOG", "QFENCE_BENCH_PASSES", "QFENCE_BENCH_ORDERS", "QFENCE_BENCH_PATIENTS", "QFENCE_BENCH_SESSION_TIMEOUT", "QFENCE_BENCH_GOMEMLIMIT", "QFENCE_REQUIRE_CLICKHOUSE", "QFENCE_REQUIRE_PROMETHEUS"}

// nearest is the environment name of envKeys closest to name (edit
// distance).
func nearest(name string, envKeys map[string]string) string {
	best, bestD := "", 1<<30
	for _, cand := range slices.Sorted(maps.Keys(envKeys)) {
		if d := editDistance(name, cand); d < bestD {
			best, bestD = cand, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// secretKeys may come only from the environment (or their _file key).
var secretKeys = []string{"kafka.sasl.password", "clickhouse.password", "privacy.pseudonymize_key", "checkins.schedule_key"}

func isSecret(key string) bool { return slices.Contains(secretKeys, key) }

// knownKeys lists every configuration key.
func knownKeys() []string {
	k := koanf.New(".")
	_ = k.Load(structs.Provider(Default(), "koanf"), nil)
	return k.Keys()
}

// Load reads the YAML file at path ("" for none), applies the environment
// (environ is os.Environ() in production) and validates. Every problem is
// reported, each naming its key; the error never holds a secret's value.
func Load(path string, environ []string) (*Config, error) {
	var data []byte
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("read config file: %w", err)
		}
	}
	return parse(path, data, environ)
}

func parse(path string, data []byte, environ []string) (*Config, error) {
	k := koanf.New(".")
	if err := k.Load(structs.Provider(Default(), "koanf"), nil); err != nil {
		return nil, fmt.Errorf("BUG: load defaults: %w", err)
	}
	known := k.All()
	envKeys := make(map[string]string, len(known))
	for key := range known {
		envKeys[EnvName(key)] = key
	}
	var errs []error
	if len(data) > 0 {
		file := koanf.New(".")
		if err := file.Load(rawbytes.Provider(data), yaml.Parser()); err != nil {
			return nil, fmt.Errorf("config file %s: not valid YAML: %w", path, err)
		}
		for _, key := range file.Keys() {
			if _, ok := known[key]; !ok {
				errs = append(errs, fmt.Errorf("%s: unknown key (see config/qfence.example.yaml)", key))
			}
			if slices.Contains(secretKeys, key) {
				errs = append(errs, fmt.Errorf("%s: secrets are not read from the config file; set %s or %s_file", key, EnvName(key), key))
			}
		}
		if err := k.Merge(file); err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "QFENCE_") && envKeys[name] == "" && !slices.Contains(toolVars, name) {
			errs = append(errs, fmt.Errorf("%s: names no configuration key (did you mean %s?)", name, nearest(name, envKeys)))
		}
	}
	err := k.Load(env.Provider(".", env.Opt{
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, value string) (string, any) {
			key, ok := envKeys[name]
			if !ok {
				return "", nil // not one of ours: ignored
			}
			return key, value
		},
	}), nil)
	if err != nil {
		return nil, fmt.Errorf("read environment: %w", err)
	}
	c := &Config{}
	undecoded := map[string]bool{}
	for key := range known {
		// Decode key by key, so that every bad value is reported with its key.
		if derr := decode(k, key, c); derr != nil {
			errs = append(errs, derr)
			undecoded[key] = true
		}
	}
	if err := c.resolveSecrets(); err != nil {
		errs = append(errs, err)
	}
	// A value that could not be read is reported once, not again as out of
	// range.
	for _, err := range c.validate() {
		if key, _, _ := strings.Cut(err.Error(), ":"); !undecoded[key] {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		where := "configuration"
		if path != "" {
			where = "config file " + path
		}
		return nil, fmt.Errorf("%s is invalid:\n  %w", where, joinIndented(errs))
	}
	return c, nil
}

func decode(k *koanf.Koanf, key string, c *Config) error {
	one := koanf.New(".")
	_ = one.Set(key, k.Get(key))
	dc := &mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(mapstructure.StringToTimeDurationHookFunc()),
		// Weak typing lets environment strings become numbers and booleans.
		WeaklyTypedInput: true,
		TagName:          "koanf",
	}
	if err := one.UnmarshalWithConf("", c, koanf.UnmarshalConf{DecoderConfig: dc}); err != nil {
		v := fmt.Sprint(k.Get(key))
		if slices.Contains(secretKeys, key) {
			v = "[redacted]"
		}
		return fmt.Errorf("%s: cannot use %q: %s", key, v, reasonOf(err))
	}
	return nil
}

func reasonOf(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return strings.TrimSpace(msg)
}

type indented []error

func (e indented) Error() string {
	parts := make([]string, len(e))
	for i, err := range e {
		parts[i] = err.Error()
	}
	return strings.Join(parts, "\n  ")
}

func (e indented) Unwrap() []error { return e }

func joinIndented(errs []error) error { return indented(errs) }

// EnvName is the environment variable that overrides key:
// kafka.topics.pings → QFENCE_KAFKA_TOPICS_PINGS.
func EnvName(key string) string {
	return "QFENCE_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// MinPseudonymizeKey is the shortest pseudonymisation key accepted, in
// bytes: as long as the HMAC-SHA256 output, as RFC 2104 advises.
const MinPseudonymizeKey = 32

func (c *Config) resolveSecrets() error {
	var errs []error
	read := func(s *Secret, file, key string) {
		if file == "" {
			return
		}
		b, err := os.ReadFile(file)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s_file: %w", key, err))
			return
		}
		*s = Secret(strings.TrimRight(string(b), "\r\n"))
	}
	read(&c.Kafka.SASL.Password, c.Kafka.SASL.PasswordFile, "kafka.sasl.password")
	read(&c.ClickHouse.Password, c.ClickHouse.PasswordFile, "clickhouse.password")
	read(&c.Privacy.PseudonymizeKey, c.Privacy.PseudonymizeKeyFile, "privacy.pseudonymize_key")
	read(&c.Checkins.ScheduleKey, c.Checkins.ScheduleKeyFile, "checkins.schedule_key")
	// A short, weak or empty key must not quietly weaken or switch off
	// pseudonymisation (an empty key file once wrote real ids) or the
	// secrecy of the random schedule.
	for _, k := range []struct {
		key  Secret
		file string
		name string
	}{{c.Privacy.PseudonymizeKey, c.Privacy.PseudonymizeKeyFile, "privacy.pseudonymize_key"},
		{c.Checkins.ScheduleKey, c.Checkins.ScheduleKeyFile, "checkins.schedule_key"}} {
		if k.key == "" && k.file == "" {
			continue
		}
		where := EnvName(k.name)
		if k.file != "" {
			where = "the file " + k.file
		}
		if why := weakKey(string(k.key)); why != "" {
			errs = append(errs, fmt.Errorf("%s: %s %s (make one with: head -c 32 /dev/urandom | base64)", k.name, where, why))
		}
	}
	return errors.Join(errs...)
}

// weakKey says why a secret key is too weak to use ("" when it is not):
// shorter than MinPseudonymizeKey bytes, or of fewer than 8 distinct bytes
// (a key of one character repeated, a placeholder).
func weakKey(key string) string {
	if len(key) < MinPseudonymizeKey {
		return fmt.Sprintf("holds %d bytes, at least %d are needed", len(key), MinPseudonymizeKey)
	}
	var seen [256]bool
	n := 0
	for i := 0; i < len(key); i++ {
		if !seen[key[i]] {
			seen[key[i]], n = true, n+1
		}
	}
	if n < 8 {
		return fmt.Sprintf("holds only %d distinct bytes: a placeholder, not a random key", n)
	}
	return ""
}

func (c *Config) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if len(c.Kafka.BrokerList()) == 0 {
		bad("kafka.brokers", "must be \"embedded\" or a comma-separated list of host:port")
	}
	for _, b := range c.Kafka.BrokerList() {
		if _, _, err := net.SplitHostPort(b); err != nil && !c.Kafka.Embedded() {
			bad("kafka.brokers", "%q is not host:port", b)
		}
	}
	// Heartbeats go every second: a session under 3 s would expire on one
	// slow heartbeat; the brokers' own bounds (6 s to 30 min by default)
	// may refuse more of it.
	durationIn(bad, "kafka.session_timeout", c.Kafka.SessionTimeout, MinSessionTimeout, MaxSessionTimeout)
	// A session must outlive a few lost heartbeats.
	durationIn(bad, "kafka.heartbeat_interval", c.Kafka.HeartbeatInterval, 100*time.Millisecond, max(100*time.Millisecond, c.Kafka.SessionTimeout/3))
	durationIn(bad, "kafka.commit_interval", c.Kafka.CommitInterval, 100*time.Millisecond, 5*time.Minute)
	if c.Kafka.GroupID == "" {
		bad("kafka.group_id", "must not be empty")
	}
	errs = append(errs, c.Kafka.Topics.validate()...)
	if c.Orders.CoPartitioned && c.Orders.File != "" {
		bad("orders.co_partitioned", "cannot be used with orders.file (a file's orders belong to no partition): produce them to %s instead", c.Kafka.Topics.Orders)
	}
	intIn(bad, "kafka.partitions", c.Kafka.Partitions, 1, 10000)
	switch c.Kafka.SASL.Mechanism {
	case "", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		bad("kafka.sasl.mechanism", "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got %q", c.Kafka.SASL.Mechanism)
	}
	if c.Kafka.SASL.Mechanism != "" && c.Kafka.SASL.Username == "" {
		bad("kafka.sasl.username", "is required with kafka.sasl.mechanism %s", c.Kafka.SASL.Mechanism)
	}
	if _, _, err := net.SplitHostPort(c.ClickHouse.Addr); err != nil {
		bad("clickhouse.addr", "%q is not host:port", c.ClickHouse.Addr)
	}
	if c.ClickHouse.Cluster != "" && !plainName.MatchString(c.ClickHouse.Cluster) {
		bad("clickhouse.cluster", "%q is not a plain cluster name (letters, digits, _)", c.ClickHouse.Cluster)
	}
	switch db := c.ClickHouse.Database; {
	case !plainName.MatchString(db):
		bad("clickhouse.database", "%q is not a plain database name (letters, digits, _)", db)
	case strings.EqualFold(db, "system") || strings.EqualFold(db, "information_schema"):
		bad("clickhouse.database", "%q is ClickHouse's own database; name one for qfence (the default is qfence)", db)
	}
	intIn(bad, "clickhouse.retention_days", c.ClickHouse.RetentionDays, 1, 3650)
	intIn(bad, "clickhouse.batch_rows", c.ClickHouse.BatchRows, 1, 10_000_000)
	durationIn(bad, "clickhouse.flush_interval", c.ClickHouse.FlushInterval, 10*time.Millisecond, 10*time.Minute)
	durationIn(bad, "clickhouse.timeout", c.ClickHouse.Timeout, 100*time.Millisecond, 10*time.Minute)
	switch c.ClickHouse.Compression {
	case "auto", "lz4", "zstd", "none":
	default:
		bad("clickhouse.compression", "must be auto, lz4, zstd or none, got %q", c.ClickHouse.Compression)
	}
	if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
		bad("metrics.listen", "%q is not host:port", c.Metrics.Listen)
	}
	errs = append(errs, c.Rules.validate()...)
	errs = append(errs, c.Checkins.validate()...)
	if err := c.Checkins.loadKeys(); err != nil {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = append(errs, j.Unwrap()...)
		} else {
			errs = append(errs, err)
		}
	}
	for _, t := range []struct {
		kind processor.NotificationKind
		text string
	}{{processor.Warning, c.Notifications.Templates.Warning}, {processor.CheckinRequest, c.Notifications.Templates.CheckinRequest}} {
		if _, err := processor.ParseTemplate(t.kind, t.text); err != nil {
			bad("notifications.templates."+t.kind.String(), "%v", err)
		}
	}
	intIn(bad, "notifications.max_text_bytes", c.Notifications.MaxTextBytes, 16, 65536)
	intIn(bad, "limits.max_message_bytes", c.Limits.MaxMessageBytes, 64, 1<<20)
	// Zero would switch the future check off: pings dated 2250 accepted.
	durationIn(bad, "limits.max_clock_skew", c.Limits.MaxClockSkew, time.Second, 24*time.Hour)
	intIn(bad, "limits.max_inflight_rows", c.Limits.MaxInflightRows, 1000, 50_000_000)
	intIn(bad, "limits.max_batch", c.Limits.MaxBatch, 1, 100_000)
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "must be text or json, got %q", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	durationIn(bad, "shutdown_timeout", c.ShutdownTimeout, time.Second, 10*time.Minute)
	durationIn(bad, "passes.max_duration", c.Passes.MaxDuration, time.Minute, 7*24*time.Hour)
	if c.API.Listen != "" {
		if _, _, err := net.SplitHostPort(c.API.Listen); err != nil {
			bad("api.listen", "%q is not host:port", c.API.Listen)
		}
		if c.API.TokensFile == "" {
			bad("api.tokens_file", "is required when api.listen is set: nothing is served without a token")
		}
	}
	if (c.API.TLS.CertFile == "") != (c.API.TLS.KeyFile == "") {
		bad("api.tls.cert_file", "api.tls.cert_file and api.tls.key_file go together")
	}
	return errs
}

var plainName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// The range checks: every numeric key has a finite, sane range, and the
// error names it (NaN and infinities are out of every range).
type badFunc func(key, format string, args ...any)

func intIn(bad badFunc, key string, v, lo, hi int) {
	if v < lo || v > hi {
		bad(key, "must be between %d and %d, got %d", lo, hi, v)
	}
}

func floatIn(bad badFunc, key string, v, lo, hi float64) {
	if !(v >= lo && v <= hi) {
		bad(key, "must be between %v and %v, got %v", lo, hi, v)
	}
}

func durationIn(bad badFunc, key string, v, lo, hi time.Duration) {
	if v < lo || v > hi {
		bad(key, "must be between %s and %s, got %s", lo, hi, v)
	}
}

// validate refuses an empty topic name and a topic used for two roles:
// pings_dlq equal to pings, say, would feed each dead letter back in for
// ever, and violations equal to state would mix events into the changelog.
func (t Topics) validate() []error {
	var errs []error
	roles := []struct{ key, name string }{{"pings", t.Pings}, {"orders", t.Orders}, {"violations", t.Violations},
		{"state", t.State}, {"pings_dlq", t.PingsDLQ}, {"orders_dlq", t.OrdersDLQ}, {"passes", t.Passes}, {"passes_dlq", t.PassesDLQ},
		{"notifications", t.Notifications}, {"dispositions", t.Dispositions}, {"dispositions_dlq", t.DispositionsDLQ}}
	seen := map[string]string{}
	for _, r := range roles {
		switch prev, dup := seen[r.name]; {
		case r.name == "":
			errs = append(errs, fmt.Errorf("kafka.topics.%s: must not be empty", r.key))
		case dup:
			errs = append(errs, fmt.Errorf("kafka.topics.%s: %q is already kafka.topics.%s; every topic must have one role", r.key, r.name, prev))
		default:
			seen[r.name] = r.key
		}
	}
	return errs
}

// Embedded reports whether qfence runs its own in-process broker.
func (k Kafka) Embedded() bool { return strings.TrimSpace(k.Brokers) == "embedded" }

// BrokerList is the broker addresses ("embedded" is 127.0.0.1:9092).
func (k Kafka) BrokerList() []string {
	if k.Embedded() {
		return []string{EmbeddedBroker}
	}
	var out []string
	for _, b := range strings.Split(k.Brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// EmbeddedBroker is where `brokers: embedded` listens.
const EmbeddedBroker = "127.0.0.1:9092"

// Effective is the configuration as qfence runs with it, as YAML in the
// file's layout: defaults, file and environment merged, durations as
// written in the file, secrets redacted (qfence check prints it).
func (c *Config) Effective() ([]byte, error) {
	k := koanf.New(".")
	if err := k.Load(structs.Provider(c, "koanf"), nil); err != nil {
		return nil, err
	}
	for key, v := range k.All() {
		switch v := v.(type) {
		case time.Duration:
			_ = k.Set(key, v.String())
		case Secret:
			if v != "" {
				_ = k.Set(key, "[redacted]")
			}
		}
	}
	return k.Marshal(yaml.Parser())
}
