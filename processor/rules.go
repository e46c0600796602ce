package processor

import "time"

// Rules are the decision parameters: plain values, which package config
// maps the `rules` section of the file onto. The defaults live in
// DefaultRules and nowhere else.
type Rules struct {
	MarginM          float64
	MaxAccuracyM     float64
	DefaultAccuracyM float64
	BreachAfter      time.Duration
	BreachMinPings   int
	ReturnMinPings   int
	SignalTimeout    time.Duration
	MaxSpeedMps      float64
	MaxEvidence      int
	// EscalateAfter is how long a breach stays open before
	// breach_escalated: time for the warned patient to come back.
	EscalateAfter time.Duration
	// Checkins are the check-in rules (contract 2.2).
	Checkins Checkins
}

// DefaultRules are the contract's defaults (config/contract/CONTRACT.md 2).
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
		EscalateAfter:    15 * time.Minute,
		Checkins: Checkins{QuietStart: 22 * 60, QuietEnd: 8 * 60, Location: time.UTC,
			ResponseWindow: 20 * time.Minute},
	}
}
