package processor

import "fmt"

// Reason is a dead-letter reason code (config/contract/CONTRACT.md 1.1 and 1.2).
type Reason string

// The contract's reasons for pings, and the two extra ones orders need.
const (
	TooLarge        Reason = "too_large"
	MalformedJSON   Reason = "malformed_json"
	MissingField    Reason = "missing_field"
	BadPatientID    Reason = "bad_patient_id"
	BadCoordinates  Reason = "bad_coordinates"
	BadAccuracy     Reason = "bad_accuracy"
	BadTimestamp    Reason = "bad_timestamp"
	FutureTimestamp Reason = "future_timestamp"
	// BadCheckin: the ping's checkin object breaks contract 1.1.
	BadCheckin Reason = "bad_checkin"
	// BadKey: the message key is not the ping's patient_id, so the ping may
	// sit in another partition than the patient's state.
	BadKey Reason = "bad_key"
	// BadRadius and BadPeriod are for orders only: radius_m outside
	// 10–10000, or ends_at not after starts_at.
	BadRadius Reason = "bad_radius"
	BadPeriod Reason = "bad_period"
)

// PingReasons lists every reason a ping can be rejected with.
var PingReasons = []Reason{TooLarge, MalformedJSON, MissingField, BadPatientID,
	BadCoordinates, BadAccuracy, BadTimestamp, FutureTimestamp, BadCheckin, BadKey}

// CheckKey rejects a ping whose Kafka key is not its patient_id: a
// patient's pings must all reach the partition that holds the patient's
// state, and the producer's partitioner only sees the key.
func CheckKey(key []byte, p *Ping) error {
	if string(key) != string(p.PatientID) {
		return reject(BadKey, "message key %q is not the ping's patient_id %q (key every ping by its patient_id)", truncate(key), truncate(p.PatientID))
	}
	return nil
}

// Reject is a poison message: it can never be processed, so it goes to the
// dead-letter topic with Reason and the sentence in Error().
type Reject struct {
	Reason Reason
	Msg    string
}

func (r *Reject) Error() string { return r.Msg }

func reject(reason Reason, format string, args ...any) *Reject {
	return &Reject{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}
