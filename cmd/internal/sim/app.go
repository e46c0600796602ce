package sim

import (
	"container/heap"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/paulmach/orb"

	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/geo/synth"
	"github.com/qfence/qfence/processor"
)

// App is the patients' phone app: it answers check-in requests as the
// ground truth says. A patient at home answers, verified, with a fresh
// GPS fix (not the Wi-Fi position that may have raised the alarm) after
// 45 s to 3 min; a few answer too late, a few fail the face match. A
// patient who is out does not answer; a phone that is off answers once it
// is back on, if the request is still open. Every honest answer carries
// the verification service's signed statement (contract 2.3); a forger's
// app, asked while its patient is out, sends a forgery instead.
type App struct {
	s      *Scenario
	window time.Duration
	fixes  map[string][]int64 // each phone's own pings' ts, in order
	forger ed25519.PrivateKey // the key a forger's modified app signs with
}

// App returns the scenario's app; window is checkins.response_window.
func (s *Scenario) App(window time.Duration) *App {
	a := &App{s: s, window: window, fixes: map[string][]int64{}, forger: seedKey(s.Params.Seed, "qfence-sim-forger-key-0")}
	for _, p := range s.Pings {
		a.fixes[string(p.Key)] = append(a.fixes[string(p.Key)], p.TS)
	}
	for _, ts := range a.fixes {
		slices.Sort(ts)
	}
	return a
}

// apart moves ts to the middle of the gap between the phone's own fixes
// around it: a GPS fix for a check-in a second after a Wi-Fi fix 300 m
// away would be a jump no one can make, and the engine rightly calls it
// implausible. Half a ping interval is far enough.
func (a *App) apart(id string, ts int64) int64 {
	fixes := a.fixes[id]
	i, _ := slices.BinarySearch(fixes, ts)
	if i == 0 || i == len(fixes) {
		return ts
	}
	return (fixes[i-1] + fixes[i]) / 2
}

// The app's share of late answers and failed face matches.
const (
	appFailShare = 0.04
	appLateShare = 0.06
)

// Answer is the app's answer to check-in request reqID (32 hex) made of
// patient at `at` (Unix ms): the ping it sends, or false for none. The
// choice is a hash of the request id, so a replay of the loop answers
// alike.
func (a *App) Answer(patient, reqID string, at int64) (Ping, bool) {
	pt := a.s.patients[patient]
	if pt == nil {
		return Ping{}, false
	}
	h := sha256.Sum256([]byte("qfence-sim-app|" + reqID))
	u := float64(binary.BigEndian.Uint64(h[:8])>>11) / (1 << 53)
	v := float64(binary.BigEndian.Uint64(h[8:16])>>11) / (1 << 53)
	ts := at + 45_000 + int64(v*135_000)
	if pt.b == PhoneOff && pt.inBehaviour(ts) { // read once the phone is back on
		ts = pt.start + pt.dur.Milliseconds() + 30_000 + int64(v*60_000)
	}
	verified := true
	switch {
	case u < appFailShare:
		verified = false
	case u < appFailShare+appLateShare:
		ts = at + a.window.Milliseconds() + 60_000 + int64(v*120_000)
	}
	ts = a.apart(pt.id, ts)
	if pt.b == Forger && pt.inBehaviour(at) && ts < at+a.window.Milliseconds() {
		return a.forge(pt, reqID, ts), true
	}
	if ts >= at+a.window.Milliseconds() && u >= appFailShare+appLateShare {
		return Ping{}, false // the phone came back too late to answer
	}
	if !pt.atHome(ts) || !pt.atHome(at) {
		return Ping{}, false // out: the patient does not answer
	}
	pos := synth.Offset(pt.home, float64(h[16]%7)-3, float64(h[17]%7)-3)
	st := a.statement(pt, reqID, ts, pos, verified)
	st.Integrity = []string{"strong", "device"}[h[18]%2]
	return a.checkin(pt, st, a.sign(st, a.s.Verifier, VerifierKID)), true
}

// Forgery is the kind of forged check-in a forger's modified app sends,
// chosen by a hash of the patient id: each is named by the reason it must
// be rejected with (contract 2.3).
func (s *Scenario) Forgery(patient string) processor.CheckinReason {
	h := sha256.Sum256([]byte("qfence-sim-forgery|" + patient))
	return processor.CheckinReasons[int(h[0])%len(processor.CheckinReasons)]
}

// forge is a forger's answer while out: a verified selfie at home, as a
// modified app makes one up.
func (a *App) forge(pt *patient, reqID string, ts int64) Ping {
	home := synth.Offset(pt.home, 2, -2)
	st := a.statement(pt, reqID, ts, home, true)
	var att string
	switch a.s.Forgery(pt.id) {
	case processor.CheckinNoAttestation: // "verified": true, on the app's word
	case processor.CheckinMalformedAttestation:
		att = "eyJhbGciOiJub25lIn0.eyJ2ZXJpZmllZCI6dHJ1ZX0."
	case processor.CheckinUnknownKey: // signed with a key of its own
		att = a.sign(st, a.forger, "forger-1")
	case processor.CheckinBadSignature: // the same, under the service's kid
		att = a.sign(st, a.forger, VerifierKID)
	case processor.CheckinWrongAudience: // a statement the service made for another relying party
		st.Aud = "another-app"
		att = a.sign(st, a.s.Verifier, VerifierKID)
	case processor.CheckinMismatch:
		real := st
		if pt.id[len(pt.id)-1]%2 == 0 { // the service signed the true fix; the app sends home instead
			real.Fix.Lat, real.Fix.Lon = round6(along(pt, ts)[1]), round6(along(pt, ts)[0])
		} else { // a copy of an earlier real one: at home, before the trip, for no request
			real.Fix.TS, real.RequestID = pt.start-3_600_000, ""
			real.Iat, real.Exp = real.Fix.TS/1000, real.Fix.TS/1000+600
		}
		att = a.sign(real, a.s.Verifier, VerifierKID)
	case processor.CheckinExpired: // a fix dated ahead, signed at home 20 minutes before
		st.RequestID = ""
		st.Iat = ts/1000 - 1200
		st.Exp = st.Iat + 600
		att = a.sign(st, a.s.Verifier, VerifierKID)
	case processor.CheckinWeakIntegrity: // a real face on a modified app that fakes the fix: the platform vouches for nothing
		st.Integrity = "none"
		att = a.sign(st, a.s.Verifier, VerifierKID)
	}
	return a.checkin(pt, st, att)
}

// statement is what the verification service signs for a check-in at ts
// from pos: the fix rounded as the ping carries it.
func (a *App) statement(pt *patient, reqID string, ts int64, pos orb.Point, verified bool) processor.Statement {
	return processor.Statement{Aud: "qfence", Iss: "sim-verification", Sub: pt.id, Verified: verified, Method: "selfie",
		RequestID: reqID, Iat: ts / 1000, Exp: ts/1000 + 600,
		Fix: processor.Fix{TS: ts, Lat: round6(pos[1]), Lon: round6(pos[0]), Accuracy: 5, Source: "gps"}}
}

func (a *App) sign(st processor.Statement, key ed25519.PrivateKey, kid string) string {
	jws, err := st.Sign(key, kid)
	if err != nil {
		panic("BUG: an Ed25519 statement does not sign: " + err.Error())
	}
	return jws
}

// checkin is the check-in ping of st's fix (request id, verdict and method
// from st too), with attestation att ("" for none).
func (a *App) checkin(pt *patient, st processor.Statement, att string) Ping {
	c := fmt.Sprintf(`"verified":%t,"method":%q`, st.Verified, st.Method)
	if st.RequestID != "" {
		c = fmt.Sprintf(`"request_id":%q,`, st.RequestID) + c
	}
	if att != "" {
		c += fmt.Sprintf(`,"attestation":%q`, att)
	}
	v := fmt.Sprintf(`{"patient_id":%q,"ts":%q,"lat":%.6f,"lon":%.6f,"accuracy_m":5,"device_id":%q,"source":"gps","checkin":{%s}}`,
		pt.id, time.UnixMilli(st.Fix.TS).UTC().Format("2006-01-02T15:04:05.000Z"), st.Fix.Lat, st.Fix.Lon, pt.device(), c)
	return Ping{Key: []byte(pt.id), Value: []byte(v), TS: st.Fix.TS}
}

func round6(x float64) float64 { return math.Round(x*1e6) / 1e6 }

func (pt *patient) inBehaviour(ts int64) bool {
	return ts >= pt.start && ts < pt.start+pt.dur.Milliseconds()
}

// atHome says whether the patient is truly at home at ts (whatever the
// phone says).
func (pt *patient) atHome(ts int64) bool {
	switch pt.b {
	case ShortTrip, Walk, Drive, Clinic, Forger, SecondPhone, PassTrip, PassOverrun, PassFar, PassRevoked, PassForged:
		return !pt.inBehaviour(ts)
	case WifiWalk:
		return !pt.walking(ts)
	}
	return true
}

// Loop is the closed loop of engine and app without Kafka: the pings in
// delivery order, the app's answers merged in by their ts, through one
// engine (as one partition), as qfence run and the app do it live.
type Loop struct {
	Events  []processor.Event
	Answers int // check-in pings the app sent
	Rules   processor.Rules
}

// Decide runs the scenario's pings through the engine, with the app
// answering the check-in requests when app is true.
func (s *Scenario) Decide(rules processor.Rules, app bool) (*Loop, error) {
	zones, err := geo.ParseZones(s.Zones)
	if err != nil {
		return nil, err
	}
	book := processor.NewOrderBook()
	for _, l := range s.Orders {
		o, err := processor.DecodeOrder(nil, []byte(l), 0, zones)
		if err != nil {
			return nil, err
		}
		book.Put(o)
	}
	keys, err := processor.ParseVerifyKeys([]byte(s.PublicKey()))
	if err != nil {
		return nil, err
	}
	passes := processor.NewPassBook()
	pdec := processor.PassDecoder{MaxDuration: 12 * time.Hour, Keys: keys}
	for _, l := range s.Passes {
		if pass, err := pdec.Decode(nil, []byte(l)); err == nil {
			_, _ = passes.Apply(pass) // a stale version is refused, as qfence run does
		}
	}
	eng := processor.NewEngine(rules, book)
	eng.UsePasses(passes)
	out := &Loop{Rules: rules}
	answerer := s.App(rules.Checkins.ResponseWindow)
	dec := processor.PingDecoder{MaxBytes: 4096, DefaultAccuracy: rules.DefaultAccuracyM}
	var (
		pending answers
		pg      processor.Ping
		ev      []processor.Event
		clock   int64
	)
	decide := func(value []byte) {
		if dec.Decode(value, 0, &pg) != nil {
			return
		}
		n := len(out.Events)
		ev, _, _ = eng.Process(&pg, zones, ev[:0])
		out.Events = append(out.Events, ev...)
		if !app {
			return
		}
		for _, e := range out.Events[n:] {
			if e.Type == processor.CheckinRequested {
				if a, ok := answerer.Answer(e.PatientID, e.IDString(), e.At); ok {
					heap.Push(&pending, a)
					out.Answers++
				}
			}
		}
	}
	for _, m := range s.Pings {
		clock = max(clock, m.TS)
		for pending.Len() > 0 && pending[0].TS <= clock {
			decide(heap.Pop(&pending).(Ping).Value)
		}
		decide(m.Value)
	}
	out.Events = eng.Sweep(out.Events)
	return out, nil
}

// answers is a min-heap of the app's pings by ts.
type answers []Ping

func (h answers) Len() int           { return len(h) }
func (h answers) Less(i, j int) bool { return h[i].TS < h[j].TS }
func (h answers) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *answers) Push(x any)        { *h = append(*h, x.(Ping)) }
func (h *answers) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Behaviour is what patient id does in the scenario ("" when unknown).
func (s *Scenario) Behaviour(id string) Behaviour {
	if pt := s.patients[id]; pt != nil {
		return pt.b
	}
	return ""
}

// Episodes are the [start, end) spans (Unix ms) in which a mislocated
// phone saw only its mislocated access point (none for other patients).
func (s *Scenario) Episodes(id string) [][2]int64 {
	pt := s.patients[id]
	if pt == nil {
		return nil
	}
	var out [][2]int64
	for _, at := range pt.episodes {
		out = append(out, [2]int64{at, at + pt.dur.Milliseconds()})
	}
	return out
}

// DriftDistance is how far from home a mislocated Wi-Fi phone claims to
// be, for the demo's story.
func (s *Scenario) DriftDistance(id string) string {
	if pt := s.patients[id]; pt != nil && pt.b == WifiDrift {
		return fmt.Sprintf("%.0f m", geo.Distance(pt.home, pt.away))
	}
	return "?"
}
