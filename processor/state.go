package processor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/paulmach/orb"
)

// PingState is the verdict on one ping (config/contract/CONTRACT.md 2).
type PingState uint8

// The four verdicts. The zero value is not a verdict.
const (
	Inside PingState = iota + 1
	Outside
	Excused
	Uncertain
)

var stateNames = [...]string{"", "inside", "outside", "excused", "uncertain"}

func (s PingState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// Evidence is one ping as the events quote it.
type Evidence struct {
	TS       int64
	Lat, Lon float64
	Accuracy float32
	Distance float32
	State    PingState
}

// State is one patient's state. Its zero value is a patient never seen.
// It is owned by the goroutine of the partition the patient's pings arrive
// on, and serialises with AppendBinary for the qfence-state changelog.
//
// It is laid out for size (a million patients fit in the 300-byte budget of
// BENCHMARKS.md): 64 bytes while the patient is idle, the rest in episode.
type State struct {
	Last Evidence // newest processed ping (TS 0: none yet)
	// order is the order of the newest accepted ping. It spares the sweep a
	// look-up in the order book for every patient: the sweep goes to the
	// book only when it is about to act on what this one says.
	order *Order
	flags uint8
	// nextRandom is the patient's next random check-in instant in Unix
	// seconds (0: not scheduled). It sits in what would be padding after
	// flags, so it costs no byte.
	nextRandom uint32
	ep         *episode // nil while nothing is going on: keeps idle patients small
}

const (
	flagSignalLost  = 1 << iota // signal_lost emitted, signal_restored pending
	flagImplausible             // inside an implausible episode (one event per episode)
	flagRefAside                // the speed reference is ep.Ref, not Last
	flagDirty                   // changed since the last checkpoint (not serialised)
	flagDropped                 // removed from the engine: a tombstone is due (not serialised)
	flagForeign                 // device_mismatch emitted; the enrolled phone has not pinged since

	transient = flagDirty | flagDropped // the engine's bookkeeping, never serialised
)

// episode is what a patient has going on: an outside run, an open breach, a
// visit to an allowed zone.
type episode struct {
	RunStart int64 // first outside ping of the run; 0: no run
	RunCount int32
	// RunNetwork is how many of the run's outside pings were network
	// fixes (the review queue shows it beside the confidence).
	RunNetwork  int32
	BreachStart int64 // the open breach's started_at; 0: no breach
	ReturnStart int64 // first inside ping of the return run
	ReturnCount int32
	MaxDist     float32
	Evidence    []Evidence // the run's pings, then the return run's
	VisitZone   string     // allowed zone of the current visit; "" none
	VisitStart  int64
	// Ref is the newest plausible ping while an implausible one is Last.
	Ref Evidence
	// Pass is the pass the run began under (the trip went beyond its
	// distance, or outlasted it), carried by the breach's events.
	Pass *PassRef
	// MinMargin is the smallest d - a - (r + m) of the run's outside pings
	// (how far out the least certain of them was); Conf is the confidence
	// the breach started with, carried by its later events.
	MinMargin float32
	Conf      *Confidence
	// BreachAt is when the open breach was confirmed (its breach_started's
	// at); Escalated says breach_escalated was emitted; BreachEvidence
	// holds the breach's pings so far (what the escalation quotes).
	BreachAt  int64
	Escalated bool
	// runMixed: an outside fix of the current run or breach was not a
	// network fix, or the run taught already: it teaches nothing (2.4).
	// (In what was padding after Escalated.)
	runMixed       bool
	BreachEvidence []Evidence
	// Requests are the open check-in requests, oldest first.
	Requests []request
	// mis is what learning from answers needs (contract 2.4; nil: nothing).
	mis *learning
}

// Confidence is how sure a breach is (contract 3.1): the run's outside
// pings, the smallest margin by which one of them was out, and the run's
// span.
type Confidence struct {
	OutsidePings int32
	// NetworkPings: how many of OutsidePings were network fixes (not in
	// the event's JSON; stored in ClickHouse for the review queue and
	// rule_outcomes).
	NetworkPings int32
	MinMarginM   float32
	DwellS       int64
	// RadiusM is mislocation_learned's circle (0 for breaches; not part of
	// a patient's state).
	RadiusM float32
}

// PassRef is how breach events quote a pass (contract 3.1).
type PassRef struct {
	ID      string
	Purpose Purpose
	ValidTo int64
}

func (e *episode) idle() bool {
	return e.RunStart == 0 && e.BreachStart == 0 && e.VisitZone == "" && e.Ref.TS == 0 && len(e.Requests) == 0 && e.mis == nil
}

// ref is the newest plausible ping: the reference for the speed check.
func (s *State) ref() Evidence {
	switch {
	case s.flags&flagRefAside == 0:
		return s.Last
	case s.ep != nil:
		return s.ep.Ref
	}
	return Evidence{}
}

// InBreach reports whether the patient has an open breach.
func (s *State) InBreach() bool { return s.ep != nil && s.ep.BreachStart != 0 }

// stateVersion is what AppendBinary writes; UnmarshalBinary reads it,
// version 4 (before known mislocations), 3 (before check-ins) and 2
// (before passes and confidence).
const stateVersion = 6

// AppendBinary appends the state's serialised form to b.
func (s *State) AppendBinary(b []byte) []byte {
	b = append(b, stateVersion, s.flags&^transient)
	b = appendEvidence(b, s.Last)
	b = binary.LittleEndian.AppendUint32(b, s.nextRandom)
	if s.ep == nil {
		return append(b, 0)
	}
	e := s.ep
	b = append(b, 1)
	b = binary.AppendVarint(b, e.RunStart)
	b = binary.AppendVarint(b, int64(e.RunCount))
	b = binary.AppendVarint(b, e.BreachStart)
	b = binary.AppendVarint(b, e.ReturnStart)
	b = binary.AppendVarint(b, int64(e.ReturnCount))
	b = binary.LittleEndian.AppendUint32(b, math.Float32bits(e.MaxDist))
	b = binary.AppendUvarint(b, uint64(len(e.Evidence)))
	for _, ev := range e.Evidence {
		b = appendEvidence(b, ev)
	}
	b = appendString(b, e.VisitZone)
	b = binary.AppendVarint(b, e.VisitStart)
	b = appendEvidence(b, e.Ref)
	// An open breach keeps its order: if the order is revoked while qfence
	// is down, the breach is still closed with its home.
	if e.BreachStart == 0 || s.order == nil {
		b = append(b, 0)
	} else {
		o := s.order
		b = append(b, 1)
		b = appendString(b, o.PatientID)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(o.Home[0]))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(o.Home[1]))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(o.RadiusM))
		b = binary.AppendVarint(b, o.StartsAt)
		b = binary.AppendVarint(b, o.EndsAt)
		b = appendString(b, o.District)
	}
	// Version 3: the pass and the confidence.
	if e.Pass == nil {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = appendString(b, e.Pass.ID)
		b = append(b, byte(e.Pass.Purpose))
		b = binary.AppendVarint(b, e.Pass.ValidTo)
	}
	b = binary.LittleEndian.AppendUint32(b, math.Float32bits(e.MinMargin))
	if e.Conf == nil {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = binary.AppendVarint(b, int64(e.Conf.OutsidePings))
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(e.Conf.MinMarginM))
		b = binary.AppendVarint(b, e.Conf.DwellS)
	}
	b = binary.AppendVarint(b, e.BreachAt)
	b = append(b, byte(b2i(e.Escalated)))
	b = binary.AppendUvarint(b, uint64(len(e.BreachEvidence)))
	for _, ev := range e.BreachEvidence {
		b = appendEvidence(b, ev)
	}
	// Version 4: the open check-in requests.
	b = binary.AppendUvarint(b, uint64(len(e.Requests)))
	for _, q := range e.Requests {
		b = append(b, q.ID[:]...)
		b = binary.AppendVarint(b, q.At)
		b = binary.AppendVarint(b, q.Expires)
	}
	// Version 6: the network fixes of the run and of the breach's
	// confidence.
	b = binary.AppendVarint(b, int64(e.RunNetwork))
	if e.Conf != nil {
		b = binary.AppendVarint(b, int64(e.Conf.NetworkPings))
	}
	// Version 5: what learning from answers holds.
	b = append(b, byte(b2i(e.runMixed)))
	l := e.mis
	if l == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(l.home[0]))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(l.home[1]))
	b = binary.AppendVarint(b, l.startsAt)
	b = binary.AppendUvarint(b, uint64(len(l.run)))
	for _, ev := range l.run {
		b = appendEvidence(b, ev)
	}
	b = binary.AppendUvarint(b, uint64(len(l.known)))
	for _, k := range l.known {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(k.lat))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(k.lon))
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(k.radiusM))
		b = binary.AppendVarint(b, k.validTo)
	}
	return b
}

func appendEvidence(b []byte, e Evidence) []byte {
	b = binary.AppendVarint(b, e.TS)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(e.Lat))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(e.Lon))
	b = binary.LittleEndian.AppendUint32(b, math.Float32bits(e.Accuracy))
	b = binary.LittleEndian.AppendUint32(b, math.Float32bits(e.Distance))
	return append(b, byte(e.State))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// errCorrupt is the one error of UnmarshalBinary: the bytes are not a state.
var errCorrupt = errors.New("corrupt patient state")

type reader struct {
	b   []byte
	err error
}

func (r *reader) byte1() byte {
	if r.err != nil || len(r.b) < 1 {
		r.err = errCorrupt
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if r.err != nil || n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if r.err != nil || n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) u32() uint32 {
	if r.err != nil || len(r.b) < 4 {
		r.err = errCorrupt
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.err = errCorrupt
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) str() string {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.err = errCorrupt
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) evidence() Evidence {
	return Evidence{TS: r.varint(), Lat: math.Float64frombits(r.u64()), Lon: math.Float64frombits(r.u64()),
		Accuracy: math.Float32frombits(r.u32()), Distance: math.Float32frombits(r.u32()), State: PingState(r.byte1())}
}

// UnmarshalBinary restores a state written by AppendBinary.
func (s *State) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	v := r.byte1()
	if v < 2 || v > stateVersion {
		return fmt.Errorf("%w: version %d, want %d", errCorrupt, v, stateVersion)
	}
	*s = State{flags: r.byte1() &^ transient, Last: r.evidence()}
	if v >= 4 {
		s.nextRandom = r.u32()
	}
	if r.byte1() == 1 {
		e := &episode{RunStart: r.varint(), RunCount: int32(r.varint()), BreachStart: r.varint(),
			ReturnStart: r.varint(), ReturnCount: int32(r.varint()), MaxDist: math.Float32frombits(r.u32())}
		n := r.uvarint()
		if n > uint64(len(r.b)) {
			return errCorrupt
		}
		for i := uint64(0); i < n && r.err == nil; i++ {
			e.Evidence = append(e.Evidence, r.evidence())
		}
		e.VisitZone = r.str()
		e.VisitStart = r.varint()
		e.Ref = r.evidence()
		if r.byte1() == 1 {
			s.order = &Order{PatientID: r.str(), Home: [2]float64{math.Float64frombits(r.u64()), math.Float64frombits(r.u64())},
				RadiusM: math.Float64frombits(r.u64()), StartsAt: r.varint(), EndsAt: r.varint(), District: r.str(), stale: 1}
		}
		if v >= 3 {
			if r.byte1() == 1 {
				e.Pass = &PassRef{ID: r.str(), Purpose: Purpose(r.byte1()), ValidTo: r.varint()}
			}
			e.MinMargin = math.Float32frombits(r.u32())
			if r.byte1() == 1 {
				e.Conf = &Confidence{OutsidePings: int32(r.varint()), MinMarginM: math.Float32frombits(r.u32()), DwellS: r.varint()}
			}
			e.BreachAt = r.varint()
			e.Escalated = r.byte1() == 1
			n := r.uvarint()
			if n > uint64(len(r.b)) {
				return errCorrupt
			}
			for i := uint64(0); i < n && r.err == nil; i++ {
				e.BreachEvidence = append(e.BreachEvidence, r.evidence())
			}
		}
		if v >= 4 {
			n := r.uvarint()
			if n > uint64(len(r.b)) {
				return errCorrupt
			}
			for i := uint64(0); i < n && r.err == nil; i++ {
				var q request
				if len(r.b) < len(q.ID) {
					return errCorrupt
				}
				copy(q.ID[:], r.b)
				r.b = r.b[len(q.ID):]
				q.At, q.Expires = r.varint(), r.varint()
				e.Requests = append(e.Requests, q)
			}
		}
		if v >= 6 {
			e.RunNetwork = int32(r.varint())
			if e.Conf != nil {
				e.Conf.NetworkPings = int32(r.varint())
			}
		}
		if v >= 5 {
			e.runMixed = r.byte1() == 1
		}
		if v >= 5 && r.byte1() == 1 {
			l := &learning{home: orb.Point{math.Float64frombits(r.u64()), math.Float64frombits(r.u64())}, startsAt: r.varint()}
			n := r.uvarint()
			if n > uint64(len(r.b)) {
				return errCorrupt
			}
			for i := uint64(0); i < n && r.err == nil; i++ {
				l.run = append(l.run, r.evidence())
			}
			n = r.uvarint()
			if n > uint64(len(r.b)) {
				return errCorrupt
			}
			for i := uint64(0); i < n && r.err == nil; i++ {
				l.known = append(l.known, known{lat: math.Float64frombits(r.u64()), lon: math.Float64frombits(r.u64()),
					radiusM: math.Float32frombits(r.u32()), validTo: r.varint()})
			}
			e.mis = l
		}
		s.ep = e
	}
	if r.err == nil && len(r.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(r.b))
	}
	return r.err
}
