// Package sim generates quarantine orders, zones and pings with ground
// truth (what a correct engine must report), and scores events against it.
// It is qfence-sim's and qfence demo's.
package sim

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/paulmach/orb"

	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/geo/synth"
	"github.com/qfence/qfence/processor"
)

// Params shape a scenario.
type Params struct {
	Seed     uint64
	Patients int
	Start    time.Time     // first ping
	Duration time.Duration // of simulated time
	Interval time.Duration // between a phone's pings
	Rules    processor.Rules
	Box      orb.Bound
	// Recur is how often a mislocated phone's access point is all it sees
	// again, at the same wrong place (0: once): every evening in a real
	// quarantine, minutes apart in the compressed demo.
	Recur time.Duration
}

// Behaviour is what a patient does in the scenario.
type Behaviour string

// The behaviours, with the share of patients that have each.
const (
	Home      Behaviour = "home"       // stays home; GPS noise and rare multipath
	ShortTrip Behaviour = "short_trip" // out for less than the dwell time: no breach
	Walk      Behaviour = "walk"       // a real breach on foot
	Drive     Behaviour = "drive"      // a real breach by car
	Clinic    Behaviour = "clinic"     // visits an allowed zone within its max_minutes
	PhoneOff  Behaviour = "phone_off"  // silent for longer than the signal timeout
	Teleport  Behaviour = "teleport"   // one fix 40 km away
	Mock      Behaviour = "mock"       // a mock location provider for a while
	// The QR-pass trips: each patient has a signed pass for a walk out.
	PassTrip    Behaviour = "pass_trip"    // back in time and within the distance: excused
	PassOverrun Behaviour = "pass_overrun" // stays out long after the pass ends: a breach under it
	PassFar     Behaviour = "pass_far"     // goes far beyond max_distance_m: a breach under it
	PassRevoked Behaviour = "pass_revoked" // the pass is revoked while out: a breach under it
	PassForged  Behaviour = "pass_forged"  // the pass's signature is forged: refused, a breach
	// WifiDrift is a phone at home whose Wi-Fi positioning (a mislocated
	// access point) puts it 150-400 m away for 10-30 minutes with a
	// confident accuracy: no accuracy test can tell it from a walk. Not a
	// breach; the check-in the breach asks for is what clears it.
	WifiDrift Behaviour = "wifi_drift"
	// WifiWalk is a mislocated phone whose owner, after its first episode,
	// really walks to the place its Wi-Fi claimed, with GNSS on: learning
	// from the first episode must not hide the walk.
	WifiWalk Behaviour = "wifi_then_walk"
	// Forger walks out for long enough to be escalated and answers every
	// check-in request while out with a forgery from a modified app, one
	// kind per forger (Forgery): none of them may count.
	Forger Behaviour = "forger"
	// SecondPhone walks out with the enrolled phone and leaves a second
	// one at home, logged in as the patient, pinging between the first's
	// pings: its inside pings must not hide the trip.
	SecondPhone Behaviour = "second_phone"
)

var mix = []struct {
	b     Behaviour
	share float64
}{{Home, 0.46}, {WifiWalk, 0.02}, {Forger, 0.02}, {SecondPhone, 0.02}, {WifiDrift, 0.05}, {ShortTrip, 0.08}, {Walk, 0.07}, {Drive, 0.03}, {Clinic, 0.05}, {PhoneOff, 0.05}, {Teleport, 0.03}, {Mock, 0.03},
	{PassTrip, 0.05}, {PassOverrun, 0.01}, {PassFar, 0.01}, {PassRevoked, 0.01}, {PassForged, 0.01}}

// Truth is one event a correct engine must emit, or (Type "pass_…") a
// fact about a pass trip the scorecard checks: pass_excused (no breach may
// come of it), pass_breach (a breach that must carry PassID), pass_forged
// (a breach that must carry no pass).
type Truth struct {
	PatientID string `json:"patient_id"`
	Type      string `json:"type"`
	At        int64  `json:"at_ms"` // when it truly began (breach: first step out)
	PassID    string `json:"pass_id,omitempty"`
	// Until ends a wifi_drift episode (Unix ms).
	Until int64 `json:"until_ms,omitempty"`
}

// Scenario is a generated world.
type Scenario struct {
	Params Params
	Orders []string // NDJSON lines
	Passes []string // NDJSON lines, signed with Key (forged ones not)
	Key    ed25519.PrivateKey
	// Verifier is the check-in verification service's key (kid
	// VerifierKID): the honest app's answers carry its statements.
	Verifier ed25519.PrivateKey
	Zones    []byte // GeoJSON
	Pings    []Ping // in delivery order
	Truth    []Truth
	Counts   map[Behaviour]int
	Bad      int // malformed messages among Pings

	patients map[string]*patient // for the app: who is where, when
}

// Ping is one message: its key and value.
type Ping struct {
	Key, Value []byte
	TS         int64
}

type patient struct {
	id    string
	home  orb.Point
	b     Behaviour
	start int64 // when the behaviour begins
	dur   time.Duration
	away  orb.Point // the destination of a trip
	// travel is how long the way there (and back) takes, at a speed a
	// person on foot or in a car really has.
	travel int64
	pass   *processor.Pass // the pass of a pass trip
	// breachAt is when a real breach truly begins (0: none).
	breachAt int64
	// episodes are when a mislocated phone's access point is all it sees
	// (each dur long); walkAt and walkDur are a WifiWalk's real walk (0:
	// none), travel each way.
	episodes        []int64
	walkAt, walkDur int64
}

// VerifierKID names the verification service's key in CheckinKeys.
const VerifierKID = "sim-verification-1"

// seedKey is a key made from the seed and a label: the same seed gives
// the same signatures.
func seedKey(seed uint64, label string) ed25519.PrivateKey {
	b := make([]byte, ed25519.SeedSize)
	binary.BigEndian.PutUint64(b, seed)
	copy(b[8:], label)
	return ed25519.NewKeyFromSeed(b)
}

// Generate builds a scenario; the same Params give the same scenario.
func Generate(p Params) *Scenario {
	r := rand.New(rand.NewPCG(p.Seed, 0x5eed))
	if p.Box == (orb.Bound{}) {
		p.Box = synth.Moscow
	}
	zones := synth.Zones(r, p.Box, 36, 60)
	s := &Scenario{Params: p, Counts: map[Behaviour]int{}, Key: seedKey(p.Seed, "qfence-sim-issuer-key-00"),
		Verifier: seedKey(p.Seed, "qfence-sim-verifier-key"), patients: map[string]*patient{}}
	var clinics []*geo.Zone
	for _, z := range zones {
		if z.Kind == geo.Allowed && z.MaxMinutes == 0 {
			clinics = append(clinics, z)
		}
	}
	s.Zones = zonesGeoJSON(zones)
	index, err := geo.ParseZones(s.Zones)
	if err != nil {
		panic("BUG: the simulator wrote zones it cannot read: " + err.Error())
	}
	// A trip meant as a breach must not end in an allowed zone: there, a
	// correct engine excuses it (the first demo found one that did).
	inAllowed := func(p orb.Point) bool { _, a := index.Lookup(p); return a != nil }
	dwell := p.Rules.BreachAfter
	patients := make([]patient, p.Patients)
	t0 := p.Start.UnixMilli()
	span := p.Duration.Milliseconds()
	for i := range patients {
		pt := &patients[i]
		pt.id = fmt.Sprintf("p-%06d", i)
		pt.home = synth.Point(r, p.Box)
		pt.b = pick(r)
		s.Counts[pt.b]++
		// Behaviours start in the first half, leaving room to finish.
		pt.start = t0 + int64(r.Float64()*0.4*float64(span)) + span/10
		switch pt.b {
		case ShortTrip:
			pt.dur = dwell / 3
			pt.away = synth.Offset(pt.home, 200+r.Float64()*300, 0)
		case Walk, Forger, SecondPhone: // jogging pace, 5 m/s
			d := 300 + r.Float64()*400
			pt.away, pt.travel = synth.Offset(pt.home, 0, d), int64(d/5*1000)
			for k := 1; inAllowed(pt.away) && k < 8; k++ {
				pt.away = synth.Offset(pt.home, d*math.Sin(float64(k)), d*math.Cos(float64(k)))
			}
			pt.dur = 2*dwell + time.Duration(r.Float64()*float64(dwell)) + 2*time.Duration(pt.travel)*time.Millisecond
			if pt.b != Walk { // out until well after the escalation is due
				pt.dur += p.Rules.EscalateAfter + dwell
			}
		case Drive: // city traffic, 15 m/s
			d := 1500 + r.Float64()*2500
			pt.away, pt.travel = synth.Offset(pt.home, d, 0), int64(d/15*1000)
			for k := 1; inAllowed(pt.away) && k < 8; k++ {
				pt.away = synth.Offset(pt.home, d*math.Cos(float64(k)), d*math.Sin(float64(k)))
			}
			pt.dur = 2*dwell + time.Duration(r.Float64()*float64(dwell)) + 2*time.Duration(pt.travel)*time.Millisecond
		case Clinic: // lives 250 m from a clinic and walks there
			c := clinics[r.IntN(len(clinics))]
			pt.away = c.Bound().Center()
			pt.home = synth.Offset(pt.away, -250, 0)
			pt.travel = 250 / 5 * 1000
			pt.dur = 2*dwell + 2*time.Duration(pt.travel)*time.Millisecond
		case PassTrip, PassOverrun, PassFar, PassRevoked, PassForged:
			s.passTrip(r, pt, p, inAllowed)
		case PhoneOff:
			pt.dur = p.Rules.SignalTimeout + 3*p.Interval
		case WifiDrift, WifiWalk:
			d := 150 + r.Float64()*250
			pt.away = synth.Offset(pt.home, d*math.Cos(float64(i)), d*math.Sin(float64(i)))
			for k := 1; pt.b == WifiWalk && inAllowed(pt.away) && k < 8; k++ { // the walk there must be a breach
				pt.away = synth.Offset(pt.home, d*math.Cos(float64(i+k)), d*math.Sin(float64(i+k)))
			}
			pt.dur = 10*time.Minute + time.Duration(r.Float64()*float64(20*time.Minute))
			s.mislocated(r, pt, p, d)
		case Mock:
			pt.dur = 3 * p.Interval
		}
		s.Orders = append(s.Orders, fmt.Sprintf(`{"patient_id":%q,"home":{"lat":%.6f,"lon":%.6f},"radius_m":50,"starts_at":%q,"device_id":%q}`,
			pt.id, pt.home[1], pt.home[0], p.Start.Add(-24*time.Hour).UTC().Format(time.RFC3339), pt.device()))
	}
	// Pings, phone by phone, then in time order (with some delivered late).
	for i := range patients {
		s.pingsOf(r, &patients[i], p)
		s.patients[patients[i].id] = &patients[i]
	}
	sort.SliceStable(s.Pings, func(a, b int) bool { return s.Pings[a].TS < s.Pings[b].TS })
	// Late deliveries and duplicates: 0.5 % of pings come again 1-3 minutes
	// later; 0.1 % of messages are broken.
	var out []Ping
	var late []Ping
	for _, pg := range s.Pings {
		for len(late) > 0 && late[0].TS <= pg.TS {
			out = append(out, late[0])
			late = late[1:]
		}
		out = append(out, Ping{Key: pg.Key, Value: pg.Value, TS: pg.TS})
		if r.IntN(200) == 0 {
			late = append(late, Ping{Key: pg.Key, Value: pg.Value, TS: pg.TS + int64(60_000+r.IntN(120_000))})
			sort.Slice(late, func(a, b int) bool { return late[a].TS < late[b].TS })
		}
		if r.IntN(1000) == 0 {
			out = append(out, Ping{Key: []byte("broken"), Value: []byte(`{"patient_id":"p-1","ts":`), TS: pg.TS})
			s.Bad++
		}
	}
	s.Pings = append(out, late...)
	sort.Slice(s.Truth, func(a, b int) bool { return s.Truth[a].At < s.Truth[b].At })
	return s
}

func pick(r *rand.Rand) Behaviour {
	x := r.Float64()
	for _, m := range mix {
		if x < m.share {
			return m.b
		}
		x -= m.share
	}
	return Home
}

// pingsOf lays out one phone's pings and records the truth they imply.
func (s *Scenario) pingsOf(r *rand.Rand, pt *patient, p Params) {
	t0, end := p.Start.UnixMilli(), p.Start.Add(p.Duration).UnixMilli()
	step := p.Interval.Milliseconds()
	phase := r.Int64N(step)
	mockLeft := 0
	teleported := false
	for ts := t0 + phase; ts < end; ts += step + r.Int64N(step/5) - step/10 {
		pos, acc := pt.home, 5+r.Float64()*30
		// A phone reports accuracy as a 68 % radius: the error is normal with
		// that spread per axis, plus a rare multipath error far beyond it.
		e, n := r.NormFloat64()*acc/1.5, r.NormFloat64()*acc/1.5
		if r.IntN(400) == 0 {
			e, n = 120+r.Float64()*60, 0
		}
		in := ts >= pt.start && ts < pt.start+pt.dur.Milliseconds()
		mock := false
		source := "gps"
		switch pt.b {
		case WifiDrift, WifiWalk:
			switch {
			case pt.drifting(ts): // the access point's wrong place, steadily, and confidently
				pos, acc, source = pt.away, 8+r.Float64()*12, "wifi"
				e, n = r.NormFloat64()*acc/3, r.NormFloat64()*acc/3
			case pt.walking(ts):
				pos = pt.walkPos(ts)
			}
		case ShortTrip, Walk, Drive, Clinic, Forger, SecondPhone, PassTrip, PassOverrun, PassFar, PassRevoked, PassForged:
			if in {
				pos = along(pt, ts)
				if pt.b == Clinic {
					e, n = e/4, n/4 // a clear indoor fix near a window
				}
			}
		case PhoneOff:
			if in {
				continue
			}
		case Teleport:
			if !teleported && ts >= pt.start {
				teleported = true
				pos = synth.Offset(pt.home, 40000, 0)
				s.Truth = append(s.Truth, Truth{pt.id, "implausible_location", ts, "", 0})
			}
		case Mock:
			if ts >= pt.start && mockLeft == 0 && !teleported {
				teleported, mockLeft = true, 3
				s.Truth = append(s.Truth, Truth{pt.id, "implausible_location", ts, "", 0})
			}
			if mockLeft > 0 {
				mock = true
				mockLeft--
			}
		}
		pos = synth.Offset(pos, e, n)
		v := fmt.Sprintf(`{"patient_id":%q,"ts":%q,"lat":%.6f,"lon":%.6f,"accuracy_m":%.0f,"device_id":%q,"source":%q`,
			pt.id, time.UnixMilli(ts).UTC().Format("2006-01-02T15:04:05.000Z"), pos[1], pos[0], math.Round(acc), pt.device(), source)
		if mock {
			v += `,"mock":true`
		}
		s.Pings = append(s.Pings, Ping{Key: []byte(pt.id), Value: []byte(v + "}"), TS: ts})
		if pt.b == SecondPhone && in { // the phone left at home, half an interval later
			at := ts + step/2
			home := synth.Offset(pt.home, r.NormFloat64()*3, r.NormFloat64()*3)
			v := fmt.Sprintf(`{"patient_id":%q,"ts":%q,"lat":%.6f,"lon":%.6f,"accuracy_m":8,"device_id":"other-%s","source":"gps"}`,
				pt.id, time.UnixMilli(at).UTC().Format("2006-01-02T15:04:05.000Z"), home[1], home[0], pt.id[2:])
			s.Pings = append(s.Pings, Ping{Key: []byte(pt.id), Value: []byte(v), TS: at})
		}
	}
	switch pt.b {
	case Forger, SecondPhone:
		s.Truth = append(s.Truth, Truth{pt.id, string(pt.b), pt.start, "", 0})
		fallthrough
	case Walk, Drive:
		pt.breachAt = pt.start + pt.travel/4
		s.Truth = append(s.Truth, Truth{pt.id, "breach_started", pt.breachAt, "", 0})
	case PhoneOff:
		s.Truth = append(s.Truth, Truth{pt.id, "signal_lost", pt.start, "", 0})
	case WifiDrift, WifiWalk:
		for _, at := range pt.episodes {
			s.Truth = append(s.Truth, Truth{PatientID: pt.id, Type: "wifi_drift", At: at, Until: at + pt.dur.Milliseconds()})
		}
		if pt.walkAt != 0 {
			pt.breachAt = pt.walkAt + pt.travel/2
			s.Truth = append(s.Truth, Truth{PatientID: pt.id, Type: "breach_started", At: pt.breachAt},
				Truth{PatientID: pt.id, Type: "walk_to_learned", At: pt.walkAt})
			s.escalationTruthOf(pt, p, pt.walkAt, pt.walkDur)
		}
		return
	}
	s.escalationTruth(pt, p)
}

// mislocated plans a mislocated phone's episodes (every Recur, at the
// same wrong place, each at most two thirds of Recur) and, for a WifiWalk,
// the real walk there after the first: at a jogger's pace (3 m/s),
// staying the dwell time and three ping intervals (a breach for certain),
// when it fits.
func (s *Scenario) mislocated(r *rand.Rand, pt *patient, p Params, d float64) {
	end := p.Start.Add(p.Duration).UnixMilli()
	if p.Recur > 0 {
		pt.dur = min(pt.dur, p.Recur*2/3)
	}
	pt.episodes = []int64{pt.start}
	dwell := p.Rules.BreachAfter.Milliseconds()
	if pt.b == WifiWalk {
		pt.travel = int64(d / 3 * 1000)
		at := pt.start + pt.dur.Milliseconds() + max(p.Recur.Milliseconds()/2, dwell/2)
		if dur := 2*pt.travel + dwell + 3*p.Interval.Milliseconds(); at+dur < end {
			pt.walkAt, pt.walkDur = at, dur
		}
		return
	}
	for k := int64(1); p.Recur > 0; k++ {
		at := pt.start + k*p.Recur.Milliseconds() + r.Int64N(p.Recur.Milliseconds()/10+1)
		if at+pt.dur.Milliseconds() >= end {
			break
		}
		pt.episodes = append(pt.episodes, at)
	}
}

// drifting says whether the phone sees only its mislocated access point at ts.
func (pt *patient) drifting(ts int64) bool {
	for _, at := range pt.episodes {
		if ts >= at && ts < at+pt.dur.Milliseconds() {
			return true
		}
	}
	return false
}

func (pt *patient) walking(ts int64) bool {
	return pt.walkAt != 0 && ts >= pt.walkAt && ts < pt.walkAt+pt.walkDur
}

// walkPos is where a WifiWalk is on its walk at ts.
func (pt *patient) walkPos(ts int64) orb.Point {
	el := ts - pt.walkAt
	f := 1.0
	switch {
	case el < pt.travel:
		f = float64(el) / float64(pt.travel)
	case el > pt.walkDur-pt.travel:
		f = float64(pt.walkDur-el) / float64(pt.travel)
	}
	return orb.Point{pt.home[0] + (pt.away[0]-pt.home[0])*f, pt.home[1] + (pt.away[1]-pt.home[1])*f}
}

// escalationTruth says whether a real breach must escalate: when the
// patient is still out escalate_after after the breach is confirmed. A
// breach that ends within two ping intervals of that instant either way
// may go both ways and is not scored.
func (s *Scenario) escalationTruth(pt *patient, p Params) {
	s.escalationTruthOf(pt, p, pt.start, pt.dur.Milliseconds())
}

// escalationTruthOf is escalationTruth for a trip from start, dur long.
func (s *Scenario) escalationTruthOf(pt *patient, p Params, start, dur int64) {
	at := pt.breachAt
	if at == 0 {
		return
	}
	d := geo.Distance(pt.home, pt.away)
	back := start + dur // home again, within r + m on the way back
	if d > 0 {
		back -= int64(float64(pt.travel) * 75 / d)
	}
	due := at + p.Rules.BreachAfter.Milliseconds() + p.Rules.EscalateAfter.Milliseconds()
	slack := 2 * p.Interval.Milliseconds()
	switch {
	case back > due+slack:
		s.Truth = append(s.Truth, Truth{pt.id, "breach_escalated", due, "", 0})
	case back >= due-slack:
		s.Truth = append(s.Truth, Truth{pt.id, "escalation_unsure", due, "", 0})
	}
}

// passTrip plans a walk out under a pass, writes the pass and records
// what a correct engine must make of it.
func (s *Scenario) passTrip(r *rand.Rand, pt *patient, p Params, inAllowed func(orb.Point) bool) {
	dwell := p.Rules.BreachAfter
	d := 300 + r.Float64()*300
	if pt.b == PassFar {
		d = 1500 + r.Float64()*1000
	}
	pt.away, pt.travel = synth.Offset(pt.home, d, 0), int64(d/5*1000)
	for k := 1; inAllowed(pt.away) && k < 8; k++ {
		pt.away = synth.Offset(pt.home, d*math.Cos(float64(k)), d*math.Sin(float64(k)))
	}
	pt.dur = 2*dwell + 2*time.Duration(pt.travel)*time.Millisecond
	end := pt.start + pt.dur.Milliseconds()
	purposes := []processor.Purpose{processor.Grocery, processor.Pharmacy, processor.Medical, processor.Trash, processor.Pet, processor.Work, processor.Other}
	pass := &processor.Pass{ID: "PX-" + pt.id[2:], PatientID: pt.id, Purpose: purposes[r.IntN(len(purposes))],
		ValidFrom: pt.start - 60_000, ValidTo: end + 5*60_000, MaxDistanceM: 1000}
	switch pt.b {
	case PassTrip, PassForged:
		s.Truth = append(s.Truth, Truth{pt.id, "pass_excused", pt.start, pass.ID, 0})
	case PassOverrun: // the pass ends early in the stay; the breach counts from then
		pass.ValidTo = pt.start + pt.travel + dwell.Milliseconds()/2
		pt.dur += 2 * dwell
		s.Truth = append(s.Truth, Truth{pt.id, "breach_started", pass.ValidTo, "", 0}, Truth{pt.id, "pass_breach", pass.ValidTo, pass.ID, 0})
		pt.breachAt = pass.ValidTo
	case PassFar: // the breach begins where the walk passes max_distance_m + margin
		at := pt.start + int64(float64(pt.travel)*(pass.MaxDistanceM+p.Rules.MarginM+60)/d)
		s.Truth = append(s.Truth, Truth{pt.id, "breach_started", at, "", 0}, Truth{pt.id, "pass_breach", at, pass.ID, 0})
		pt.breachAt = at
	case PassRevoked: // revoked once the patient is there
		pass.RevokedAt = pt.start + pt.travel + 30_000
		pt.dur += 2 * dwell
		s.Truth = append(s.Truth, Truth{pt.id, "breach_started", pass.RevokedAt, "", 0}, Truth{pt.id, "pass_breach", pass.RevokedAt, pass.ID, 0})
		pt.breachAt = pass.RevokedAt
	}
	if pt.b == PassForged { // refused: the trip is a breach, under no pass
		s.Truth[len(s.Truth)-1].Type = "pass_forged"
		pt.dur += dwell
		pt.breachAt = pt.start + pt.travel/4
		s.Truth = append(s.Truth, Truth{pt.id, "breach_started", pt.breachAt, "", 0})
	}
	pass.IssuedAt = pass.ValidFrom - 30*60_000
	if pt.b == PassRevoked { // the original, its revocation, then the original re-sent: stale
		orig := *pass
		orig.RevokedAt = 0
		pass.IssuedAt = pass.RevokedAt
		s.Passes = append(s.Passes, s.passLine(&orig, false), s.passLine(pass, false), s.passLine(&orig, false))
	} else {
		s.Passes = append(s.Passes, s.passLine(pass, pt.b == PassForged))
	}
	pt.pass = pass
}

// device is the enrolled phone's device_id.
func (pt *patient) device() string { return "dev-" + pt.id[2:] }

// CheckinKeys is the verification service's public key as a JWKS
// document: checkins.verify_keys_file.
func (s *Scenario) CheckinKeys() []byte {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: s.Verifier.Public(), KeyID: VerifierKID, Algorithm: string(jose.EdDSA), Use: "sig"}}}
	out, err := json.Marshal(set)
	if err != nil {
		panic("BUG: a JWKS of one Ed25519 key does not marshal: " + err.Error())
	}
	return out
}

// Attestation is the verifier of check-ins against CheckinKeys, audience
// qfence, at integrity min: the engine's side of the simulated service.
func (s *Scenario) Attestation(min processor.Integrity) *processor.Attestation {
	keys, err := processor.ParseKeySet(s.CheckinKeys())
	if err != nil {
		panic("BUG: the simulator's JWKS does not parse: " + err.Error())
	}
	return processor.NewAttestation(keys, "qfence", min)
}

// passLine is the pass as the issuer publishes it, signed (contract 1.4),
// or with a forged signature.
func (s *Scenario) passLine(pass *processor.Pass, forged bool) string {
	sig := ed25519.Sign(s.Key, processor.SigningMessage(pass))
	if forged {
		sig[len(sig)/2] ^= 0x40
	}
	line := fmt.Sprintf(`{"pass_id":%q,"patient_id":%q,"purpose":%q,"valid_from":%q,"valid_to":%q,"max_distance_m":%g`,
		pass.ID, pass.PatientID, pass.Purpose, processor.FormatTS(pass.ValidFrom), processor.FormatTS(pass.ValidTo), pass.MaxDistanceM)
	if pass.RevokedAt != 0 {
		line += fmt.Sprintf(`,"revoked_at":%q`, processor.FormatTS(pass.RevokedAt))
	}
	return line + fmt.Sprintf(`,"issued_at":%q,"signature":%q}`, processor.FormatTS(pass.IssuedAt), base64.StdEncoding.EncodeToString(sig))
}

// PublicKey is the simulator issuer's public key, base64, as a line of
// passes.verify_keys_file.
func (s *Scenario) PublicKey() string {
	return base64.StdEncoding.EncodeToString(s.Key.Public().(ed25519.PublicKey))
}

// along is where a travelling patient is at ts: on the straight way out,
// at the destination, or on the way back.
func along(pt *patient, ts int64) orb.Point {
	el, dur := ts-pt.start, pt.dur.Milliseconds()
	f := 1.0
	switch {
	case pt.travel == 0:
	case el < pt.travel:
		f = float64(el) / float64(pt.travel)
	case el > dur-pt.travel:
		f = float64(dur-el) / float64(pt.travel)
	}
	return orb.Point{pt.home[0] + (pt.away[0]-pt.home[0])*f, pt.home[1] + (pt.away[1]-pt.home[1])*f}
}

func zonesGeoJSON(zs []*geo.Zone) []byte {
	type feature struct {
		Type       string         `json:"type"`
		Properties map[string]any `json:"properties"`
		Geometry   map[string]any `json:"geometry"`
	}
	fc := struct {
		Type     string    `json:"type"`
		Features []feature `json:"features"`
	}{Type: "FeatureCollection"}
	for _, z := range zs {
		props := map[string]any{"id": z.ID, "kind": z.Kind.String()}
		if z.MaxMinutes > 0 {
			props["max_minutes"] = z.MaxMinutes
		}
		b := z.Bound()
		ring := [][2]float64{{b.Min[0], b.Min[1]}, {b.Max[0], b.Min[1]}, {b.Max[0], b.Max[1]}, {b.Min[0], b.Max[1]}, {b.Min[0], b.Min[1]}}
		fc.Features = append(fc.Features, feature{"Feature", props, map[string]any{"type": "Polygon", "coordinates": [][][2]float64{ring}}})
	}
	out, _ := json.Marshal(fc)
	return out
}
