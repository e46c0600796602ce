package processor

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/qfence/qfence/geo"
)

// sweepEvery is how much event time passes between two sweeps of a
// partition's patients for lost signals and ended orders: a tenth of the
// signal timeout, at least a minute (3 minutes by default). Events carry the
// exact time they are due whatever the cadence; it only decides how soon
// they are noticed, and how much a backlog drain spends sweeping.
func (e *Engine) sweepEvery() int64 {
	return max(60_000, e.rules.SignalTimeout.Milliseconds()/10)
}

// Engine is one partition's engine: it owns the state of the patients whose
// pings arrive on that partition and the partition's watermark. It is not
// safe for concurrent use: one goroutine per partition owns one Engine.
type Engine struct {
	rules     Rules
	orders    *OrderBook
	patients  map[string]*State
	watermark int64 // newest accepted ts
	// watermarkCap bounds what a ping may move the watermark to (0: none).
	watermarkCap int64
	passes       *PassBook // nil: no passes
	nextSweep    int64
	dirty        []dirtyRef // patients changed since TakeDirty, in order of change
	// scratch and ends are TakeDirty's, kept between calls: the states
	// serialised, and where each ends.
	scratch []byte
	ends    []int32
	sweep   []Event
	// openBreaches counts the partition's patients in a breach, and
	// mislocations the known mislocations they hold (gauges).
	openBreaches int
	mislocations int
}

// OpenBreaches is the number of open breaches in the partition.
func (e *Engine) OpenBreaches() int { return e.openBreaches }

// KnownMislocations is the number of known mislocations the partition's
// patients hold (contract 2.4).
func (e *Engine) KnownMislocations() int { return e.mislocations }

// NewEngine returns an engine for one partition.
func NewEngine(r Rules, orders *OrderBook) *Engine {
	return &Engine{rules: r, orders: orders, patients: make(map[string]*State)}
}

// Rules returns the engine's rules.
func (e *Engine) Rules() *Rules { return &e.rules }

// Watermark is the newest accepted ts (or the wall clock fed to Advance).
func (e *Engine) Watermark() int64 { return e.watermark }

// Patients is the number of patients with state in this partition.
func (e *Engine) Patients() int { return len(e.patients) }

// Process decides one valid ping. Events (the sweep's first, if the ping
// moved the watermark across a sweep point) are appended to ev. The row is
// meaningful for Accepted and Late.
func (e *Engine) Process(p *Ping, zones *geo.Zones, ev []Event) ([]Event, Outcome, Track) {
	start := len(ev)
	st := e.patients[string(p.PatientID)]
	var o *Order
	if st != nil && st.order != nil && st.order.Current() {
		o = st.order // what the book would answer, without its lock
	} else {
		o = e.orders.Get(p.PatientID)
	}
	if !o.ActiveAt(p.TS) {
		return ev, NoOrder, Track{}
	}
	if st == nil {
		st = &State{}
		e.patients[o.PatientID] = st // the order's string: no new key memory
	}
	if p.TS > st.Last.TS && p.TS > e.watermark {
		wm := p.TS
		if e.watermarkCap > 0 && wm > e.watermarkCap {
			wm = e.watermarkCap
		}
		ev = e.Advance(wm, ev)
	}
	was, knew := st.InBreach(), st.Mislocations()
	if p.TS > st.Last.TS {
		// What time alone brought this patient before this ping: noticed by
		// the ping itself, whatever the sweep's cadence.
		ev, _ = st.due(o, o.PatientID, p.TS, &e.rules, ev)
	}
	ev, out, t := Step(st, p, o, zones, e.passes, &e.rules, ev)
	if out == Accepted {
		e.markDirty(o.PatientID, st)
		e.openBreaches += b2i(st.InBreach()) - b2i(was)
		e.mislocations += st.Mislocations() - knew
	}
	if len(ev) > start {
		pseudonymize(ev[start:], &e.rules)
	}
	return ev, out, t
}

// UsePasses gives the engine the table of QR passes.
func (e *Engine) UsePasses(b *PassBook) {
	e.passes = b
	if b != nil {
		b.link(e.orders)
	}
}

// CapWatermark bounds how far a ping can move the watermark (0: no bound).
// qfence run sets it to the wall clock before each batch, so that one ping
// dated in the future (within limits.max_clock_skew) cannot end every
// order or lose every signal in its partition ahead of time; replay, in
// event time only, sets none.
func (e *Engine) CapWatermark(ms int64) { e.watermarkCap = ms }

// Advance moves the watermark to wm (if it is newer) and sweeps when a sweep
// point has been crossed. qfence run calls it with the wall clock for an
// idle partition; Process calls it with each accepted ts.
func (e *Engine) Advance(wm int64, ev []Event) []Event {
	if wm <= e.watermark {
		return ev
	}
	e.watermark = wm
	if wm < e.nextSweep {
		return ev
	}
	every := e.sweepEvery()
	e.nextSweep = (wm/every + 1) * every
	return e.Sweep(ev)
}

// Sweep checks every patient of the partition against the watermark now:
// lost signals, and open breaches whose order ended or was revoked. States
// of patients without an order are dropped. Its events are ordered by (at,
// patient_id, type), so the output does not depend on map order. qfence
// replay calls it once at the end of input.
func (e *Engine) Sweep(ev []Event) []Event {
	e.sweep = e.sweep[:0]
	wm, timeout := e.watermark, e.rules.SignalTimeout.Milliseconds()
	for id, st := range e.patients {
		deadline := st.Last.TS + timeout
		lost := st.flags&flagSignalLost == 0 && wm > deadline
		// The order of the last ping says whether there can be anything to
		// do; only then is the book asked (an open breach always asks, as its
		// order may be revoked at any time).
		if st.order != nil && st.order.EndsAt > wm && !lost && st.ep == nil && !st.randomDue(wm, &e.rules) {
			continue
		}
		o := e.orders.Lookup(id)
		if o == nil || o.EndsAt <= wm {
			if st.InBreach() {
				ended := wm
				if o != nil {
					ended = max(o.EndsAt, st.ep.BreachStart)
				}
				e.sweep = append(e.sweep, closeBreach(st, ended))
				e.openBreaches--
			}
			e.mislocations -= st.Mislocations() // they end with the order
			delete(e.patients, id)
			st.flags |= flagDropped
			e.markDirty(id, st)
			continue
		}
		st.order = o
		changed := false
		if st.ep != nil && st.ep.mis != nil {
			changed = e.expireMislocations(st, o, wm)
		}
		if lost && deadline >= o.StartsAt {
			e.sweep, changed = signalLost(st, o, &e.rules, e.sweep), true
		}
		var due bool
		if e.sweep, due = st.due(o, o.PatientID, wm, &e.rules, e.sweep); due || changed {
			e.markDirty(id, st)
		}
	}
	pseudonymize(e.sweep, &e.rules)
	slices.SortFunc(e.sweep, func(a, b Event) int {
		if a.At != b.At {
			return int(a.At - b.At)
		}
		if c := strings.Compare(a.PatientID, b.PatientID); c != 0 {
			return c
		}
		return int(a.Type) - int(b.Type)
	})
	return append(ev, e.sweep...)
}

// expireMislocations drops the known mislocations of st that expired by wm
// or were learned under another order, silently; it reports a change.
func (e *Engine) expireMislocations(st *State, o *Order, wm int64) bool {
	was := st.Mislocations()
	l := st.ep.mis
	l.current(o, wm)
	if l.empty() {
		st.ep.mis = nil
		st.tidy()
	}
	e.mislocations += st.Mislocations() - was
	return st.Mislocations() != was
}

// StateRecord is one entry of the qfence-state changelog: a patient's state,
// or the partition's meta record, keyed for compaction. A nil Value is a
// tombstone.
type StateRecord struct {
	Key   string
	Value []byte
}

// MetaKey keys a partition's own record (its watermark) in the changelog.
// Patient ids cannot start with '#', so it never collides with one.
const MetaKey = "#partition"

// dirtyRef is a changed state, held by pointer so that taking it needs no
// look-up.
type dirtyRef struct {
	id string
	st *State
}

// markDirty queues a changed state for the next TakeDirty. Dirtiness is the
// engine's business alone: Step and the sweep only change state.
func (e *Engine) markDirty(id string, st *State) {
	if st.flags&flagDirty == 0 {
		st.flags |= flagDirty
		e.dirty = append(e.dirty, dirtyRef{id, st})
	}
}

// TakeDirty appends a record for every patient whose state changed since
// the last call, in order of change: the state's serialised form, or a nil
// Value when the state was dropped (a tombstone for the changelog). It
// clears the marks. A nil recs gets room for one more record (the caller's
// meta record).
//
// The states are written to a scratch buffer, then copied into one array of
// exactly their size, which they share: a batch's states cost two
// allocations, not one per patient, and no spare room. They wait in memory
// until their batch is checkpointed, one per ping in flight, so a
// size-hinted array (64 bytes for a 38-byte idle state) was a sixth of a
// drain's heap.
func (e *Engine) TakeDirty(recs []StateRecord) []StateRecord {
	if recs == nil {
		recs = make([]StateRecord, 0, len(e.dirty)+1)
	}
	scratch, ends := e.scratch[:0], e.ends[:0]
	for _, d := range e.dirty {
		if d.st.flags&flagDropped == 0 {
			d.st.flags &^= flagDirty
			scratch = d.st.AppendBinary(scratch)
		}
		ends = append(ends, int32(len(scratch)))
	}
	arena := make([]byte, len(scratch))
	copy(arena, scratch)
	start := int32(0)
	for i, d := range e.dirty {
		end := ends[i]
		if d.st.flags&flagDropped != 0 {
			recs = append(recs, StateRecord{Key: d.id})
		} else {
			recs = append(recs, StateRecord{Key: d.id, Value: arena[start:end:end]})
		}
		start = end
	}
	clear(e.dirty)
	e.dirty, e.scratch, e.ends = e.dirty[:0], scratch[:0], ends[:0]
	if cap(e.dirty) > 1<<16 { // after a sweep of a big partition: do not keep it
		e.dirty, e.scratch, e.ends = nil, nil, nil
	}
	return recs
}

// Snapshot calls fn for every patient's serialised state, in no order.
func (e *Engine) Snapshot(fn func(id string, state []byte)) {
	var buf []byte
	for id, st := range e.patients {
		buf = st.AppendBinary(buf[:0])
		fn(id, buf)
	}
}

// Restore loads one patient's state from its serialised form, replacing any
// state held for the patient; nil removes it.
func (e *Engine) Restore(id string, state []byte) error {
	if old := e.patients[id]; old != nil {
		e.openBreaches -= b2i(old.InBreach())
		e.mislocations -= old.Mislocations()
	}
	if state == nil {
		delete(e.patients, id)
		return nil
	}
	st := &State{}
	if err := st.UnmarshalBinary(state); err != nil {
		return fmt.Errorf("restore state of a patient: %w", err)
	}
	if o := e.orders.Lookup(id); o != nil {
		id, st.order = o.PatientID, o
	}
	e.patients[id] = st
	e.openBreaches += b2i(st.InBreach())
	e.mislocations += st.Mislocations()
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// metaVersion is the version of the partition's meta record.
const metaVersion = 2

// MarshalMeta serialises the partition's own state (watermark, sweep
// point) and covered, an opaque number the caller keeps with it (the
// pipeline: the offset after the last message whose results the checkpoint
// holds).
func (e *Engine) MarshalMeta(covered int64) []byte {
	b := []byte{metaVersion}
	b = binary.AppendVarint(b, e.watermark)
	b = binary.AppendVarint(b, e.nextSweep)
	return binary.AppendVarint(b, covered)
}

// UnmarshalMeta restores what MarshalMeta wrote and returns its covered
// number (-1 when the record predates it).
func (e *Engine) UnmarshalMeta(b []byte) (covered int64, err error) {
	r := reader{b: b}
	if v := r.byte1(); v != metaVersion {
		return -1, fmt.Errorf("restore partition meta: %w", errCorrupt)
	}
	wm, next := r.varint(), r.varint()
	covered = -1
	if r.err == nil && len(r.b) > 0 {
		covered = r.varint()
	}
	if r.err != nil {
		return -1, fmt.Errorf("restore partition meta: %w", r.err)
	}
	e.watermark, e.nextSweep = wm, next
	return covered, nil
}
