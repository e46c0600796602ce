package processor

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Ping is one decoded location ping (config/contract/CONTRACT.md 1.1).
//
// Aliasing: PatientID, DeviceID and Source point into the message passed to
// PingDecoder.Decode (or, when the JSON escaped them, into fresh memory), so
// they are valid only while that message is. Copy what must outlive it.
type Ping struct {
	PatientID []byte
	TS        int64 // Unix milliseconds
	Lat, Lon  float64
	Accuracy  float64 // metres; the configured default when the ping had none
	Mock      bool
	DeviceID  []byte
	Source    []byte
	Checkin   Checkin
	// Attestation is checkin.attestation (contract 2.3). It is the ping's,
	// not Checkin's, so that the stored row (Track) does not carry it.
	Attestation []byte
}

// PingDecoder decodes and validates pings. It holds no per-message state,
// so one decoder may be shared by goroutines.
type PingDecoder struct {
	// MaxBytes is limits.max_message_bytes.
	MaxBytes int
	// MaxSkew is limits.max_clock_skew; zero turns the future check off
	// (qfence replay works in event time only).
	MaxSkew time.Duration
	// DefaultAccuracy is rules.default_accuracy_m.
	DefaultAccuracy float64
}

var patientIDChars = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == ':' || c == '-'
	}
	return t
}()

// ValidPatientID reports whether id is 1–128 bytes of [A-Za-z0-9._:-].
func ValidPatientID(id []byte) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !patientIDChars[c] {
			return false
		}
	}
	return true
}

// The bounds of contract 1.1 on the fields stored as sent.
const (
	maxDeviceBytes = 128
	maxSourceBytes = 32
)

const (
	seenPatient = 1 << iota
	seenTS
	seenLat
	seenLon
)

// Decode fills p from data. now is the wall clock in Unix milliseconds, for
// the future check. It returns a *Reject for a message that breaks a rule of
// the contract, and allocates nothing for a valid, unescaped ping.
func (d *PingDecoder) Decode(data []byte, now int64, p *Ping) error {
	if d.MaxBytes > 0 && len(data) > d.MaxBytes {
		return reject(TooLarge, "message is %d bytes, more than limits.max_message_bytes (%d)", len(data), d.MaxBytes)
	}
	if !utf8.Valid(data) {
		return reject(MalformedJSON, "message is not valid UTF-8")
	}
	*p = Ping{Accuracy: d.DefaultAccuracy}
	var (
		s     = scanner{b: data}
		seen  int
		first *Reject // the first field error; reported once the JSON is known to be well-formed
	)
	fieldErr := func(r Reason, format string, args ...any) {
		if first == nil {
			first = reject(r, format, args...)
		}
	}
	if !s.eat('{') {
		return reject(MalformedJSON, "message is not a JSON object")
	}
	if !s.eat('}') {
		for {
			key, kesc, ok := s.str()
			if !ok || !s.eat(':') {
				return malformed(&s)
			}
			if kesc {
				// An escaped key is never one of ours in practice; compare it decoded.
				var k string
				if json.Unmarshal(quote(key), &k) != nil {
					return malformed(&s)
				}
				key = []byte(k)
			}
			c := s.peek()
			if c == 'n' { // null: the field is absent
				if !s.lit("null") {
					return malformed(&s)
				}
			} else {
				switch string(key) {
				case "patient_id":
					v, ok := s.strValue(c)
					if !ok {
						return malformed(&s)
					}
					if v == nil {
						fieldErr(BadPatientID, "patient_id must be a string")
					}
					p.PatientID, seen = v, seen|seenPatient
				case "ts":
					seen |= seenTS
					if c == '"' {
						raw, esc, ok := s.str()
						if !ok {
							return malformed(&s)
						}
						ts, good := parseRFC3339(raw)
						if esc || !good {
							fieldErr(BadTimestamp, "ts %q is not an RFC 3339 time with a zone", raw)
						}
						p.TS = ts
					} else {
						raw, integer, ok := s.number()
						if !ok {
							if !s.skip(0) {
								return malformed(&s)
							}
							fieldErr(BadTimestamp, "ts must be an RFC 3339 string or integer Unix milliseconds")
							break
						}
						ts, good := parseUnixMillis(raw)
						if !integer || !good {
							fieldErr(BadTimestamp, "ts %s is not integer Unix milliseconds", raw)
						}
						p.TS = ts
					}
				case "lat", "lon":
					v, ok := s.floatValue(c)
					if !ok {
						return malformed(&s)
					}
					if math.IsNaN(v) {
						fieldErr(BadCoordinates, "%s must be a finite number", key)
					}
					if key[1] == 'a' {
						p.Lat, seen = v, seen|seenLat
					} else {
						p.Lon, seen = v, seen|seenLon
					}
				case "accuracy_m":
					v, ok := s.floatValue(c)
					if !ok {
						return malformed(&s)
					}
					if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
						fieldErr(BadAccuracy, "accuracy_m must be a finite number >= 0")
					}
					p.Accuracy = v
				case "mock":
					switch {
					case s.lit("true"):
						p.Mock = true
					case s.lit("false"):
					default:
						if !s.skip(0) {
							return malformed(&s)
						}
						fieldErr(MalformedJSON, "mock must be true or false")
					}
				case "checkin":
					if c != '{' {
						if !s.skip(0) {
							return malformed(&s)
						}
						fieldErr(BadCheckin, "checkin must be an object {\"verified\": bool, \"request_id\": \"32 hex\", \"method\": string, \"attestation\": string}")
						break
					}
					msg, ok := s.checkin(&p.Checkin, &p.Attestation)
					if !ok {
						return malformed(&s)
					}
					if msg != "" {
						fieldErr(BadCheckin, "%s", msg)
					}
				case "device_id", "source":
					v, ok := s.strValue(c)
					if !ok {
						return malformed(&s)
					}
					max := maxDeviceBytes
					if key[0] == 's' {
						max = maxSourceBytes
					}
					switch {
					case v == nil:
						fieldErr(MalformedJSON, "%s must be a string", key)
					case len(v) > max:
						fieldErr(MalformedJSON, "%s is %d bytes, at most %d", key, len(v), max)
					}
					if key[0] == 'd' {
						p.DeviceID = v
					} else {
						p.Source = v
					}
				default:
					if !s.skip(0) {
						return malformed(&s)
					}
				}
			}
			if s.eat('}') {
				break
			}
			if !s.eat(',') {
				return malformed(&s)
			}
		}
	}
	if s.peek() != 0 {
		return reject(MalformedJSON, "unexpected data after the JSON object at byte %d", s.i)
	}
	if first != nil {
		return first
	}
	switch {
	case seen&seenPatient == 0:
		return reject(MissingField, "patient_id is required")
	case seen&seenTS == 0:
		return reject(MissingField, "ts is required")
	case seen&seenLat == 0:
		return reject(MissingField, "lat is required")
	case seen&seenLon == 0:
		return reject(MissingField, "lon is required")
	}
	if !ValidPatientID(p.PatientID) {
		return reject(BadPatientID, "patient_id %q must be 1-128 bytes of [A-Za-z0-9._:-]", truncate(p.PatientID))
	}
	if math.IsInf(p.Lat, 0) || math.IsInf(p.Lon, 0) || p.Lat < -90 || p.Lat > 90 || p.Lon < -180 || p.Lon > 180 {
		return reject(BadCoordinates, "lat %v, lon %v: lat must be in [-90, 90] and lon in [-180, 180]", p.Lat, p.Lon)
	}
	if p.TS < minTS || p.TS > maxTS {
		return reject(BadTimestamp, "ts %s is outside %s (Unix seconds instead of milliseconds?)", FormatTS(p.TS), tsRange)
	}
	if d.MaxSkew > 0 && p.TS > now+d.MaxSkew.Milliseconds() {
		return reject(FutureTimestamp, "ts %s is more than %s ahead of the clock (%s)", FormatTS(p.TS), d.MaxSkew, FormatTS(now))
	}
	return nil
}

// checkin reads the checkin object whose '{' is next into c. ok false:
// the JSON is malformed; msg: what breaks the contract's rule for it.
func (s *scanner) checkin(c *Checkin, attestation *[]byte) (msg string, ok bool) {
	*c = Checkin{Present: true}
	s.eat('{')
	seenVerified := false
	if s.eat('}') {
		return "checkin.verified is required", true
	}
	for {
		key, _, ok := s.str()
		if !ok || !s.eat(':') {
			return "", false
		}
		v := s.peek()
		switch {
		case v == 'n':
			if !s.lit("null") {
				return "", false
			}
		case string(key) == "verified":
			switch {
			case s.lit("true"):
				c.Verified, seenVerified = true, true
			case s.lit("false"):
				seenVerified = true
			default:
				if !s.skip(1) {
					return "", false
				}
				msg = "checkin.verified must be true or false"
			}
		case string(key) == "request_id":
			raw, ok := s.strValue(v)
			if !ok {
				return "", false
			}
			id, good := ParseRequestID(raw)
			if !good && msg == "" {
				msg = "checkin.request_id must be 32 hex digits"
			}
			c.RequestID, c.HasRequestID = id, good
		case string(key) == "attestation":
			raw, ok := s.strValue(v)
			if !ok {
				return "", false
			}
			switch {
			case raw == nil && msg == "":
				msg = "checkin.attestation must be a string"
			case len(raw) > MaxAttestationBytes && msg == "":
				msg = fmt.Sprintf("checkin.attestation is %d bytes, at most %d", len(raw), MaxAttestationBytes)
			}
			*attestation = raw
		case string(key) == "method":
			raw, ok := s.strValue(v)
			if !ok {
				return "", false
			}
			if raw == nil && msg == "" {
				msg = "checkin.method must be a string"
			}
			c.Method = raw
		default:
			if !s.skip(1) {
				return "", false
			}
		}
		if s.eat('}') {
			break
		}
		if !s.eat(',') {
			return "", false
		}
	}
	if !seenVerified && msg == "" {
		msg = "checkin.verified is required"
	}
	return msg, true
}

func malformed(s *scanner) *Reject {
	if s.tooDeep {
		return reject(MalformedJSON, "a value is nested more than %d deep (at byte %d); qfence reads no deeper", maxDepth, s.i)
	}
	return reject(MalformedJSON, "message is not valid JSON (at byte %d)", s.i)
}

// strValue reads a string value; for a value of another type it skips it and
// returns nil, true. Escaped strings are decoded into new memory.
func (s *scanner) strValue(c byte) ([]byte, bool) {
	if c != '"' {
		return nil, s.skip(0)
	}
	raw, esc, ok := s.str()
	if !ok {
		return nil, false
	}
	if !esc {
		if raw == nil {
			raw = []byte{}
		}
		return raw, true
	}
	var v string
	if json.Unmarshal(quote(raw), &v) != nil {
		return nil, false
	}
	return []byte(v), true
}

// floatValue reads a number value; for a value of another type it skips it
// and returns NaN, true. Out-of-range numbers come back as ±Inf.
func (s *scanner) floatValue(c byte) (float64, bool) {
	if c != '-' && !isDigit(c) {
		return math.NaN(), s.skip(0)
	}
	raw, _, ok := s.number()
	if !ok {
		return 0, false
	}
	if v, ok := exactDecimal(raw); ok {
		return v, true
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil && !math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}

// pow10 are the powers of ten a float64 holds exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// exactDecimal parses a JSON number without exponent whose digits fit in
// 15 (a coordinate, an accuracy): the digits and the power of ten are both
// exact float64s, so one division rounds correctly and the result is
// strconv.ParseFloat's to the bit (its own first path; TestExactDecimal).
// Anything else is left to strconv. Half of decoding a ping was ParseFloat.
func exactDecimal(raw []byte) (float64, bool) {
	neg := len(raw) > 0 && raw[0] == '-'
	if neg {
		raw = raw[1:]
	}
	if len(raw) == 0 || !isDigit(raw[0]) || !isDigit(raw[len(raw)-1]) {
		return 0, false
	}
	var mant uint64
	digits, frac, dot := 0, 0, false
	for _, c := range raw {
		switch {
		case isDigit(c):
			if mant != 0 || c != '0' {
				digits++
			}
			mant = mant*10 + uint64(c-'0')
			if dot {
				frac++
			}
		case c == '.' && !dot:
			dot = true
		default:
			return 0, false
		}
	}
	if digits > 15 || frac >= len(pow10) {
		return 0, false
	}
	v := float64(mant) / pow10[frac]
	if neg {
		v = -v
	}
	return v, true
}

func quote(raw []byte) []byte {
	q := make([]byte, 0, len(raw)+2)
	q = append(q, '"')
	q = append(q, raw...)
	return append(q, '"')
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}
