package processor_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/qfence/qfence/processor"
)

const dispEvent = "9f2c0000000000000000000000000abc"

func dispJSON(over map[string]any) []byte {
	m := map[string]any{"disposition_id": "D-2026-04-02-0001", "event_id": dispEvent, "decision": "dismissed",
		"reason": "false_location", "comment": "GPS fix at home at 10:24, Wi-Fi AP mislocated",
		"decided_by": "reviewer:ivanova", "decided_at": "2026-04-02T11:02:00Z", "channel": "review"}
	for k, v := range over {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, _ := json.Marshal(m)
	return b
}

func TestDecodeDisposition(t *testing.T) {
	for _, tc := range []struct {
		name  string
		key   string
		value []byte
		want  processor.Reason // "" accepted
	}{
		{"the contract's example", dispEvent, dispJSON(nil), ""},
		{"no comment, no channel", dispEvent, dispJSON(map[string]any{"comment": nil, "channel": nil}), ""},
		{"decided_at in Unix milliseconds", dispEvent, dispJSON(map[string]any{"decided_at": 1775127720000}), ""},
		{"a patient's contest", dispEvent, dispJSON(map[string]any{"decision": "contested", "reason": "medical", "channel": "patient"}), ""},
		{"not JSON", dispEvent, []byte(`{"disposition_id":`), processor.MalformedJSON},
		{"over max bytes", dispEvent, append(dispJSON(nil), strings.Repeat(" ", 5000)...), processor.TooLarge},
		{"no disposition_id", dispEvent, dispJSON(map[string]any{"disposition_id": nil}), processor.MissingField},
		{"no event_id", dispEvent, dispJSON(map[string]any{"event_id": nil}), processor.MissingField},
		{"no decision", dispEvent, dispJSON(map[string]any{"decision": nil}), processor.MissingField},
		{"no reason", dispEvent, dispJSON(map[string]any{"reason": nil}), processor.MissingField},
		{"no decided_by", dispEvent, dispJSON(map[string]any{"decided_by": nil}), processor.MissingField},
		{"empty decided_by", dispEvent, dispJSON(map[string]any{"decided_by": ""}), processor.MissingField},
		{"no decided_at", dispEvent, dispJSON(map[string]any{"decided_at": nil}), processor.MissingField},
		{"event_id not hex", "zz", dispJSON(map[string]any{"event_id": "zz"}), processor.BadEventID},
		{"event_id upper case", strings.ToUpper(dispEvent), dispJSON(map[string]any{"event_id": strings.ToUpper(dispEvent)}), processor.BadEventID},
		{"key is not the event_id", "0123456789abcdef0123456789abcdef", dispJSON(nil), processor.BadEventID},
		{"event_id a number", dispEvent, dispJSON(map[string]any{"event_id": 7}), processor.BadEventID},
		{"unknown decision", dispEvent, dispJSON(map[string]any{"decision": "fined"}), processor.BadDecision},
		{"unknown reason", dispEvent, dispJSON(map[string]any{"reason": "looked guilty"}), processor.BadReason},
		{"bad decided_at", dispEvent, dispJSON(map[string]any{"decided_at": "yesterday"}), processor.BadTimestamp},
		{"decided_at without a zone", dispEvent, dispJSON(map[string]any{"decided_at": "2026-04-02T11:02:00"}), processor.BadTimestamp},
		{"comment over 1000 bytes", dispEvent, dispJSON(map[string]any{"comment": strings.Repeat("я", 501)}), processor.TooLarge},
		{"decided_by over 128 bytes", dispEvent, dispJSON(map[string]any{"decided_by": strings.Repeat("x", 129)}), processor.TooLarge},
		{"disposition_id with a space", dispEvent, dispJSON(map[string]any{"disposition_id": "D 1"}), processor.MalformedJSON},
		{"unknown channel", dispEvent, dispJSON(map[string]any{"channel": "twitter"}), processor.MalformedJSON},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := processor.DecodeDisposition([]byte(tc.key), tc.value, 4096)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				back, err := processor.DecodeDisposition([]byte(tc.key), d.AppendJSON(nil), 4096)
				if err != nil || *back != *d {
					t.Errorf("AppendJSON does not round-trip: %+v, %v; want %+v", back, err, d)
				}
				return
			}
			var rj *processor.Reject
			if !errors.As(err, &rj) || rj.Reason != tc.want {
				t.Fatalf("got %v (%+v), want reason %s", err, d, tc.want)
			}
		})
	}
}

func TestDispositionFields(t *testing.T) {
	d, err := processor.DecodeDisposition([]byte(dispEvent), dispJSON(nil), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := processor.Disposition{DispositionID: "D-2026-04-02-0001", EventID: dispEvent, Decision: "dismissed", Reason: "false_location",
		Comment: "GPS fix at home at 10:24, Wi-Fi AP mislocated", DecidedBy: "reviewer:ivanova", DecidedAt: 1775127720000, Channel: "review"}
	if *d != want {
		t.Errorf("got %+v\nwant %+v", *d, want)
	}
}

// FuzzDispositionDecode: the decoder never panics, rejects only with a
// contract reason, and what it accepts round-trips through AppendJSON.
func FuzzDispositionDecode(f *testing.F) {
	f.Add([]byte(dispEvent), dispJSON(nil))
	f.Add([]byte(dispEvent), dispJSON(map[string]any{"comment": "\u2028\"<b>", "channel": nil}))
	f.Add([]byte("x"), []byte(`{"event_id":null}`))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		d, err := processor.DecodeDisposition(key, value, 4096)
		if err != nil {
			var rj *processor.Reject
			if !errors.As(err, &rj) || !slices.Contains(processor.DispositionReasons, rj.Reason) {
				t.Fatalf("rejected without a contract reason: %v", err)
			}
			return
		}
		back, err := processor.DecodeDisposition(key, d.AppendJSON(nil), 0)
		if err != nil || *back != *d {
			t.Fatalf("round trip: %+v, %v; want %+v", back, err, d)
		}
	})
}
