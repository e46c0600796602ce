package processor

import (
	"fmt"
	"time"
)

// Rules are the decision parameters (config key `rules`). The defaults live
// in DefaultRules and nowhere else.
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

// DefaultRules are the contract's defaults (shared/CONTRACT.md 2).
// default_accuracy_m has no contract default: 50 m, a typical urban phone fix,
// so a ping without accuracy is neither trusted to the metre nor thrown away.
func DefaultRules() Rules {
	return Rules{
		MarginM:          25,
		MaxAccuracyM:     500,
		DefaultAccuracyM: 50,
		BreachAfter:      5 * time.Minute,
		BreachMinPings:   2,
		ReturnMinPings:   2,
		SignalTimeout:    30 * time.Minute,
		MaxSpeedMps:      70,
		MaxEvidence:      20,
	}
}

// Validate returns one error per bad rule, each naming its key.
func (r Rules) Validate() []error {
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
