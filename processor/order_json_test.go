package processor

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/paulmach/orb"

	"github.com/qfence/qfence/geo"
)

// decodeOrderJSON is DecodeOrder as it was with encoding/json: the
// reference the scanner's decoder is held to (FuzzOrderDecodeMatchesJSON).
func decodeOrderJSON(key, value []byte, maxBytes int, zones *geo.Zones) (*Order, error) {
	if maxBytes > 0 && len(value) > maxBytes {
		return nil, reject(TooLarge, "message is %d bytes, more than limits.max_message_bytes (%d)", len(value), maxBytes)
	}
	var w struct {
		PatientID *string `json:"patient_id"`
		Home      *struct {
			Lat *float64 `json:"lat"`
			Lon *float64 `json:"lon"`
		} `json:"home"`
		RadiusM  *float64        `json:"radius_m"`
		StartsAt json.RawMessage `json:"starts_at"`
		EndsAt   json.RawMessage `json:"ends_at"`
		District *string         `json:"district"`
		DeviceID *string         `json:"device_id"`
	}
	if err := json.Unmarshal(value, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, reject(reasonOfField(te.Field), "order field %s has the wrong type (%s)", te.Field, te.Value)
		}
		return nil, reject(MalformedJSON, "order is not a JSON object: %v", err)
	}
	switch {
	case w.PatientID == nil:
		return nil, reject(MissingField, "patient_id is required")
	case w.Home == nil || w.Home.Lat == nil || w.Home.Lon == nil:
		return nil, reject(MissingField, "home.lat and home.lon are required")
	case w.RadiusM == nil:
		return nil, reject(MissingField, "radius_m is required")
	case len(w.StartsAt) == 0 || string(w.StartsAt) == "null":
		return nil, reject(MissingField, "starts_at is required")
	}
	if !ValidPatientID([]byte(*w.PatientID)) {
		return nil, reject(BadPatientID, "patient_id %q must be 1-128 bytes of [A-Za-z0-9._:-]", truncate([]byte(*w.PatientID)))
	}
	if key != nil && string(key) != *w.PatientID {
		return nil, reject(BadPatientID, "key %q differs from patient_id %q", truncate(key), *w.PatientID)
	}
	lat, lon := *w.Home.Lat, *w.Home.Lon
	if lat < -90 || lat > 90 || lon < -180 || lon > 180 {
		return nil, reject(BadCoordinates, "home lat %v, lon %v", lat, lon)
	}
	if r := *w.RadiusM; !(r >= 10 && r <= 10000) {
		return nil, reject(BadRadius, "radius_m %v", r)
	}
	o := &Order{PatientID: *w.PatientID, Home: orb.Point{lon, lat}, RadiusM: *w.RadiusM, EndsAt: math.MaxInt64}
	if d := w.DeviceID; d != nil && *d != "" {
		if len(*d) > maxDeviceBytes {
			return nil, reject(MalformedJSON, "device_id is %d bytes, at most %d", len(*d), maxDeviceBytes)
		}
		o.EnrolDevice(*d)
	}
	var ok bool
	if o.StartsAt, ok = orderTime(w.StartsAt); !ok {
		return nil, reject(BadTimestamp, "starts_at")
	}
	if len(w.EndsAt) > 0 && string(w.EndsAt) != "null" {
		if o.EndsAt, ok = orderTime(w.EndsAt); !ok {
			return nil, reject(BadTimestamp, "ends_at")
		}
		if o.EndsAt <= o.StartsAt {
			return nil, reject(BadPeriod, "ends_at before starts_at")
		}
	}
	if w.District != nil {
		o.District = *w.District
	} else if d, _ := zones.Lookup(o.Home); d != nil {
		o.District = d.ID
	}
	return o, nil
}

// foldedKey reports whether the order names a field in another case
// ("Patient_ID"), which encoding/json took and DecodeOrder does not.
func foldedKey(value []byte) bool {
	folded := func(raw json.RawMessage, names ...string) (home json.RawMessage, found bool) {
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return nil, false
		}
		for k, v := range m {
			for _, n := range names {
				if k != n && strings.EqualFold(k, n) {
					found = true
				}
				if n == "home" && strings.EqualFold(k, n) {
					home = v
				}
			}
		}
		return home, found
	}
	home, found := folded(value, "patient_id", "home", "radius_m", "starts_at", "ends_at", "district", "device_id")
	if _, inHome := folded(home, "lat", "lon"); inHome {
		found = true
	}
	return found
}

// deep reports whether a value nests past the scanner's bound.
func deep(value []byte) bool {
	depth, most := 0, 0
	for _, c := range value {
		switch c {
		case '{', '[':
			depth++
			most = max(most, depth)
		case '}', ']':
			depth--
		}
	}
	return most > maxDepth
}

// FuzzOrderDecodeMatchesJSON: DecodeOrder accepts what encoding/json
// accepted, the same order to the field, and rejects what it rejected, for
// the same reason, apart from its three documented differences (field
// names in another case, bytes that are not UTF-8, deep nesting), each
// checked here to be refused as malformed or as a missing field.
func FuzzOrderDecodeMatchesJSON(f *testing.F) {
	for _, v := range orderSeeds {
		f.Add([]byte("p"), []byte(v))
	}
	f.Fuzz(func(t *testing.T, key, value []byte) {
		got, gerr := DecodeOrder(key, value, 4096, nil)
		want, werr := decodeOrderJSON(key, value, 4096, nil)
		switch {
		case !utf8.Valid(value):
			if r, ok := gerr.(*Reject); !ok || r.Reason != MalformedJSON {
				t.Fatalf("%q is not UTF-8: got %v, want malformed_json", value, gerr)
			}
			return
		case foldedKey(value), deep(value) && gerr != nil:
			return // encoding/json's case folding or depth; DecodeOrder refuses or ignores the field
		}
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("%q: DecodeOrder %v, encoding/json %v", value, gerr, werr)
		}
		if gerr != nil {
			if g, w := gerr.(*Reject).Reason, werr.(*Reject).Reason; g != w {
				t.Fatalf("%q: DecodeOrder rejects it as %s (%v), encoding/json as %s (%v)", value, g, gerr, w, werr)
			}
			return
		}
		if got.PatientID != want.PatientID || got.DeviceID() != want.DeviceID() || got.Home != want.Home || got.RadiusM != want.RadiusM ||
			got.StartsAt != want.StartsAt || got.EndsAt != want.EndsAt || got.District != want.District {
			t.Fatalf("%q: DecodeOrder %+v, encoding/json %+v", value, got, want)
		}
	})
}

// TestOrderDecodeDiffersFromJSONOnlyAsSaid pins the three differences.
func TestOrderDecodeDiffersFromJSONOnlyAsSaid(t *testing.T) {
	const tail = `"home":{"lat":1,"lon":2},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`
	for _, tt := range []struct {
		name, in string
		want     Reason
	}{
		{"a field name in another case", `{"Patient_ID":"p",` + tail, MissingField},
		{"not UTF-8", "{\"patient_id\":\"p\",\"district\":\"\xff\"," + tail, MalformedJSON},
		{"nested 70 deep", `{"patient_id":"p","x":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `,` + tail, MalformedJSON},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeOrderJSON([]byte("p"), []byte(tt.in), 4096, nil); err != nil {
				t.Fatalf("encoding/json refused it too: %v", err)
			}
			_, err := DecodeOrder([]byte("p"), []byte(tt.in), 4096, nil)
			if r, ok := err.(*Reject); !ok || r.Reason != tt.want {
				t.Fatalf("got %v, want %s", err, tt.want)
			}
		})
	}
}

// orderSeeds start the fuzzer at each field's edges.
var orderSeeds = []string{
	`{"patient_id":"p","home":{"lat":55.7512,"lon":37.6184},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z","ends_at":"2026-04-15T00:00:00Z","district":"CAO","device_id":"d-1"}`,
	`{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":10,"starts_at":1775125260000,"ends_at":null}`,
	`{"home":[]}`,
	`null`,
	`[]`,
	`"x"`,
	`7`,
	`{}`,
	` {"patient_id" : "p" } `,
	`{"patient_id":5}`,
	`{"patient_id":"p","home":{"lat":"1","lon":2},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`,
	`{"patient_id":"p","home":{"lat":1e400,"lon":2},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`,
	`{"patient_id":"p","home":{"lat":1,"lon":2},"home":{"lat":3},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`,
	`{"patient_id":"p","home":{"lat":1,"lon":2},"home":null,"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`,
	`{"patient_id":"p","home":{"lat":1,"lon":2,"alt":{"x":[1,2]}},"radius_m":"50","starts_at":true}`,
	`{"patient_id":"p\u002d1","home":{"lat":-90,"lon":180},"radius_m":10000,"starts_at":"2026-04-01T00:00:00+03:00","district":"\u0426"}`,
	`{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z","ends_at":"2026-03-01T00:00:00Z"}`,
	`{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z","device_id":""}`,
	`{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"} x`,
	`{"patient_id":"p","home":{"lat":1,"lon":2},"radius_m":50,"starts_at":"2026-04-01T00:00:00Z",}`,
	`{"patient_id":"p","district":7,"home":5,"radius_m":50,"starts_at":"2026-04-01T00:00:00Z"}`,
}
