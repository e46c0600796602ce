package processor

import (
	"github.com/paulmach/orb"

	"github.com/qfence/qfence/geo"
)

// Outcome is what became of a valid ping (the qfence_pings_total outcomes
// other than rejected).
type Outcome uint8

// Outcomes.
const (
	Accepted Outcome = iota + 1
	NoOrder
	Late
	Duplicate
)

var outcomeNames = [...]string{"", "accepted", "no_order", "late", "duplicate"}

func (o Outcome) String() string { return outcomeNames[o] }

// Flag marks a stored ping that did not move the breach state: the one
// reason of the pings table's `flag` column.
type Flag uint8

// Flags of a stored ping.
const (
	FlagNone Flag = iota
	FlagLate
	FlagSpeed
	FlagMock
	// FlagForeign: the ping came from a phone other than the enrolled one
	// (contract 2.3). It has no value in the older `flag` column.
	FlagForeign
	// FlagKnownMislocation: a network fix inside a known mislocation
	// (contract 2.4), uncertain instead of outside.
	FlagKnownMislocation
)

var flagNames = [...]string{"", "late", "speed", "mock_provider", "foreign_device", "known_mislocation"}

// Flags lists every flag but FlagNone, for the sinks' tables.
var Flags = []Flag{FlagLate, FlagSpeed, FlagMock, FlagForeign, FlagKnownMislocation}

func (f Flag) String() string { return flagNames[f] }

// SourceClass is what a fix's reported source says of it (contract 2.3).
type SourceClass uint8

// The source classes. The Enum8 values of the pings table are these.
const (
	SourceUnknown SourceClass = iota
	SourceGNSS
	SourceNetwork
)

var sourceNames = [...]string{"unknown", "gnss", "network"}

func (c SourceClass) String() string { return sourceNames[c] }

// ClassOf reads a ping's source case-insensitively: gps, gnss and
// fused-gps are GNSS fixes; network, wifi, cell, ip and fused-network are
// network fixes; anything else, or none, is unknown.
func ClassOf(source []byte) SourceClass {
	if len(source) == 0 || len(source) > len("fused-network") {
		return SourceUnknown
	}
	var buf [len("fused-network")]byte
	for i, c := range source {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	switch string(buf[:len(source)]) {
	case "gps", "gnss", "fused-gps":
		return SourceGNSS
	case "network", "wifi", "cell", "ip", "fused-network":
		return SourceNetwork
	}
	return SourceUnknown
}

// Track is one stored ping: the row for the pings table. DeviceID and Source
// alias the ping's message (see Ping).
type Track struct {
	PatientID string
	Evidence
	DeviceID, Source []byte
	District, Zone   string
	InBreach         bool
	Mock             bool
	Flag             Flag
	// PassID is the pass that excused the ping ("" when none did).
	PassID string
	// Checkin is the ping's check-in, its RequestID the request it
	// answered (or, when it answered none, the one it named).
	Checkin Checkin
}

// Step decides one ping of a patient whose order o is active at the ping's
// ts. It is the whole decision and a pure function: it reads the ping, the
// order, the zones and the rules, updates st in place, appends the events it
// decides to ev, and returns them with the ping's outcome and its row (the
// row is meaningful unless the outcome is Duplicate). It allocates only for
// events and for a patient's first episode.
//
// passes is the table of QR passes (nil: none), linked to the order book
// (Engine.UsePasses): a ping that is outside reads the patient's passes
// off its order, and a ping at home never looks.
//
// It reads top to bottom as the decision's stages, each a small function:
// classify (classify, place, visit, excuse, underPass: inside, outside,
// excused or uncertain), admit (foreign, duplicate, late, implausibleFix:
// what a ping may not move), due (gap here; what time alone made due, the
// escalations, expiries and random asks, Engine.Process runs before Step
// as State.due), answer (checkin) and breach (the state machine).
func Step(st *State, p *Ping, o *Order, zones *geo.Zones, passes *PassBook, r *Rules, ev []Event) ([]Event, Outcome, Track) {
	// classify: where the fix is, its accuracy counted honestly. (The
	// stages below are called only when they have something to do: a call
	// each on every ping at home cost 137 instructions, +9 %, callgrind.)
	pt := orb.Point{p.Lon, p.Lat}
	d := geo.Distance(o.Home, pt)
	f := fix{pt: pt, d: d, cur: Evidence{TS: p.TS, Lat: p.Lat, Lon: p.Lon, Accuracy: float32(p.Accuracy), Distance: float32(d),
		State: classify(d, p.Accuracy, o, r)}}
	// admit: only the enrolled phone decides.
	if !o.Enrolled(p.DeviceID) {
		return foreign(st, p, o, f.cur, ev)
	}
	t := track(p, o)
	// classify: the zones and the patient's passes, only for a fix away
	// from home (a ping at home never queries them).
	if f.cur.State != Inside {
		f.place(zones, passes, o, &t)
	}
	// admit: a repeat changes nothing; a late ping is stored and moves
	// nothing.
	switch {
	case p.TS == st.Last.TS:
		return ev, Duplicate, t
	case p.TS < st.Last.TS:
		f.late(p, r, &t)
		if f.cur.State == Outside && st.ep != nil && st.ep.mis != nil && ClassOf(p.Source) == SourceNetwork &&
			st.ep.mis.circle(o, p.TS, f.pt) >= 0 {
			f.cur.State = Uncertain // judged by the circles; a late fix moves none of them
		}
		t.Evidence, t.InBreach, t.Flag = f.cur, st.InBreach(), FlagLate
		return ev, Late, t
	}
	st.order = o
	st.flags &^= flagForeign // the enrolled phone is back: the episode ends silently
	// due: what a gap in the signal brought.
	if st.Last.TS != 0 && (st.flags&flagSignalLost != 0 || p.TS > st.Last.TS+r.SignalTimeout.Milliseconds()) {
		ev = st.gap(p, o, f.cur, r, ev)
	}
	// admit: a fix no one could make is stored and moves nothing.
	ref := st.ref()
	if flag := implausible(ref, p, f.pt, r); flag != FlagNone {
		return st.implausibleFix(p, o, r, &f, ref, flag, t, ev)
	}
	st.flags &^= flagImplausible
	// classify: time in an allowed zone, then a pass.
	if f.cur.State == Outside || st.ep != nil {
		st.visit(p, &f)
	}
	if f.cur.State == Outside {
		f.excuse(p, r, &t)
		// classify: a network fix where this phone was proved wrong before.
		if f.cur.State == Outside && st.ep != nil && st.ep.mis != nil && ClassOf(p.Source) == SourceNetwork &&
			st.mislocated(p, o, &f, r) {
			t.Flag = FlagKnownMislocation
		}
		st.underPass(p, r, &f)
	}
	// answer: the check-in, and what a counted one teaches.
	checkedIn := false
	if p.Checkin.Present {
		ev, checkedIn, t.Checkin = st.checkin(p, o, f.cur, r, ev)
		if t.Checkin.Counted && r.Mislocation.TTL > 0 {
			ev = st.learn(p, o, f.cur, r, ev)
		}
	}
	// breach: the state machine, and the run's fixes kept to learn from.
	if f.cur.State == Outside && r.Mislocation.TTL > 0 {
		st.noteOutside(p, f.cur)
	}
	network := f.cur.State == Outside && ClassOf(p.Source) == SourceNetwork
	ev = breach(st, f.cur, network, o, r, t.Zone, checkedIn, ev)
	st.Last = f.cur
	st.flags &^= flagRefAside
	if st.ep != nil {
		st.ep.Ref = Evidence{}
	}
	st.tidy()
	t.Evidence, t.InBreach = f.cur, st.InBreach()
	return ev, Accepted, t
}

// fix is a ping's fix as the decision sees it: where it is (pt, d from
// home), its verdict so far, and, away from home, the allowed zone it is
// in and the patient's passes.
type fix struct {
	cur     Evidence
	pt      orb.Point
	d       float64
	allowed *geo.Zone
	mine    []*Pass
}

// place looks a fix away from home (not inside) up in the zones (its district and
// allowed zone, on the row) and, outside, takes the patient's passes. A
// ping at home is in the home's district and needs no allowed zone, so the
// common case never queries the zones (BENCHMARKS.md: the lookup is most
// of a ping's cost at 5k zones).
func (f *fix) place(zones *geo.Zones, passes *PassBook, o *Order, t *Track) {
	var district *geo.Zone
	district, f.allowed = zones.Lookup(f.pt)
	t.District, t.Zone = zoneID(district), zoneID(f.allowed)
	if f.cur.State == Outside && passes != nil {
		f.mine = o.Passes() // the pass book keeps them on the order
	}
}

// excuse: a pass of this patient that covers the fix excuses it, wherever
// it is (when not in an allowed zone already).
func (f *fix) excuse(p *Ping, r *Rules, t *Track) {
	if f.cur.State == Outside && f.allowed == nil {
		if pass := covering(f.mine, p.TS, f.d, p.Accuracy, r.MarginM); pass != nil {
			f.cur.State, t.PassID = Excused, pass.ID
		}
	}
}

// late judges a late fix without the visit clock, which belongs to the
// in-order pings: an allowed zone or a pass excuses it.
func (f *fix) late(p *Ping, r *Rules, t *Track) {
	if f.cur.State == Outside && f.allowed != nil {
		f.cur.State = Excused
	}
	f.excuse(p, r, t)
}

// gap is a gap in the signal: longer than the timeout, it is a loss,
// whether or not a sweep noticed it first; the ping that ends it restores
// the signal.
func (st *State) gap(p *Ping, o *Order, cur Evidence, r *Rules, ev []Event) []Event {
	if st.Last.TS == 0 {
		return ev
	}
	deadline := st.Last.TS + r.SignalTimeout.Milliseconds()
	if st.flags&flagSignalLost == 0 && p.TS > deadline && deadline >= o.StartsAt {
		ev = signalLost(st, o, r, ev)
		ev = st.expire(o, p.TS, ev) // the request may have run out already
	}
	if st.flags&flagSignalLost != 0 {
		st.flags &^= flagSignalLost
		e := newEvent(SignalRestored, o, p.TS, st.Last.TS, cur)
		e.EndedAt = p.TS
		e.DurationS = (p.TS - st.Last.TS) / 1000
		e.Evidence = []Evidence{st.Last, cur}
		ev = append(ev, e)
	}
	return ev
}

// implausibleFix is the decision on a fix no one could make (too fast
// from the last plausible one, or a mock provider): stored, flagged, the
// first of a run an implausible_location event; it moves no breach and is
// no speed reference; a check-in it carries answers but proves no
// presence.
func (st *State) implausibleFix(p *Ping, o *Order, r *Rules, f *fix, ref Evidence, flag Flag, t Track, ev []Event) ([]Event, Outcome, Track) {
	f.late(p, r, &t) // judged like a late fix: zones and passes, no visit clock
	if p.Checkin.Present {
		ev, _, t.Checkin = st.checkin(p, o, f.cur, r, ev)
	}
	if st.flags&flagImplausible == 0 {
		st.flags |= flagImplausible
		e := newEvent(ImplausibleLocation, o, p.TS, p.TS, f.cur)
		e.Reason = flag.String()
		e.Zone = t.Zone
		if flag == FlagSpeed {
			e.Evidence = []Evidence{ref, f.cur}
		} else {
			e.Evidence = []Evidence{f.cur}
		}
		ev = append(ev, e)
	}
	if st.flags&flagRefAside == 0 {
		st.episode().Ref = ref
		st.flags |= flagRefAside
	}
	st.Last = f.cur
	t.Evidence, t.InBreach, t.Flag = f.cur, st.InBreach(), flag
	return ev, Accepted, t
}

// visit runs the allowed zones' clock: time in one is excused until its
// max_minutes. The clock runs over consecutive outside fixes in the same
// zone; a fix at home or outside the zone ends the visit, an uncertain one
// leaves it be.
func (st *State) visit(p *Ping, f *fix) {
	switch {
	case f.cur.State == Outside && f.allowed != nil:
		if st.ep == nil || st.ep.VisitZone != f.allowed.ID {
			ep := st.episode()
			ep.VisitZone, ep.VisitStart = f.allowed.ID, p.TS
		}
		if f.allowed.MaxMinutes == 0 || float64(p.TS-st.ep.VisitStart) <= f.allowed.MaxMinutes*60000 {
			f.cur.State = Excused
		}
	case f.cur.State != Uncertain && st.ep != nil:
		st.ep.VisitZone, st.ep.VisitStart = "", 0
	}
}

// underPass: a run that begins now begins under a pass when one was valid
// at this fix (the trip went beyond its distance) or excused the fix
// before (the trip outlasted it); the latest valid_to wins.
func (st *State) underPass(p *Ping, r *Rules, f *fix) {
	if f.cur.State == Outside && len(f.mine) > 0 && (st.ep == nil || (st.ep.RunCount == 0 && st.ep.BreachStart == 0)) {
		if pass := runPass(f.mine, p.TS, st.Last, r.MarginM); pass != nil {
			st.episode().Pass = &PassRef{ID: pass.ID, Purpose: pass.Purpose, ValidTo: pass.ValidTo}
		}
	}
}

// track is ping p's row before it is judged.
func track(p *Ping, o *Order) Track {
	return Track{PatientID: o.PatientID, DeviceID: p.DeviceID, Source: p.Source, District: o.District, Mock: p.Mock, Checkin: p.Checkin}
}

// checkin judges the check-in of ping p: one that does not count gives
// checkin_rejected; one that counts answers the oldest open request (or
// the one it names). It reports whether the check-in proves the patient
// at home, which ends a breach, and returns the check-in as the row
// stores it; the ping itself is judged like any other. A function that
// returns the row's part, not a closure in Step that writes the row: a
// row whose address is taken is built in memory on every ping at home.
func (st *State) checkin(p *Ping, o *Order, cur Evidence, r *Rules, ev []Event) ([]Event, bool, Checkin) {
	c := p.Checkin
	if why := r.Checkins.judge(p); why != CheckinCounted {
		return st.rejectCheckin(o, p, why, cur, ev), false, c
	}
	c.Counted = true
	q, found, ev := st.answer(o, &p.Checkin, cur, r, ev)
	if found {
		c.RequestID, c.HasRequestID = q.ID, true
	}
	// A check-in naming a request that is not open answers nothing and
	// ends nothing (contract 2.2).
	return ev, p.Checkin.Verified && cur.State == Inside && (found || !p.Checkin.HasRequestID), c
}

// foreign is the whole decision on a ping of a phone that is not the
// enrolled one (contract 2.3): stored as uncertain, flagged, deciding
// nothing; the first of an episode gives device_mismatch. It moves no
// reference (Last stays the enrolled phone's), so it restores no signal
// either. Not inlined: the common path should not pay for its frame.
//
//go:noinline
func foreign(st *State, p *Ping, o *Order, cur Evidence, ev []Event) ([]Event, Outcome, Track) {
	cur.State = Uncertain
	t := track(p, o)
	t.Evidence, t.InBreach, t.Flag = cur, st.InBreach(), FlagForeign
	if st.flags&flagForeign == 0 && p.TS >= st.Last.TS {
		st.flags |= flagForeign
		e := newEvent(DeviceMismatch, o, p.TS, p.TS, cur)
		e.Device = &DeviceSeen{Enrolled: o.DeviceID(), Seen: string(p.DeviceID), SeenSet: p.DeviceID != nil}
		e.Evidence = []Evidence{cur}
		ev = append(ev, e)
	}
	return ev, Accepted, t
}

// covering is the pass that covers a ping (the one valid longest when
// several do), or nil.
func covering(passes []*Pass, ts int64, d, a, m float64) *Pass {
	var best *Pass
	for _, p := range passes {
		if p.Covers(ts, d, a, m) && (best == nil || p.ValidTo > best.ValidTo) {
			best = p
		}
	}
	return best
}

// runPass is the pass an outside run beginning at ts is taken under: one
// valid by time at ts, or one that covered the ping before (last).
func runPass(passes []*Pass, ts int64, last Evidence, m float64) *Pass {
	var best *Pass
	for _, p := range passes {
		under := p.CoversTime(ts) ||
			(last.State == Excused && p.Covers(last.TS, float64(last.Distance), float64(last.Accuracy), m))
		if under && (best == nil || p.ValidTo > best.ValidTo) {
			best = p
		}
	}
	return best
}

// classify is the geometry of section 2, before allowed zones are applied.
// Boundaries: d == r+m is inside; d-a == r+m is not confidently outside;
// a == max_accuracy_m is still judged.
func classify(d, a float64, o *Order, r *Rules) PingState {
	limit := o.RadiusM + r.MarginM
	switch {
	case a > r.MaxAccuracyM:
		return Uncertain
	case d <= limit:
		return Inside
	case d-a > limit:
		return Outside
	}
	return Uncertain
}

// implausible checks the ping against the last plausible one. The implied
// speed gives the benefit of the doubt to both fixes' reported accuracy:
// only the distance beyond the two accuracy radii counts.
func implausible(ref Evidence, p *Ping, pt orb.Point, r *Rules) Flag {
	if p.Mock {
		return FlagMock
	}
	if ref.TS == 0 {
		return FlagNone
	}
	limit := r.MaxSpeedMps*float64(p.TS-ref.TS)/1000 + float64(ref.Accuracy) + p.Accuracy
	// Most pings are metres from the last one: a bound that cannot be below
	// the great-circle distance settles them without the trigonometry.
	if geo.DistanceBound(orb.Point{ref.Lon, ref.Lat}, pt) <= limit {
		return FlagNone
	}
	moved := geo.Distance(orb.Point{ref.Lon, ref.Lat}, pt) - float64(ref.Accuracy) - p.Accuracy
	if moved > r.MaxSpeedMps*float64(p.TS-ref.TS)/1000 {
		return FlagSpeed
	}
	return FlagNone
}

// breach runs the dwell-and-hysteresis machine for one plausible ping.
// checkedIn says the ping is a verified check-in at home, which ends an
// open breach by itself; network that it is an outside network fix.
func breach(st *State, cur Evidence, network bool, o *Order, r *Rules, zone string, checkedIn bool, ev []Event) []Event {
	ep := st.ep
	if ep == nil || ep.BreachStart == 0 {
		switch cur.State {
		case Inside, Excused:
			if ep != nil {
				ep.resetRun()
			}
		case Outside:
			ep = st.episode()
			margin := cur.Distance - cur.Accuracy - float32(o.RadiusM+r.MarginM)
			if ep.RunCount == 0 {
				ep.RunStart, ep.MinMargin = cur.TS, margin
			}
			ep.MinMargin = min(ep.MinMargin, margin)
			ep.RunCount++
			if network {
				ep.RunNetwork++
			}
			ep.MaxDist = max(ep.MaxDist, cur.Distance)
			ep.Evidence = addEvidence(ep.Evidence, cur, r.MaxEvidence)
			if int(ep.RunCount) >= r.BreachMinPings && cur.TS-ep.RunStart >= r.BreachAfter.Milliseconds() {
				ep.Conf = &Confidence{OutsidePings: ep.RunCount, NetworkPings: ep.RunNetwork, MinMarginM: ep.MinMargin, DwellS: (cur.TS - ep.RunStart) / 1000}
				ep.BreachAt, ep.Escalated = cur.TS, false
				ep.BreachEvidence = append(ep.BreachEvidence[:0], ep.Evidence...)
				e := newEvent(BreachStarted, o, cur.TS, ep.RunStart, cur)
				e.Pass, e.Confidence = ep.Pass, ep.Conf
				e.DurationS = (cur.TS - ep.RunStart) / 1000
				e.MaxDistance = ep.MaxDist
				e.Zone = zone
				e.Evidence = append([]Evidence(nil), ep.Evidence...)
				ev = append(ev, e)
				ep.BreachStart = ep.RunStart
				ep.RunStart, ep.RunCount, ep.RunNetwork, ep.ReturnCount = 0, 0, 0, 0
				ep.Evidence = ep.Evidence[:0]
				// The phone may be wrong: ask before anyone acts.
				ev = st.ask(o, cur.TS, triggerBreach, cur, r, ev)
			}
		}
		return ev
	}
	switch cur.State {
	case Inside:
		if ep.ReturnCount == 0 {
			ep.ReturnStart = cur.TS
			ep.Evidence = ep.Evidence[:0]
		}
		ep.ReturnCount++
		ep.Evidence = addEvidence(ep.Evidence, cur, r.MaxEvidence)
		if int(ep.ReturnCount) >= r.ReturnMinPings || checkedIn {
			e := newEvent(BreachEnded, o, cur.TS, ep.BreachStart, cur)
			if int(ep.ReturnCount) < r.ReturnMinPings {
				e.Reason = "checkin"
			}
			e.Pass, e.Confidence = ep.Pass, ep.Conf
			e.EndedAt = ep.ReturnStart
			e.DurationS = (ep.ReturnStart - ep.BreachStart) / 1000
			e.MaxDistance = ep.MaxDist
			e.Zone = zone
			e.Evidence = append([]Evidence(nil), ep.Evidence...)
			ev = append(ev, e)
			ep.endBreach()
		}
	case Outside, Excused:
		ep.ReturnCount = 0
		ep.MaxDist = max(ep.MaxDist, cur.Distance)
		if cur.State == Outside && !ep.Escalated {
			ep.BreachEvidence = addEvidence(ep.BreachEvidence, cur, r.MaxEvidence)
		}
	}
	return ev
}

// escalationDue reports whether the open breach of ep should be escalated
// by time now: escalate_after has passed since breach_started, and the
// breach had not ended by then (a return under way counts from its first
// inside ping, the breach's ended_at).
func escalationDue(ep *episode, now int64, r *Rules) bool {
	if ep.BreachStart == 0 || ep.Escalated || ep.BreachAt == 0 {
		return false
	}
	at := ep.BreachAt + r.EscalateAfter.Milliseconds()
	return now > at && (ep.ReturnCount == 0 || ep.ReturnStart > at)
}

// escalate emits breach_escalated for the open breach: at breach_started's
// at plus escalate_after, quoting the breach's pings so far.
func escalate(st *State, o *Order, r *Rules) Event {
	ep := st.ep
	ep.Escalated = true
	at := ep.BreachAt + r.EscalateAfter.Milliseconds()
	loc := st.Last
	if n := len(ep.BreachEvidence); n > 0 {
		loc = ep.BreachEvidence[n-1]
	}
	e := newEvent(BreachEscalated, o, at, ep.BreachStart, loc)
	e.DurationS = (at - ep.BreachStart) / 1000
	e.MaxDistance = ep.MaxDist
	e.Pass, e.Confidence = ep.Pass, ep.Conf
	e.Evidence = append([]Evidence(nil), ep.BreachEvidence...)
	return e
}

// closeBreach ends an open breach because its order ended (at its ends_at)
// or was revoked (at the watermark when the engine noticed). The event
// quotes the order the breach was judged against.
func closeBreach(st *State, endedAt int64) Event {
	ep := st.ep
	e := newEvent(BreachEnded, st.order, endedAt, ep.BreachStart, st.Last)
	e.Pass, e.Confidence = ep.Pass, ep.Conf
	e.EndedAt = endedAt
	e.DurationS = (endedAt - ep.BreachStart) / 1000
	e.MaxDistance = ep.MaxDist
	e.Reason = "order_ended"
	e.Evidence = []Evidence{}
	ep.endBreach()
	st.tidy()
	return e
}

// signalLost emits signal_lost and its check-in request (is the phone
// off, or the patient gone?).
func signalLost(st *State, o *Order, r *Rules, ev []Event) []Event {
	st.flags |= flagSignalLost
	e := newEvent(SignalLost, o, st.Last.TS+r.SignalTimeout.Milliseconds(), st.Last.TS, st.Last)
	e.DurationS = int64(r.SignalTimeout.Seconds())
	e.Evidence = []Evidence{st.Last}
	ev = append(ev, e)
	return st.ask(o, e.At, triggerSignal, st.Last, r, ev)
}

func newEvent(t EventType, o *Order, at, started int64, loc Evidence) Event {
	return Event{Type: t, PatientID: o.PatientID, At: at, StartedAt: started, Location: loc,
		MaxDistance: loc.Distance, Home: o.Home, RadiusM: o.RadiusM, District: o.District}
}

func (st *State) episode() *episode {
	if st.ep == nil {
		st.ep = &episode{}
	}
	return st.ep
}

// tidy drops an episode with nothing going on, so idle patients stay small.
func (st *State) tidy() {
	if st.ep != nil && st.ep.idle() {
		st.ep = nil
	}
}

func (ep *episode) resetRun() {
	ep.RunStart, ep.RunCount, ep.RunNetwork, ep.MaxDist, ep.Pass, ep.MinMargin = 0, 0, 0, 0, nil, 0
	ep.Evidence = ep.Evidence[:0]
	ep.forgetRun()
}

func (ep *episode) endBreach() {
	ep.BreachStart, ep.ReturnStart, ep.ReturnCount, ep.Conf = 0, 0, 0, nil
	ep.BreachAt, ep.Escalated, ep.BreachEvidence = 0, false, nil
	ep.resetRun()
	// Open requests outlive the breach: an answer is still an answer, and
	// silence still a missed check-in.
}

// addEvidence keeps the first max-1 pings and the newest one.
func addEvidence(list []Evidence, e Evidence, max int) []Evidence {
	if len(list) < max {
		return append(list, e)
	}
	list[len(list)-1] = e
	return list
}

func zoneID(z *geo.Zone) string {
	if z == nil {
		return ""
	}
	return z.ID
}
