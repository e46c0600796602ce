package config

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	_ "time/tzdata" // IANA zones for checkins.timezone on a machine without zoneinfo

	"github.com/qfence/qfence/processor"
)

// Rules is the `rules` section: the engine's processor.Rules with the
// file's key names. The two types have the same fields, so each converts
// to the other; the defaults are processor.DefaultRules.
type Rules struct {
	MarginM          float64       `koanf:"margin_m"`
	MaxAccuracyM     float64       `koanf:"max_accuracy_m"`
	DefaultAccuracyM float64       `koanf:"default_accuracy_m"`
	BreachAfter      time.Duration `koanf:"breach_after"`
	BreachMinPings   int           `koanf:"breach_min_pings"`
	ReturnMinPings   int           `koanf:"return_min_pings"`
	SignalTimeout    time.Duration `koanf:"signal_timeout"`
	MaxSpeedMps      float64       `koanf:"max_speed_mps"`
	MaxEvidence      int           `koanf:"max_evidence"`
	EscalateAfter    time.Duration `koanf:"escalate_after"`
	Mislocation      Mislocation   `koanf:"mislocation"`
}

// Mislocation is `rules.mislocation` (contract 2.4), processor.Mislocation
// with the file's key names.
type Mislocation struct {
	TTL                 time.Duration `koanf:"ttl"`
	MinRadiusM          float64       `koanf:"min_radius_m"`
	MaxRadiusM          float64       `koanf:"max_radius_m"`
	MaxPerPatient       int           `koanf:"max_per_patient"`
	MaxCheckinAccuracyM float64       `koanf:"max_checkin_accuracy_m"`
}

func rulesOf(r processor.Rules) Rules {
	return Rules{MarginM: r.MarginM, MaxAccuracyM: r.MaxAccuracyM, DefaultAccuracyM: r.DefaultAccuracyM,
		BreachAfter: r.BreachAfter, BreachMinPings: r.BreachMinPings, ReturnMinPings: r.ReturnMinPings,
		SignalTimeout: r.SignalTimeout, MaxSpeedMps: r.MaxSpeedMps, MaxEvidence: r.MaxEvidence, EscalateAfter: r.EscalateAfter,
		Mislocation: Mislocation(r.Mislocation)}
}

// EngineRules are the `rules` and `checkins` sections as the engine takes
// them (the configuration is valid: Load checked it).
func (c *Config) EngineRules() processor.Rules {
	r := c.Rules
	ch, _ := c.Checkins.engine()
	return processor.Rules{MarginM: r.MarginM, MaxAccuracyM: r.MaxAccuracyM, DefaultAccuracyM: r.DefaultAccuracyM,
		BreachAfter: r.BreachAfter, BreachMinPings: r.BreachMinPings, ReturnMinPings: r.ReturnMinPings,
		SignalTimeout: r.SignalTimeout, MaxSpeedMps: r.MaxSpeedMps, MaxEvidence: r.MaxEvidence, EscalateAfter: r.EscalateAfter,
		Checkins: ch, Mislocation: processor.Mislocation(r.Mislocation), PseudonymKey: string(c.Privacy.PseudonymizeKey)}
}

// Checkins is the `checkins` section (contract 2.2).
type Checkins struct {
	RandomPerDay int `koanf:"random_per_day"`
	// QuietHours is "HH:MM-HH:MM" in Timezone, or "" for none.
	QuietHours     string        `koanf:"quiet_hours"`
	Timezone       string        `koanf:"timezone"`
	ResponseWindow time.Duration `koanf:"response_window"`
	// VerifyKeysFile is the verification service's JWKS (contract 2.3);
	// "": check-ins count on the phone's word (a warning at start-up).
	VerifyKeysFile string `koanf:"verify_keys_file"`
	Audience       string `koanf:"audience"`
	MinIntegrity   string `koanf:"min_integrity"`
	// ScheduleKey keys the random schedule (contract 2.2): a secret, from
	// the environment or ScheduleKeyFile only; "": predictable (a warning
	// at start-up).
	ScheduleKey     Secret `koanf:"schedule_key"`
	ScheduleKeyFile string `koanf:"schedule_key_file"`
	// attest is what Load made of the three keys above: shared by every
	// engine, so that ReloadCheckinKeys reaches them all.
	attest *processor.Attestation
}

func checkinsOf(c processor.Checkins) Checkins {
	return Checkins{RandomPerDay: c.RandomPerDay, Timezone: c.Location.String(), ResponseWindow: c.ResponseWindow,
		QuietHours: fmt.Sprintf("%02d:%02d-%02d:%02d", c.QuietStart/60, c.QuietStart%60, c.QuietEnd/60, c.QuietEnd%60),
		Audience:   "qfence", MinIntegrity: processor.IntegrityNone.String()}
}

// loadKeys reads checkins.verify_keys_file into the attestation rules.
func (c *Checkins) loadKeys() error {
	var errs []error
	min, ok := processor.ParseIntegrity(c.MinIntegrity)
	if !ok {
		errs = append(errs, fmt.Errorf("checkins.min_integrity: must be none, basic, device or strong, got %q", c.MinIntegrity))
	}
	if c.Audience == "" {
		errs = append(errs, errors.New("checkins.audience: must not be empty (the aud the verification service signs for qfence)"))
	}
	if errs != nil || c.VerifyKeysFile == "" {
		return errors.Join(errs...)
	}
	keys, err := readKeySet(c.VerifyKeysFile)
	if err != nil {
		return err
	}
	c.attest = processor.NewAttestation(keys, c.Audience, min)
	return nil
}

func readKeySet(path string) (*processor.KeySet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("checkins.verify_keys_file: %w", err)
	}
	keys, err := processor.ParseKeySet(b)
	if err != nil {
		return nil, fmt.Errorf("checkins.verify_keys_file: %s: %w", path, err)
	}
	return keys, nil
}

// UseCheckinKeys sets checkins.verify_keys_file and reads it, as Load
// does: for configurations built in code (the demo, the tests).
func (c *Config) UseCheckinKeys(path string) error {
	c.Checkins.VerifyKeysFile = path
	return c.Checkins.loadKeys()
}

// Attested reports whether check-ins are verified (checkins.verify_keys_file
// is set); otherwise they count on the phone's word.
func (c *Config) Attested() bool { return c.Checkins.attest != nil }

// ReloadCheckinKeys reads checkins.verify_keys_file again (on SIGHUP) and
// returns how many keys are now in force. A file that cannot be read or
// parsed leaves the old keys in force and says why.
func (c *Config) ReloadCheckinKeys() (int, error) {
	if c.Checkins.attest == nil {
		return 0, nil
	}
	keys, err := readKeySet(c.Checkins.VerifyKeysFile)
	if err != nil {
		return c.Checkins.attest.Keys().Len(), err
	}
	c.Checkins.attest.SetKeys(keys)
	return keys.Len(), nil
}

// engine parses the section; the error names the key.
func (c Checkins) engine() (processor.Checkins, error) {
	out := processor.Checkins{RandomPerDay: c.RandomPerDay, ResponseWindow: c.ResponseWindow, Attest: c.attest}
	if c.ScheduleKey != "" {
		out.ScheduleKey = string(c.ScheduleKey)
	}
	// time/tzdata (imported by this package) holds every IANA zone, so a
	// bare machine without /usr/share/zoneinfo knows them too.
	var errs []error
	loc, err := time.LoadLocation(c.Timezone)
	if err != nil || c.Timezone == "" || c.Timezone == "Local" {
		errs = append(errs, fmt.Errorf("checkins.timezone: %q is not an IANA time zone name (e.g. Europe/Moscow, UTC)", c.Timezone))
	}
	out.Location = loc
	if strings.TrimSpace(c.QuietHours) != "" {
		from, to, ok := strings.Cut(c.QuietHours, "-")
		start, ok1 := clock(from)
		end, ok2 := clock(to)
		if !ok || !ok1 || !ok2 || start == end {
			errs = append(errs, fmt.Errorf("checkins.quiet_hours: %q is not HH:MM-HH:MM with two different times (or \"\" for none)", c.QuietHours))
		}
		out.QuietStart, out.QuietEnd = start, end
	}
	return out, errors.Join(errs...)
}

// clock reads "HH:MM" as minutes after midnight.
func clock(s string) (int, bool) {
	t, err := time.Parse("15:04", strings.TrimSpace(s))
	if err != nil {
		return 0, false
	}
	return t.Hour()*60 + t.Minute(), true
}

func (c Checkins) validate() []error {
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("checkins.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	intIn(bad, "random_per_day", c.RandomPerDay, 0, 48)
	durationIn(bad, "response_window", c.ResponseWindow, time.Minute, 24*time.Hour)
	if _, err := c.engine(); err != nil {
		errs = append(errs, err.(interface{ Unwrap() []error }).Unwrap()...)
	}
	return errs
}

// Notifications is the `notifications` section (contract 3.3).
type Notifications struct {
	Templates Templates `koanf:"templates"`
	// MaxTextBytes cuts a longer rendered text at a UTF-8 boundary
	// (contract 3.3).
	MaxTextBytes int `koanf:"max_text_bytes"`
}

// Templates are Go text/template texts over processor.NotificationData.
type Templates struct {
	Warning        string `koanf:"warning"`
	CheckinRequest string `koanf:"checkin_request"`
}

// Notifier renders the notifications with the configured templates, times
// in checkins.timezone. Load refuses a configuration whose templates do
// not parse or name a field that does not exist.
func (c *Config) Notifier() (*processor.Notifier, error) {
	ch, _ := c.Checkins.engine()
	n, err := processor.NewNotifier(c.Notifications.Templates.Warning, c.Notifications.Templates.CheckinRequest, ch.Location)
	if err != nil {
		return nil, err
	}
	n.MaxTextBytes = c.Notifications.MaxTextBytes
	return n, nil
}

// Validate returns one error per bad rule, each naming its key.
func (r Rules) validate() []error {
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("rules.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	floatIn(bad, "margin_m", r.MarginM, 0, 10000)
	floatIn(bad, "max_accuracy_m", r.MaxAccuracyM, 1, 100000)
	floatIn(bad, "default_accuracy_m", r.DefaultAccuracyM, 0, 100000)
	durationIn(bad, "breach_after", r.BreachAfter, 0, 24*time.Hour)
	intIn(bad, "breach_min_pings", r.BreachMinPings, 1, 1000)
	intIn(bad, "return_min_pings", r.ReturnMinPings, 1, 1000)
	durationIn(bad, "signal_timeout", r.SignalTimeout, time.Minute, 7*24*time.Hour)
	// Zero or infinity would switch the speed check off.
	floatIn(bad, "max_speed_mps", r.MaxSpeedMps, 1, 10000)
	intIn(bad, "max_evidence", r.MaxEvidence, 2, 1000)
	durationIn(bad, "escalate_after", r.EscalateAfter, time.Minute, 7*24*time.Hour)
	m := r.Mislocation
	if m.TTL != 0 { // 0 turns learning off
		durationIn(bad, "mislocation.ttl", m.TTL, time.Hour, 90*24*time.Hour)
	}
	floatIn(bad, "mislocation.min_radius_m", m.MinRadiusM, 10, 5000)
	floatIn(bad, "mislocation.max_radius_m", m.MaxRadiusM, max(10, m.MinRadiusM), 5000)
	intIn(bad, "mislocation.max_per_patient", m.MaxPerPatient, 1, 64)
	floatIn(bad, "mislocation.max_checkin_accuracy_m", m.MaxCheckinAccuracyM, 1, 500)
	return errs
}

// DefaultEngineRules are the rules of the default configuration.
func DefaultEngineRules() processor.Rules {
	c := Default()
	return c.EngineRules()
}

// PingDecoder is the decoder of the pings topic the limits and rules ask for.
func (c *Config) PingDecoder() processor.PingDecoder {
	return processor.PingDecoder{MaxBytes: c.Limits.MaxMessageBytes, MaxSkew: c.Limits.MaxClockSkew, DefaultAccuracy: c.Rules.DefaultAccuracyM}
}

// PassDecoder is the decoder of the passes topic and file, verifying with
// keys (none: signatures not checked).
func (c *Config) PassDecoder(keys []ed25519.PublicKey) processor.PassDecoder {
	return processor.PassDecoder{MaxBytes: c.Limits.MaxMessageBytes, MaxDuration: c.Passes.MaxDuration, Keys: keys}
}

// Loop are the settings of the partition loops.
type Loop struct {
	// Tick is how often a loop looks at its clock; IdleAfter is how long a
	// caught-up partition waits before its watermark follows the wall clock.
	Tick, IdleAfter time.Duration
	// CommitEvery spaces checkpoints and commits (kafka.commit_interval).
	CommitEvery time.Duration
	// Drain bounds the wait for in-flight work when partitions are revoked
	// or qfence stops: two thirds of shutdown_timeout (the sink's flush
	// gets the rest).
	Drain time.Duration
	// MaxBatch and MaxInFlight are limits.max_batch and .max_inflight_rows.
	MaxBatch    int
	MaxInFlight int64
}

// Loop is the partition loops' settings of the configuration.
func (c *Config) Loop() Loop {
	return Loop{Tick: time.Second, IdleAfter: 10 * time.Second, CommitEvery: c.Kafka.CommitInterval, Drain: c.ShutdownTimeout * 2 / 3,
		MaxBatch: c.Limits.MaxBatch, MaxInFlight: int64(c.Limits.MaxInflightRows)}
}
