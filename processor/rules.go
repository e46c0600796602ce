package processor

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"time"
)

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
	// Mislocation are the rules of learning from answers (contract 2.4).
	Mislocation Mislocation
	// PseudonymKey is privacy.pseudonymize_key ("": off). With it, every id
	// qfence makes (event_id, notification_id, request ids) is hashed from
	// the patient's pseudonym, not the real id (contract 3.1), so ids
	// stored in ClickHouse cannot be matched against guessed patient ids.
	PseudonymKey string
}

// Pseudonym is the pseudonym of patient id under key (contract 3.2): the
// first 32 hex digits of its HMAC-SHA256.
func Pseudonym(key, id string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(id))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

// idPatient is the patient id that ids are hashed from: the pseudonym
// when pseudonymisation is on.
func (r *Rules) idPatient(id string) string {
	if r.PseudonymKey == "" {
		return ""
	}
	return Pseudonym(r.PseudonymKey, id)
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
		Mislocation: Mislocation{TTL: 336 * time.Hour, MinRadiusM: 100, MaxRadiusM: 500, MaxPerPatient: 4, MaxCheckinAccuracyM: 50},
	}
}
