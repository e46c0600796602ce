package sim

import (
	"encoding/json"

	"github.com/segmentio/kafka-go"
)

// Messages are the pings as Kafka messages, in order.
func Messages(pings []Ping) []kafka.Message {
	out := make([]kafka.Message, len(pings))
	for i, p := range pings {
		out[i] = kafka.Message{Key: p.Key, Value: p.Value}
	}
	return out
}

// Lines turns NDJSON lines into messages keyed by their patient_id (no key
// for a line without one).
func Lines(lines []string) []Ping {
	out := make([]Ping, len(lines))
	for i, l := range lines {
		var v struct {
			PatientID string `json:"patient_id"`
		}
		_ = json.Unmarshal([]byte(l), &v)
		out[i] = Ping{Key: []byte(v.PatientID), Value: []byte(l)}
	}
	return out
}

// PassMessages turns pass lines into messages keyed by their pass_id.
func PassMessages(lines []string) []kafka.Message {
	out := make([]kafka.Message, len(lines))
	for i, l := range lines {
		var v struct {
			PassID string `json:"pass_id"`
		}
		_ = json.Unmarshal([]byte(l), &v)
		out[i] = kafka.Message{Key: []byte(v.PassID), Value: []byte(l)}
	}
	return out
}
