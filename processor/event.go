package processor

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"strconv"
)

// EventType is the kind of an event (config/contract/CONTRACT.md 3.1).
type EventType uint8

// The event vocabulary.
const (
	BreachStarted EventType = iota + 1
	BreachEnded
	SignalLost
	SignalRestored
	ImplausibleLocation
	BreachEscalated
	CheckinRequested
	CheckinMissed
	CheckinFailed
	CheckinRejected
	DeviceMismatch
	MislocationLearned
)

var eventNames = [...]string{"", "breach_started", "breach_ended", "signal_lost", "signal_restored", "implausible_location", "breach_escalated",
	"checkin_requested", "checkin_missed", "checkin_failed", "checkin_rejected", "device_mismatch", "mislocation_learned"}

// EventTypes lists every type, for metrics and tests.
var EventTypes = []EventType{BreachStarted, BreachEnded, SignalLost, SignalRestored, ImplausibleLocation, BreachEscalated,
	CheckinRequested, CheckinMissed, CheckinFailed, CheckinRejected, DeviceMismatch, MislocationLearned}

func (t EventType) String() string {
	if int(t) < len(eventNames) {
		return eventNames[t]
	}
	return "unknown"
}

// Event is one decision worth telling enforcement about.
type Event struct {
	Type      EventType
	PatientID string
	// idPatient is what ID hashes instead of PatientID: the pseudonym,
	// when pseudonymisation is on (Rules.PseudonymKey; "": PatientID).
	idPatient   string
	At          int64 // Unix ms
	StartedAt   int64
	EndedAt     int64 // 0: null
	DurationS   int64
	Reason      string // "": null
	Location    Evidence
	MaxDistance float32
	Home        [2]float64 // [lon, lat]
	RadiusM     float64
	District    string // "": null
	Zone        string // "": null
	Evidence    []Evidence
	// Pass is the pass a breach's trip was taken under (breach events
	// only; nil: null).
	Pass *PassRef
	// Confidence is how sure the breach is (breach events only; nil: null,
	// for a breach restored from a state written before it was recorded).
	Confidence *Confidence
	// RequestID and ExpiresAt are the check-in request a check-in event is
	// about (check-in events only; a zero RequestID is null, as for a
	// failed check-in that answered no request).
	RequestID [16]byte
	ExpiresAt int64
	// Device is what device_mismatch carries (nil for the other types).
	Device *DeviceSeen
	// Mislocation is mislocation_learned's circle (nil for the other
	// types); its Confidence then holds the run's figures and the radius.
	Mislocation *MislocationRef
}

// DeviceSeen is the order's enrolled device and the one a ping came from
// (contract 3.1, device_mismatch).
type DeviceSeen struct {
	Enrolled string
	Seen     string
	SeenSet  bool // false: the ping had no device_id (null)
}

// IsBreach reports whether the type is one of the breach events, which
// carry "pass".
func (t EventType) IsBreach() bool {
	return t == BreachStarted || t == BreachEnded || t == BreachEscalated
}

// IsCheckin reports whether the type is one of the check-in events, which
// carry "request_id" and "expires_at".
func (t EventType) IsCheckin() bool {
	return t == CheckinRequested || t == CheckinMissed || t == CheckinFailed || t == CheckinRejected
}

// ID is the event's deterministic id: a hash of (patient_id, type, the
// episode's start ts), so an event emitted again carries the same id.
//
// It is asked for several times per event (the event's JSON, its
// notifications, its row), so it hashes from a buffer on the stack.
func (e *Event) ID() [16]byte {
	var buf [128]byte
	return idOf(AppendTS(idPrefix(buf[:0], e.IDPatient(), e.Type.String()), e.episodeStart()))
}

// IDPatient is the patient id the event's ids are hashed from: its
// pseudonym when pseudonymisation is on, else PatientID.
func (e *Event) IDPatient() string {
	if e.idPatient != "" {
		return e.idPatient
	}
	return e.PatientID
}

// pseudonymize hashes the ids of evs from their patients' pseudonyms
// under r (nothing when pseudonymisation is off).
func pseudonymize(evs []Event, r *Rules) {
	if r.PseudonymKey == "" {
		return
	}
	for i := range evs {
		if evs[i].idPatient == "" {
			evs[i].idPatient = r.idPatient(evs[i].PatientID)
		}
	}
}

// idPrefix appends what every id of qfence's outputs starts with: the
// patient and the kind, each followed by a zero byte.
func idPrefix(b []byte, patient, kind string) []byte {
	b = append(append(b, patient...), 0)
	return append(append(b, kind...), 0)
}

// idOf is an id of qfence's outputs: the first 16 bytes of the SHA-256 of
// what identifies it (idPrefix and the rest).
func idOf(b []byte) [16]byte {
	sum := sha256.Sum256(b)
	return [16]byte(sum[:16])
}

// IDString is ID in 32 hex digits.
func (e *Event) IDString() string {
	id := e.ID()
	return hex.EncodeToString(id[:])
}

func (e *Event) episodeStart() int64 {
	if e.Type == ImplausibleLocation {
		return e.At
	}
	return e.StartedAt
}

// AppendJSON appends the event as one JSON object in the contract's field
// order. The encoding is fixed: the same event gives the same bytes.
func (e *Event) AppendJSON(b []byte, r *Rules) []byte {
	b = append(b, `{"event_id":"`...)
	b = append(b, e.IDString()...)
	b = append(b, `","type":"`...)
	b = append(b, e.Type.String()...)
	b = append(b, `","patient_id":`...)
	b = appendJSONString(b, e.PatientID)
	b = append(b, `,"at":`...)
	b = appendTSJSON(b, e.At)
	b = append(b, `,"started_at":`...)
	b = appendTSJSON(b, e.StartedAt)
	b = append(b, `,"ended_at":`...)
	if e.EndedAt == 0 {
		b = append(b, "null"...)
	} else {
		b = appendTSJSON(b, e.EndedAt)
	}
	b = append(b, `,"duration_s":`...)
	b = strconv.AppendInt(b, e.DurationS, 10)
	b = append(b, `,"reason":`...)
	b = appendNullableString(b, e.Reason)
	b = append(b, `,"location":{"lat":`...)
	b = appendFloat(b, e.Location.Lat)
	b = append(b, `,"lon":`...)
	b = appendFloat(b, e.Location.Lon)
	b = append(b, `,"accuracy_m":`...)
	b = appendFloat32(b, e.Location.Accuracy)
	b = append(b, `},"distance_m":`...)
	b = appendDistance(b, e.Location.Distance)
	b = append(b, `,"max_distance_m":`...)
	b = appendDistance(b, e.MaxDistance)
	b = append(b, `,"home":{"lat":`...)
	b = appendFloat(b, e.Home[1])
	b = append(b, `,"lon":`...)
	b = appendFloat(b, e.Home[0])
	b = append(b, `,"radius_m":`...)
	b = appendFloat(b, e.RadiusM)
	b = append(b, `},"district":`...)
	b = appendNullableString(b, e.District)
	b = append(b, `,"zone":`...)
	b = appendNullableString(b, e.Zone)
	if e.Type.IsBreach() {
		b = append(b, `,"pass":`...)
		if e.Pass == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, `{"pass_id":`...)
			b = appendJSONString(b, e.Pass.ID)
			b = append(b, `,"purpose":"`...)
			b = append(b, e.Pass.Purpose.String()...)
			b = append(b, `","valid_to":`...)
			b = appendTSJSON(b, e.Pass.ValidTo)
			b = append(b, '}')
		}
		b = append(b, `,"confidence":`...)
		if c := e.Confidence; c == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, `{"outside_pings":`...)
			b = strconv.AppendInt(b, int64(c.OutsidePings), 10)
			b = append(b, `,"min_margin_m":`...)
			b = appendDistance(b, c.MinMarginM)
			b = append(b, `,"dwell_s":`...)
			b = strconv.AppendInt(b, c.DwellS, 10)
			b = append(b, '}')
		}
	}
	if e.Type.IsCheckin() {
		b = append(b, `,"request_id":`...)
		if e.RequestID == ([16]byte{}) {
			b = append(b, "null"...)
		} else {
			b = append(b, '"')
			b = hex.AppendEncode(b, e.RequestID[:])
			b = append(b, '"')
		}
		b = append(b, `,"expires_at":`...)
		if e.ExpiresAt == 0 {
			b = append(b, "null"...)
		} else {
			b = appendTSJSON(b, e.ExpiresAt)
		}
	}
	if d := e.Device; d != nil {
		b = append(b, `,"device":{"enrolled":`...)
		b = appendJSONString(b, d.Enrolled)
		b = append(b, `,"seen":`...)
		if d.SeenSet {
			b = appendJSONString(b, d.Seen)
		} else {
			b = append(b, "null"...)
		}
		b = append(b, '}')
	}
	if m := e.Mislocation; m != nil {
		b = append(b, `,"mislocation":{"radius_m":`...)
		b = appendDistance(b, m.RadiusM)
		b = append(b, `,"valid_to":`...)
		b = appendTSJSON(b, m.ValidTo)
		b = append(b, '}')
		if c := e.Confidence; c != nil {
			b = append(b, `,"confidence":{"outside_pings":`...)
			b = strconv.AppendInt(b, int64(c.OutsidePings), 10)
			b = append(b, `,"min_margin_m":`...)
			b = appendDistance(b, c.MinMarginM)
			b = append(b, `,"dwell_s":`...)
			b = strconv.AppendInt(b, c.DwellS, 10)
			b = append(b, `,"radius_m":`...)
			b = appendDistance(b, c.RadiusM)
			b = append(b, '}')
		}
	}
	b = append(b, `,"rule":{"margin_m":`...)
	b = appendFloat(b, r.MarginM)
	b = append(b, `,"breach_after_s":`...)
	b = appendFloat(b, r.BreachAfter.Seconds())
	b = append(b, `,"breach_min_pings":`...)
	b = strconv.AppendInt(b, int64(r.BreachMinPings), 10)
	b = append(b, `},"evidence":`...)
	b = AppendEvidenceJSON(b, e.Evidence)
	return append(b, '}')
}

// AppendEvidenceJSON appends the evidence list as a JSON array.
func AppendEvidenceJSON(b []byte, evidence []Evidence) []byte {
	b = append(b, '[')
	for i, ev := range evidence {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"ts":`...)
		b = appendTSJSON(b, ev.TS)
		b = append(b, `,"lat":`...)
		b = appendFloat(b, ev.Lat)
		b = append(b, `,"lon":`...)
		b = appendFloat(b, ev.Lon)
		b = append(b, `,"accuracy_m":`...)
		b = appendFloat32(b, ev.Accuracy)
		b = append(b, `,"distance_m":`...)
		b = appendDistance(b, ev.Distance)
		b = append(b, `,"state":"`...)
		b = append(b, ev.State.String()...)
		b = append(b, `"}`...)
	}
	return append(b, ']')
}

func appendTSJSON(b []byte, ms int64) []byte {
	b = append(b, '"')
	b = AppendTS(b, ms)
	return append(b, '"')
}

func appendFloat(b []byte, f float64) []byte {
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

func appendFloat32(b []byte, f float32) []byte {
	return strconv.AppendFloat(b, float64(f), 'f', -1, 32)
}

// appendDistance writes metres rounded to 0.1 m.
func appendDistance(b []byte, d float32) []byte {
	return strconv.AppendFloat(b, math.Round(float64(d)*10)/10, 'f', -1, 64)
}

func appendNullableString(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendJSONString(b, s)
}

func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q, _ := json.Marshal(s) // rare: zone ids with quotes or non-ASCII
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
