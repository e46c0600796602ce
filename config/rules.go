package config

import (
	"fmt"
	"time"

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
}

// Engine is the rules as the engine takes them.
func (r Rules) Engine() processor.Rules { return processor.Rules(r) }

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
	return errs
}
