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
}

// Engine is the rules as the engine takes them.
func (r Rules) Engine() processor.Rules { return processor.Rules(r) }

// Validate returns one error per bad rule, each naming its key.
func (r Rules) validate() []error {
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("rules.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if !(r.MarginM >= 0) {
		bad("margin_m", "must be >= 0, got %v", r.MarginM)
	}
	if !(r.MaxAccuracyM > 0) {
		bad("max_accuracy_m", "must be > 0, got %v", r.MaxAccuracyM)
	}
	if !(r.DefaultAccuracyM >= 0) {
		bad("default_accuracy_m", "must be >= 0, got %v", r.DefaultAccuracyM)
	}
	if r.BreachAfter < 0 {
		bad("breach_after", "must not be negative, got %s", r.BreachAfter)
	}
	if r.BreachMinPings < 1 || r.BreachMinPings > 1000 {
		bad("breach_min_pings", "must be between 1 and 1000, got %d", r.BreachMinPings)
	}
	if r.ReturnMinPings < 1 || r.ReturnMinPings > 1000 {
		bad("return_min_pings", "must be between 1 and 1000, got %d", r.ReturnMinPings)
	}
	if r.SignalTimeout <= 0 {
		bad("signal_timeout", "must be > 0, got %s", r.SignalTimeout)
	}
	if !(r.MaxSpeedMps > 0) {
		bad("max_speed_mps", "must be > 0, got %v", r.MaxSpeedMps)
	}
	if r.MaxEvidence < 2 || r.MaxEvidence > 1000 {
		bad("max_evidence", "must be between 2 and 1000, got %d", r.MaxEvidence)
	}
	return errs
}
