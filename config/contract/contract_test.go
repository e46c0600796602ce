package contract_test

import (
	"testing"

	"github.com/qfence/qfence/config/contract"
)

// Every schema compiles, and each accepts the contract's own example and
// refuses a message that breaks one of its rules.
func TestSchemasAcceptTheExamplesAndRefuseBreaches(t *testing.T) {
	cases := []struct {
		name, schema, doc string
		valid             bool
	}{
		{"the contract's ping", contract.Ping, `{"patient_id":"p-000123","ts":"2026-04-02T10:16:00Z","lat":55.7601,"lon":37.629,"accuracy_m":8}`, true},
		{"a ping in Unix milliseconds with a check-in", contract.Ping, `{"patient_id":"p-1","ts":1775124960000,"lat":0,"lon":0,"checkin":{"verified":true,"method":"selfie"}}`, true},
		{"a ping with unknown fields", contract.Ping, `{"patient_id":"p-1","ts":1,"lat":0,"lon":0,"battery":0.5}`, true},
		{"a ping without ts", contract.Ping, `{"patient_id":"p-1","lat":0,"lon":0}`, false},
		{"a ping with a space in its patient id", contract.Ping, `{"patient_id":"p 1","ts":1,"lat":0,"lon":0}`, false},
		{"a ping north of the pole", contract.Ping, `{"patient_id":"p-1","ts":1,"lat":90.5,"lon":0}`, false},
		{"a ping with negative accuracy", contract.Ping, `{"patient_id":"p-1","ts":1,"lat":0,"lon":0,"accuracy_m":-1}`, false},
		{"a ping whose ts has no zone", contract.Ping, `{"patient_id":"p-1","ts":"2026-04-02T10:16:00","lat":0,"lon":0}`, false},
		{"a check-in without verified", contract.Ping, `{"patient_id":"p-1","ts":1,"lat":0,"lon":0,"checkin":{"method":"selfie"}}`, false},
		{"the contract's order", contract.Order, `{"patient_id":"p-000123","home":{"lat":55.7512,"lon":37.6184},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z","ends_at":"2026-04-15T00:00:00Z","district":"CAO"}`, true},
		{"an open-ended order", contract.Order, `{"patient_id":"p-1","home":{"lat":0,"lon":0},"radius_m":10,"starts_at":"2026-04-01T00:00:00Z"}`, true},
		{"an order with a 5 m radius", contract.Order, `{"patient_id":"p-1","home":{"lat":0,"lon":0},"radius_m":5,"starts_at":"2026-04-01T00:00:00Z"}`, false},
		{"an order without a home", contract.Order, `{"patient_id":"p-1","radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`, false},
		{"the contract's pass", contract.Pass, `{"pass_id":"PX-20260402-000123-1","patient_id":"p-000123","purpose":"pharmacy","valid_from":"2026-04-02T10:00:00Z","valid_to":"2026-04-02T11:00:00Z","max_distance_m":1500,"issued_at":"2026-04-02T09:41:12Z","signature":"AAAA"}`, true},
		{"a pass for a party", contract.Pass, `{"pass_id":"x","patient_id":"p","purpose":"party","valid_from":1,"valid_to":2}`, false},
		{"a pass without valid_to", contract.Pass, `{"pass_id":"x","patient_id":"p","purpose":"pet","valid_from":1}`, false},
		{"dead-letter headers", contract.DeadLetterHeaders, `{"qfence-reason":"bad_key","qfence-error":"key p-2 is not the ping's patient_id p-1","qfence-topic":"pings","qfence-partition":"3","qfence-offset":"120"}`, true},
		{"dead-letter headers with an unknown reason", contract.DeadLetterHeaders, `{"qfence-reason":"weird","qfence-error":"x","qfence-topic":"pings","qfence-partition":"3","qfence-offset":"120"}`, false},
		{"dead-letter headers without the offset", contract.DeadLetterHeaders, `{"qfence-reason":"bad_key","qfence-error":"x","qfence-topic":"pings","qfence-partition":"3"}`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := contract.Schema(c.schema)
			if err != nil {
				t.Fatal(err)
			}
			err = contract.Validate(s, []byte(c.doc))
			if got := err == nil; got != c.valid {
				t.Errorf("valid = %v (%v), want %v", got, err, c.valid)
			}
		})
	}
}
