package processor_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/qfence/qfence/processor"
)

var decoder = processor.PingDecoder{MaxBytes: 4096, MaxSkew: 5 * time.Minute, DefaultAccuracy: 50}

// now is the wall clock the decoder tests run at.
var now = time.Date(2026, 4, 2, 12, 0, 0, 0, time.UTC).UnixMilli()

func TestPingDecodeAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want processor.Ping
	}{
		{"an RFC 3339 ts in UTC", `{"patient_id":"p-1","ts":"2026-04-02T10:21:00Z","lat":55.75,"lon":37.62,"accuracy_m":8}`,
			processor.Ping{PatientID: []byte("p-1"), TS: 1775125260000, Lat: 55.75, Lon: 37.62, Accuracy: 8}},
		{"an RFC 3339 ts with an offset and a fraction", `{"patient_id":"p-1","ts":"2026-04-02T13:21:00.123456+03:00","lat":55.75,"lon":37.62}`,
			processor.Ping{PatientID: []byte("p-1"), TS: 1775125260123, Lat: 55.75, Lon: 37.62, Accuracy: 50}},
		{"a ts in Unix milliseconds", `{"patient_id":"p-1","ts":1775125260123,"lat":-1.5,"lon":-170}`,
			processor.Ping{PatientID: []byte("p-1"), TS: 1775125260123, Lat: -1.5, Lon: -170, Accuracy: 50}},
		{"unknown fields, nulls, mock and the stored strings", ` { "x":{"y":[1,2,{"z":null}]},"patient_id":"a.b:c_d","ts":1775125260000,"lat":0,"lon":0,"accuracy_m":null,"mock":true,"device_id":"d\u00e9v","source":"gps" } `,
			processor.Ping{PatientID: []byte("a.b:c_d"), TS: 1775125260000, Accuracy: 50, Mock: true, DeviceID: []byte("dév"), Source: []byte("gps")}},
		{"a check-in naming its request", `{"patient_id":"p","ts":1775125260000,"lat":1,"lon":1,"checkin":{"request_id":"000102030405060708090a0b0c0d0e0f","verified":true,"method":"selfie","x":{}}}`,
			processor.Ping{PatientID: []byte("p"), TS: 1775125260000, Lat: 1, Lon: 1, Accuracy: 50, Checkin: processor.Checkin{Present: true, Verified: true,
				HasRequestID: true, RequestID: [16]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, Method: []byte("selfie")}}},
		{"a bare failed check-in", `{"patient_id":"p","ts":1775125260000,"lat":1,"lon":1,"checkin":{"verified":false}}`,
			processor.Ping{PatientID: []byte("p"), TS: 1775125260000, Lat: 1, Lon: 1, Accuracy: 50, Checkin: processor.Checkin{Present: true}}},
		{"the corners of the coordinate ranges", `{"patient_id":"p","ts":1775125260000,"lat":90,"lon":-180,"accuracy_m":0}`,
			processor.Ping{PatientID: []byte("p"), TS: 1775125260000, Lat: 90, Lon: -180}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got processor.Ping
			if err := decoder.Decode([]byte(tt.in), now, &got); err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if string(got.PatientID) != string(tt.want.PatientID) || got.TS != tt.want.TS || got.Lat != tt.want.Lat ||
				got.Lon != tt.want.Lon || got.Accuracy != tt.want.Accuracy || got.Mock != tt.want.Mock ||
				string(got.DeviceID) != string(tt.want.DeviceID) || string(got.Source) != string(tt.want.Source) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPingDecodeRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want processor.Reason
	}{
		{"a message over max_message_bytes", `{"patient_id":"p","pad":"` + strings.Repeat("x", 4096) + `"}`, processor.TooLarge},
		{"an empty message", ``, processor.MalformedJSON},
		{"a JSON array", `[1]`, processor.MalformedJSON},
		{"a truncated object", `{"patient_id":"p","ts":17`, processor.MalformedJSON},
		{"trailing data", `{"patient_id":"p","ts":1775125260000,"lat":1,"lon":1} x`, processor.MalformedJSON},
		{"invalid UTF-8", "{\"patient_id\":\"p\xff\",\"ts\":1775125260000,\"lat\":1,\"lon\":1}", processor.MalformedJSON},
		{"mock that is not a boolean", `{"patient_id":"p","ts":1775125260000,"lat":1,"lon":1,"mock":"yes"}`, processor.MalformedJSON},
		{"no patient_id", `{"ts":1775125260000,"lat":1,"lon":1}`, processor.MissingField},
		{"a null patient_id", `{"patient_id":null,"ts":1775125260000,"lat":1,"lon":1}`, processor.MissingField},
		{"no ts", `{"patient_id":"p","lat":1,"lon":1}`, processor.MissingField},
		{"no lat", `{"patient_id":"p","ts":1775125260000,"lon":1}`, processor.MissingField},
		{"no lon", `{"patient_id":"p","ts":1775125260000,"lat":1}`, processor.MissingField},
		{"an empty patient_id", `{"patient_id":"","ts":1775125260000,"lat":1,"lon":1}`, processor.BadPatientID},
		{"a patient_id with a space", `{"patient_id":"p 1","ts":1775125260000,"lat":1,"lon":1}`, processor.BadPatientID},
		{"a patient_id of 129 bytes", `{"patient_id":"` + strings.Repeat("a", 129) + `","ts":1775125260000,"lat":1,"lon":1}`, processor.BadPatientID},
		{"a numeric patient_id", `{"patient_id":12,"ts":1775125260000,"lat":1,"lon":1}`, processor.BadPatientID},
		{"lat above 90", `{"patient_id":"p","ts":1775125260000,"lat":90.0001,"lon":1}`, processor.BadCoordinates},
		{"lon below -180", `{"patient_id":"p","ts":1775125260000,"lat":1,"lon":-180.5}`, processor.BadCoordinates},
		{"lat as a string", `{"patient_id":"p","ts":1775125260000,"lat":"55","lon":1}`, processor.BadCoordinates},
		{"a lat that overflows float64", `{"patient_id":"p","ts":1775125260000,"lat":1e999,"lon":1}`, processor.BadCoordinates},
		{"negative accuracy", `{"patient_id":"p","ts":1775125260000,"lat":1,"lon":1,"accuracy_m":-1}`, processor.BadAccuracy},
		{"accuracy that overflows", `{"patient_id":"p","ts":1775125260000,"lat":1,"lon":1,"accuracy_m":2e308}`, processor.BadAccuracy},
		{"a check-in without verified", `{"patient_id":"p","ts":1775125260000,"lat":1,"lon":1,"checkin":{"method":"selfie"}}`, processor.BadCheckin},
		{"a check-in that is not an object", `{"patient_id":"p","ts":1775125260000,"lat":1,"lon":1,"checkin":"yes"}`, processor.BadCheckin},
		{"a check-in with a short request id", `{"patient_id":"p","ts":1775125260000,"lat":1,"lon":1,"checkin":{"verified":true,"request_id":"abc"}}`, processor.BadCheckin},
		{"a check-in whose verified is a string", `{"patient_id":"p","ts":1775125260000,"lat":1,"lon":1,"checkin":{"verified":"true"}}`, processor.BadCheckin},
		{"accuracy as a string", `{"patient_id":"p","ts":1775125260000,"lat":1,"lon":1,"accuracy_m":"8"}`, processor.BadAccuracy},
		{"a ts without a zone", `{"patient_id":"p","ts":"2026-04-02T10:21:00","lat":1,"lon":1}`, processor.BadTimestamp},
		{"a ts on February 30th", `{"patient_id":"p","ts":"2026-02-30T10:21:00Z","lat":1,"lon":1}`, processor.BadTimestamp},
		{"a ts in Unix seconds", `{"patient_id":"p","ts":1775125260,"lat":1,"lon":1}`, processor.BadTimestamp},
		{"a fractional ts number", `{"patient_id":"p","ts":1775125260000.5,"lat":1,"lon":1}`, processor.BadTimestamp},
		{"a boolean ts", `{"patient_id":"p","ts":true,"lat":1,"lon":1}`, processor.BadTimestamp},
		{"a ts more than max_clock_skew ahead", `{"patient_id":"p","ts":"2026-04-02T12:05:00.001Z","lat":1,"lon":1}`, processor.FutureTimestamp},
		// ClickHouse 18.16's DateTime ends in 2106: 2250 would be stored as 1978.
		{"a ts after 2105", `{"patient_id":"p","ts":"2106-01-01T00:00:00Z","lat":1,"lon":1}`, processor.BadTimestamp},
		{"a ts in 2250 in Unix milliseconds", `{"patient_id":"p","ts":8835984000000,"lat":1,"lon":1}`, processor.BadTimestamp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p processor.Ping
			err := decoder.Decode([]byte(tt.in), now, &p)
			var rj *processor.Reject
			if !errors.As(err, &rj) {
				t.Fatalf("got %v, want a reject with reason %s", err, tt.want)
			}
			if rj.Reason != tt.want || rj.Msg == "" {
				t.Errorf("got %s (%q), want %s", rj.Reason, rj.Msg, tt.want)
			}
		})
	}
}

func TestPingDecodeAtTheSkewLimitIsAccepted(t *testing.T) {
	var p processor.Ping
	in := `{"patient_id":"p","ts":"2026-04-02T12:05:00Z","lat":1,"lon":1}`
	if err := decoder.Decode([]byte(in), now, &p); err != nil {
		t.Fatalf("a ts exactly max_clock_skew ahead was rejected: %v", err)
	}
}

// The last instant every supported ClickHouse can store is accepted.
func TestTheLastStorableInstantIsAccepted(t *testing.T) {
	o, err := processor.DecodeOrder(nil, []byte(`{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z","ends_at":"2105-12-31T23:59:59.999Z"}`), 0, nil)
	if err != nil || processor.FormatTS(o.EndsAt) != "2105-12-31T23:59:59.999Z" {
		t.Errorf("got %v, %v", o, err)
	}
}

// A value nested too deep in an unknown field is refused as malformed, and
// the sentence says why.
func TestDeepNestingIsNamed(t *testing.T) {
	in := `{"patient_id":"p","ts":1775125260000,"lat":1,"lon":1,"x":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`
	var p processor.Ping
	err := decoder.Decode([]byte(in), now, &p)
	var rj *processor.Reject
	if !errors.As(err, &rj) || rj.Reason != processor.MalformedJSON || !strings.Contains(rj.Msg, "nested more than 64 deep") {
		t.Errorf("got %v, want malformed_json saying it is nested too deep", err)
	}
}

// A ping whose key is not its patient_id is bad_key; replay (no key) does
// not check.
func TestCheckKey(t *testing.T) {
	var p processor.Ping
	if err := decoder.Decode([]byte(`{"patient_id":"p-a","ts":1775125260000,"lat":1,"lon":1}`), now, &p); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key  string
		want bool
	}{{"p-a", true}, {"p-zzz", false}, {"", false}} {
		err := processor.CheckKey([]byte(tc.key), &p)
		var rj *processor.Reject
		if got := err == nil; got != tc.want || (err != nil && (!errors.As(err, &rj) || rj.Reason != processor.BadKey)) {
			t.Errorf("key %q: %v", tc.key, err)
		}
	}
}

func TestOrderDecode(t *testing.T) {
	const good = `{"patient_id":"p-000123","home":{"lat":55.7512,"lon":37.6184},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z","ends_at":"2026-04-15T00:00:00Z","district":"CAO"}`
	o, err := processor.DecodeOrder([]byte("p-000123"), []byte(good), 4096, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.PatientID != "p-000123" || o.Home[0] != 37.6184 || o.Home[1] != 55.7512 || o.RadiusM != 50 || o.District != "CAO" ||
		processor.FormatTS(o.StartsAt) != "2026-04-01T00:00:00.000Z" || processor.FormatTS(o.EndsAt) != "2026-04-15T00:00:00.000Z" {
		t.Errorf("decoded %+v", o)
	}
	open, err := processor.DecodeOrder(nil, []byte(`{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":10,"starts_at":1775125260000}`), 0, testZones())
	if err != nil {
		t.Fatal(err)
	}
	if !open.Open() || !open.ActiveAt(1775125260000) || open.ActiveAt(1775125259999) {
		t.Errorf("an order without ends_at should be open from starts_at: %+v", open)
	}
	tests := []struct {
		name string
		key  string
		in   string
		want processor.Reason
	}{
		{"not JSON", "p", `{`, processor.MalformedJSON},
		{"no radius", "p", `{"patient_id":"p","home":{"lat":1,"lon":2},"starts_at":"2026-04-01T00:00:00Z"}`, processor.MissingField},
		{"no starts_at", "p", `{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":50}`, processor.MissingField},
		{"no home", "p", `{"patient_id":"p","radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`, processor.MissingField},
		{"a key that is not the patient", "q", `{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`, processor.BadPatientID},
		{"a home off the globe", "p", `{"patient_id":"p","home":{"lat":91,"lon":2},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`, processor.BadCoordinates},
		{"a string lat", "p", `{"patient_id":"p","home":{"lat":"1","lon":2},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`, processor.BadCoordinates},
		{"a radius under 10 m", "p", `{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":9.9,"starts_at":"2026-04-01T00:00:00Z"}`, processor.BadRadius},
		{"a radius over 10 km", "p", `{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":10001,"starts_at":"2026-04-01T00:00:00Z"}`, processor.BadRadius},
		{"a bad starts_at", "p", `{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":50,"starts_at":"yesterday"}`, processor.BadTimestamp},
		{"an end after 2105", "p", `{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z","ends_at":"2200-01-01T00:00:00Z"}`, processor.BadTimestamp},
		{"a start after 2105", "p", `{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":50,"starts_at":"2106-04-01T00:00:00Z"}`, processor.BadTimestamp},
		{"an end before the start", "p", `{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z","ends_at":"2026-03-01T00:00:00Z"}`, processor.BadPeriod},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := processor.DecodeOrder([]byte(tt.key), []byte(tt.in), 4096, nil)
			var rj *processor.Reject
			if !errors.As(err, &rj) || rj.Reason != tt.want {
				t.Errorf("got %v, want reason %s", err, tt.want)
			}
		})
	}
}

func TestOrderDistrictComesFromTheZonesWhenAbsent(t *testing.T) {
	o, err := processor.DecodeOrder(nil, []byte(`{"patient_id":"p","home":{"lat":55.75,"lon":37.62},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`), 0, testZones())
	if err != nil {
		t.Fatal(err)
	}
	if o.District != "district-a" {
		t.Errorf("district = %q, want district-a (the district zone holding the home)", o.District)
	}
}

// FuzzPingDecode: the decoder never panics, rejects only with a contract
// reason, and agrees with encoding/json about what is JSON.
func FuzzPingDecode(f *testing.F) {
	for _, s := range []string{
		`{"patient_id":"p-1","ts":"2026-04-02T10:21:00Z","lat":55.75,"lon":37.62,"accuracy_m":8}`,
		`{"patient_id":"p-1","ts":1775125260123,"lat":-1.5,"lon":-170,"mock":false,"device_id":"x","source":"y"}`,
		`{"patient_id":"p\u002d1","ts":"2026-04-02T13:21:00.1+03:00","lat":0,"lon":0,"extra":[{},[],"",1e5,true,null]}`,
		`{"ts":"2026-02-29T00:00:00Z"}`, `[`, `{"a":`, `"x"`, `{"patient_id":"p","ts":1e3}`,
		`{"patient_id":"p","ts":1775125260000,"lat":1,"lon":1,"checkin":{"request_id":"000102030405060708090a0b0c0d0e0f","verified":true,"method":"selfie"}}`,
		`{"patient_id":"p","ts":1775125260000,"lat":1,"lon":1,"checkin":{"verified":1,"checkin":{}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p processor.Ping
		err := decoder.Decode(data, now, &p)
		if err == nil {
			if !json.Valid(data) {
				t.Fatalf("accepted invalid JSON %q", data)
			}
			if !processor.ValidPatientID(p.PatientID) || p.Lat < -90 || p.Lat > 90 || p.Lon < -180 || p.Lon > 180 || !(p.Accuracy >= 0) {
				t.Fatalf("accepted an invalid ping %q: %+v", data, p)
			}
			return
		}
		var rj *processor.Reject
		if !errors.As(err, &rj) || !slices.Contains(processor.PingReasons, rj.Reason) || rj.Msg == "" {
			t.Fatalf("error %v is not a contract reject", err)
		}
		if json.Valid(data) && utf8.Valid(data) && len(data) <= decoder.MaxBytes && rj.Reason == processor.MalformedJSON && !strings.Contains(rj.Msg, "mock") &&
			!strings.Contains(rj.Msg, "must be a string") && !strings.Contains(rj.Msg, "not a JSON object") {
			t.Fatalf("valid JSON %q rejected as malformed: %s", data, rj.Msg)
		}
	})
}

// FuzzOrderDecode: orders never panic and are rejected with a reason.
func FuzzOrderDecode(f *testing.F) {
	f.Add([]byte("p"), []byte(`{"patient_id":"p","home":{"lat":55.7512,"lon":37.6184},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z","ends_at":"2026-04-15T00:00:00Z","district":"CAO"}`))
	f.Add([]byte(""), []byte(`{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":10,"starts_at":1775125260000,"ends_at":null}`))
	f.Add([]byte("p"), []byte(`{"home":[]}`))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		o, err := processor.DecodeOrder(key, value, 4096, testZones())
		if err == nil {
			if o.RadiusM < 10 || o.RadiusM > 10000 || o.EndsAt <= o.StartsAt || !processor.ValidPatientID([]byte(o.PatientID)) {
				t.Fatalf("accepted an invalid order %q: %+v", value, o)
			}
			return
		}
		var rj *processor.Reject
		if !errors.As(err, &rj) || rj.Reason == "" || rj.Msg == "" {
			t.Fatalf("error %v is not a reject", err)
		}
	})
}
