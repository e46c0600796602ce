package processor

import (
	"encoding/json"
	"errors"
	"slices"
	"unicode/utf8"
)

// A Disposition is what a person or another system decided about an event
// (contract 1.5). qfence records it and never changes an event because of
// one; a later disposition of the same event supersedes the earlier one as
// the event's current decision, and both are kept.
type Disposition struct {
	DispositionID string
	EventID       string
	Decision      string
	Reason        string
	Comment       string
	DecidedBy     string
	DecidedAt     int64 // Unix milliseconds
	Channel       string
}

// The reasons a disposition is dead-lettered with that pings do not have.
const (
	BadEventID  Reason = "bad_event_id"
	BadDecision Reason = "bad_decision"
	BadReason   Reason = "bad_reason"
)

// DispositionReasons lists every reason a disposition can be rejected with.
var DispositionReasons = []Reason{TooLarge, MalformedJSON, MissingField, BadEventID, BadDecision, BadReason, BadTimestamp}

// The values of a disposition's closed fields (contract 1.5).
var (
	Decisions       = []string{"confirmed", "dismissed", "contested"}
	DecisionReasons = []string{"confirmed_absence", "false_location", "permitted_trip", "medical", "device_fault", "signal_only", "other"}
	Channels        = []string{"review", "enforcement", "patient", "other"}
)

// The bounds of a disposition's free fields.
const (
	MaxCommentBytes   = 1000
	MaxDecidedByBytes = 128
)

type dispositionWire struct {
	DispositionID *string         `json:"disposition_id"`
	EventID       *string         `json:"event_id"`
	Decision      *string         `json:"decision"`
	Reason        *string         `json:"reason"`
	Comment       *string         `json:"comment"`
	DecidedBy     *string         `json:"decided_by"`
	DecidedAt     json.RawMessage `json:"decided_at"`
	Channel       *string         `json:"channel"`
}

// DecodeDisposition decodes and validates one disposition of the
// dispositions topic; key is the message key (it must be the event_id).
// A value over maxBytes (0: no bound) is too large. Errors are *Reject.
//
// Fields the contract gives no reason of their own (a disposition_id of
// other characters, an unknown channel) are malformed_json, a comment or
// decided_by over its bound too_large; the error names the field.
func DecodeDisposition(key, value []byte, maxBytes int) (*Disposition, error) {
	if maxBytes > 0 && len(value) > maxBytes {
		return nil, reject(TooLarge, "disposition is %d bytes, more than limits.max_message_bytes (%d)", len(value), maxBytes)
	}
	var w dispositionWire
	if err := json.Unmarshal(value, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, reject(dispositionReasonOfField(te.Field), "field %s has the wrong type", te.Field)
		}
		return nil, reject(MalformedJSON, "disposition is not valid JSON: %v", err)
	}
	for _, f := range []struct {
		name    string
		missing bool
	}{{"disposition_id", w.DispositionID == nil}, {"event_id", w.EventID == nil}, {"decision", w.Decision == nil},
		{"reason", w.Reason == nil}, {"decided_by", w.DecidedBy == nil || *w.DecidedBy == ""},
		{"decided_at", len(w.DecidedAt) == 0 || string(w.DecidedAt) == "null"}} {
		if f.missing {
			return nil, reject(MissingField, "%s is required", f.name)
		}
	}
	d := &Disposition{DispositionID: *w.DispositionID, EventID: *w.EventID, Decision: *w.Decision, Reason: *w.Reason, DecidedBy: *w.DecidedBy}
	if w.Comment != nil {
		d.Comment = *w.Comment
	}
	if w.Channel != nil {
		d.Channel = *w.Channel
	}
	if err := d.check(key); err != nil {
		return nil, err
	}
	var ok bool
	if d.DecidedAt, ok = orderTime(w.DecidedAt); !ok {
		return nil, reject(BadTimestamp, "decided_at %s is not an RFC 3339 time with a zone from %s", truncate(w.DecidedAt), tsRange)
	}
	return d, nil
}

// CheckDisposition validates a disposition made by qfence itself (the API
// builds one from a reviewer's form): the same rules as the topic's.
func CheckDisposition(d *Disposition) error { return d.check([]byte(d.EventID)) }

func (d *Disposition) check(key []byte) error {
	switch {
	case !ValidPatientID([]byte(d.DispositionID)):
		return reject(MalformedJSON, "disposition_id %q must be 1-128 bytes of [A-Za-z0-9._:-]", truncate([]byte(d.DispositionID)))
	case !ValidEventID(d.EventID):
		return reject(BadEventID, "event_id %q must be 32 lowercase hex digits", truncate([]byte(d.EventID)))
	case key != nil && string(key) != d.EventID:
		return reject(BadEventID, "message key %q is not the event_id %q (key every disposition by its event_id)", truncate(key), d.EventID)
	case !slices.Contains(Decisions, d.Decision):
		return reject(BadDecision, "decision %q must be confirmed, dismissed or contested", truncate([]byte(d.Decision)))
	case !slices.Contains(DecisionReasons, d.Reason):
		return reject(BadReason, "reason %q must be confirmed_absence, false_location, permitted_trip, medical, device_fault, signal_only or other",
			truncate([]byte(d.Reason)))
	case len(d.Comment) > MaxCommentBytes:
		return reject(TooLarge, "comment is %d bytes, more than %d", len(d.Comment), MaxCommentBytes)
	case !utf8.ValidString(d.Comment) || !utf8.ValidString(d.DecidedBy):
		return reject(MalformedJSON, "comment and decided_by must be UTF-8")
	case len(d.DecidedBy) > MaxDecidedByBytes:
		return reject(TooLarge, "decided_by is %d bytes, more than %d", len(d.DecidedBy), MaxDecidedByBytes)
	case d.Channel != "" && !slices.Contains(Channels, d.Channel):
		return reject(MalformedJSON, "channel %q must be review, enforcement, patient or other", truncate([]byte(d.Channel)))
	}
	return nil
}

// ValidEventID reports whether id is an event id: 32 lowercase hex digits.
func ValidEventID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func dispositionReasonOfField(field string) Reason {
	switch field {
	case "event_id":
		return BadEventID
	case "decision":
		return BadDecision
	case "reason":
		return BadReason
	case "decided_at":
		return BadTimestamp
	}
	return MalformedJSON
}

// AppendJSON appends the disposition as the message of contract 1.5
// (comment and channel omitted when empty).
func (d *Disposition) AppendJSON(b []byte) []byte {
	str := func(b []byte, name, v string) []byte {
		b = append(b, `"`+name+`":`...)
		return appendJSONString(b, v)
	}
	b = append(b, '{')
	b = str(b, "disposition_id", d.DispositionID)
	b = append(b, ',')
	b = str(b, "event_id", d.EventID)
	b = append(b, ',')
	b = str(b, "decision", d.Decision)
	b = append(b, ',')
	b = str(b, "reason", d.Reason)
	if d.Comment != "" {
		b = append(b, ',')
		b = str(b, "comment", d.Comment)
	}
	b = append(b, ',')
	b = str(b, "decided_by", d.DecidedBy)
	b = append(b, `,"decided_at":`...)
	b = appendTSJSON(b, d.DecidedAt)
	if d.Channel != "" {
		b = append(b, ',')
		b = str(b, "channel", d.Channel)
	}
	return append(b, '}')
}
