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
	// BadRadius and BadPeriod are for orders only: radius_m outside
	// 10–10000, or ends_at not after starts_at.
	BadRadius Reason = "bad_radius"
	BadPeriod Reason = "bad_period"
)

// PingReasons lists every reason a ping can be rejected with.
var PingReasons = []Reason{TooLarge, MalformedJSON, MissingField, BadPatientID,
	BadCoordinates, BadAccuracy, BadTimestamp, FutureTimestamp}

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
