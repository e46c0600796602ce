package processor

import (
	"slices"
	"time"

	"github.com/paulmach/orb"

	"github.com/qfence/qfence/geo"
)

// Mislocation are the rules of contract 2.4: what a counted GNSS check-in
// at home teaches about a run of network fixes elsewhere.
type Mislocation struct {
	// TTL is how long a learned circle stays in force after the fix that
	// taught or last confirmed it (0: learning is off).
	TTL                    time.Duration
	MinRadiusM, MaxRadiusM float64
	MaxPerPatient          int
	// MaxCheckinAccuracyM is the worst accuracy of a check-in's GNSS fix
	// that may teach.
	MaxCheckinAccuracyM float64
}

// maxRunFixes bounds the network fixes of one run kept to learn from: a
// circle is the median of the first ones (a mislocation episode lasts until
// the check-in answers, a few dozen pings; a run longer than this teaches
// from its first 256).
const maxRunFixes = 256

// learning is what a patient's mislocations need: the outside fixes of the
// current run or breach (while every one of them is a network fix), and
// the circles learned. It hangs off the episode, so a patient who has
// neither costs nothing (a run with a fix of another source is marked in
// the episode, episode.runMixed, without it).
type learning struct {
	run []Evidence
	// home and startsAt identify the order the circles were learned under:
	// a new order (another home or start) forgets them.
	home     orb.Point
	startsAt int64
	known    []known
}

// known is one known mislocation: a circle where the patient's network
// fixes are not to be believed, until validTo (exclusive).
type known struct {
	lat, lon float64
	radiusM  float32
	validTo  int64
}

// MislocationRef is how mislocation_learned quotes its circle.
type MislocationRef struct {
	RadiusM float32
	ValidTo int64
}

func (l *learning) empty() bool { return len(l.run) == 0 && len(l.known) == 0 }

// Mislocations is the number of known mislocations the patient holds.
func (s *State) Mislocations() int {
	if s.ep == nil || s.ep.mis == nil {
		return 0
	}
	return len(s.ep.mis.known)
}

// noteOutside records an outside fix of the run or breach for learning:
// its place while all are network fixes, or that one was not.
func (st *State) noteOutside(p *Ping, cur Evidence) {
	ep := st.episode()
	switch {
	case ep.runMixed:
	case ClassOf(p.Source) != SourceNetwork:
		ep.runMixed = true
		ep.dropRun()
	default:
		if ep.mis == nil {
			ep.mis = &learning{}
		}
		if len(ep.mis.run) < maxRunFixes {
			ep.mis.run = append(ep.mis.run, cur)
		}
	}
}

// forgetRun drops what the run held for learning (the run ended).
func (ep *episode) forgetRun() {
	ep.runMixed = false
	ep.dropRun()
}

// dropRun drops the run's fixes, and the learning state once it holds
// nothing.
func (ep *episode) dropRun() {
	if l := ep.mis; l != nil {
		l.run = l.run[:0]
		if len(l.known) == 0 {
			ep.mis = nil
		}
	}
}

// current drops circles that expired by ts or belong to another order, and
// returns the circles in force.
func (l *learning) current(o *Order, ts int64) []known {
	if l.home != o.Home || l.startsAt != o.StartsAt {
		l.known = l.known[:0]
	}
	l.known = slices.DeleteFunc(l.known, func(k known) bool { return k.validTo <= ts })
	return l.known
}

// circle is the index of the known mislocation of order o in force at ts
// that holds pt, or -1. It changes nothing: a late fix is judged by it
// without touching the state it may not move.
func (l *learning) circle(o *Order, ts int64, pt orb.Point) int {
	if l.home != o.Home || l.startsAt != o.StartsAt {
		return -1
	}
	for i, k := range l.known {
		if k.validTo > ts && geo.Distance(orb.Point{k.lon, k.lat}, pt) <= float64(k.radiusM) {
			return i
		}
	}
	return -1
}

// mislocated is the classify stage of an in-order network fix that would
// be outside: inside a known mislocation it is uncertain and extends the
// circle's validity; the circles that expired go. It reports whether it
// applied.
func (st *State) mislocated(p *Ping, o *Order, f *fix, r *Rules) bool {
	l := st.ep.mis
	l.current(o, p.TS)
	if i := l.circle(o, p.TS, f.pt); i >= 0 {
		f.cur.State = Uncertain
		l.known[i].validTo = max(l.known[i].validTo, p.TS+r.Mislocation.TTL.Milliseconds())
		return true
	}
	if l.empty() {
		st.ep.mis = nil
	}
	return false
}

// learn is the answer stage's lesson (contract 2.4): a counted, verified
// GNSS check-in at home, precise enough, answering a run or breach whose
// outside fixes were all network fixes, teaches a known mislocation and
// emits mislocation_learned.
func (st *State) learn(p *Ping, o *Order, cur Evidence, r *Rules, ev []Event) []Event {
	m := &r.Mislocation
	if st.ep == nil || st.ep.mis == nil || !p.Checkin.Verified || cur.State != Inside ||
		ClassOf(p.Source) != SourceGNSS || p.Accuracy > m.MaxCheckinAccuracyM {
		return ev
	}
	l := st.ep.mis
	if st.ep.runMixed || len(l.run) == 0 {
		return ev
	}
	fixes := l.run
	lats, lons := make([]float64, len(fixes)), make([]float64, len(fixes))
	var worst float32
	for i, f := range fixes {
		lats[i], lons[i] = f.Lat, f.Lon
		worst = max(worst, f.Accuracy)
	}
	centre := orb.Point{median(lons), median(lats)}
	far := 0.0
	for _, f := range fixes {
		far = max(far, geo.Distance(centre, orb.Point{f.Lon, f.Lat}))
	}
	radius := min(max(m.MinRadiusM, 2*float64(worst), far+50), m.MaxRadiusM)
	k := known{lat: centre[1], lon: centre[0], radiusM: float32(radius), validTo: p.TS + m.TTL.Milliseconds()}
	l.current(o, p.TS)
	l.home, l.startsAt = o.Home, o.StartsAt
	if len(l.known) >= m.MaxPerPatient {
		first := 0
		for i := range l.known {
			if l.known[i].validTo < l.known[first].validTo {
				first = i
			}
		}
		l.known = slices.Delete(l.known, first, first+1)
	}
	l.known = append(l.known, k)

	loc := Evidence{TS: p.TS, Lat: k.lat, Lon: k.lon, Accuracy: k.radiusM, Distance: float32(geo.Distance(o.Home, centre)), State: Outside}
	e := newEvent(MislocationLearned, o, p.TS, fixes[0].TS, loc)
	e.DurationS = (p.TS - fixes[0].TS) / 1000
	e.Mislocation = &MislocationRef{RadiusM: k.radiusM, ValidTo: k.validTo}
	limit := float32(o.RadiusM + r.MarginM)
	c := &Confidence{OutsidePings: int32(len(fixes)), MinMarginM: fixes[0].Distance - fixes[0].Accuracy - limit,
		DwellS: (fixes[len(fixes)-1].TS - fixes[0].TS) / 1000, RadiusM: k.radiusM}
	for _, f := range fixes {
		e.MaxDistance = max(e.MaxDistance, f.Distance)
		c.MinMarginM = min(c.MinMarginM, f.Distance-f.Accuracy-limit)
	}
	e.Confidence = c
	for _, f := range fixes {
		e.Evidence = addEvidence(e.Evidence, f, r.MaxEvidence-1)
	}
	e.Evidence = append(e.Evidence, cur)
	// The run has taught: a second check-in of it teaches nothing more.
	l.run, st.ep.runMixed = l.run[:0], true
	return append(ev, e)
}

// median of xs (reordered): the middle value, or the mean of the two
// middle ones.
func median(xs []float64) float64 {
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}
