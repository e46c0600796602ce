package processor_test

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/paulmach/orb"

	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/processor"
)

// Known mislocations (contract 2.4) on the rule tests' road: a Wi-Fi access
// point placed 700 m east of home, reported with 20 m accuracy; the
// patient answers at home with a GNSS fix of 8 m. With the default rules a
// run of such fixes breaches at minute 5 and asks; the check-in at 8 ends
// the breach and teaches a circle of 100 m (min_radius_m: the fixes are
// metres apart and 2 × 20 m is less) around 700 m east.
func wifi(min, m float64) tping { return tping{min: min, east: m, acc: 20, source: "wifi"} }
func gnss(t tping) tping        { t.source = "gps"; return t }

// answer is a verified check-in at home, GNSS, attested as it is.
func answer(min float64) tping {
	return tping{min: min, east: 3, acc: 8, source: "gps", checkin: 'v', attest: 's'}
}

// episode is a mislocation episode starting at minute min: three Wi-Fi
// fixes at the wrong place and, when answered, a check-in at home.
func episode(min float64, m float64, answered bool) []tping {
	ts := []tping{wifi(min, m-10), wifi(min+3, m+10), wifi(min+6, m)}
	if answered {
		ts = append(ts, answer(min+8))
	}
	return ts
}

func seq(parts ...[]tping) []step {
	var all []tping
	for _, p := range parts {
		all = append(all, p...)
	}
	return pings(all...)
}

func one(t tping) []tping { return []tping{t} }

const day = 24 * 60.0

func mislocationRules(t *testing.T, f func(*processor.Rules)) processor.Rules {
	r := processor.DefaultRules()
	r.Checkins.Attest = processor.NewAttestation(attestKeys(t), "qfence", processor.IntegrityNone)
	r.SignalTimeout = 7 * 24 * time.Hour // the episodes are a day apart: no signal losses between them
	if f != nil {
		f(&r)
	}
	return r
}

func TestKnownMislocations(t *testing.T) {
	learned := "p1:breach_started@6(0) p1:checkin_requested@6(6) breach_started p1:mislocation_learned@8(0) p1:breach_ended@8(0..8) checkin"
	short := func(r *processor.Rules) { r.Mislocation.TTL = 2 * time.Hour } // learned at 8: valid to minute 128
	tests := []struct {
		name       string
		rules      func(*processor.Rules)
		steps      []step
		wantStates string // "" : not checked
		wantEvents string
	}{
		{name: "a counted GNSS check-in at home teaches; the next episode at that place breaches no more",
			steps:      seq(episode(0, 700, true), episode(day, 700, false), one(in(day+10))),
			wantStates: "outside outside outside inside uncertain/known_mislocation uncertain/known_mislocation uncertain/known_mislocation inside",
			wantEvents: learned},
		{name: "an uncounted check-in (no attestation) teaches nothing",
			steps: seq(episode(0, 700, false), one(tping{min: 8, east: 3, acc: 8, source: "gps", checkin: 'v'}), one(in(9)), episode(day, 700, false)),
			wantEvents: "p1:breach_started@6(0) p1:checkin_requested@6(6) breach_started p1:checkin_rejected@8(8) no_attestation p1:breach_ended@9(0..8) " +
				"p1:checkin_missed@26(6) p1:breach_started@1446(1440) p1:checkin_requested@1446(1446) breach_started"},
		{name: "a network-sourced check-in teaches nothing",
			steps: seq(episode(0, 700, false), one(tping{min: 8, east: 3, acc: 8, source: "wifi", checkin: 'v', attest: 's'}), episode(day, 700, false)),
			wantEvents: "p1:breach_started@6(0) p1:checkin_requested@6(6) breach_started p1:breach_ended@8(0..8) checkin " +
				"p1:breach_started@1446(1440) p1:checkin_requested@1446(1446) breach_started"},
		{name: "an imprecise check-in (accuracy_m 51) teaches nothing",
			steps: seq(episode(0, 700, false), one(tping{min: 8, east: 3, acc: 51, source: "gps", checkin: 'v', attest: 's'}), episode(day, 700, false)),
			wantEvents: "p1:breach_started@6(0) p1:checkin_requested@6(6) breach_started p1:breach_ended@8(0..8) checkin " +
				"p1:breach_started@1446(1440) p1:checkin_requested@1446(1446) breach_started"},
		{name: "a check-in of 50 m (the limit) teaches",
			steps:      seq(episode(0, 700, false), one(tping{min: 8, east: 3, acc: 50, source: "gps", checkin: 'v', attest: 's'}), episode(day, 700, false)),
			wantEvents: learned},
		{name: "a check-in outside teaches nothing",
			steps: seq(episode(0, 700, false), one(gnss(tping{min: 8, east: 700, acc: 8, checkin: 'v', attest: 's'})), one(in(9)), one(in(10)), episode(day, 700, false)),
			wantEvents: "p1:breach_started@6(0) p1:checkin_requested@6(6) breach_started p1:breach_ended@10(0..9) " +
				"p1:breach_started@1446(1440) p1:checkin_requested@1446(1446) breach_started"},
		{name: "a failed check-in teaches nothing",
			steps: seq(episode(0, 700, false), one(tping{min: 8, east: 3, acc: 8, source: "gps", checkin: 'f', attest: 's'}), one(in(9)), episode(day, 700, false)),
			wantEvents: "p1:breach_started@6(0) p1:checkin_requested@6(6) breach_started p1:checkin_failed@8(6) p1:breach_ended@9(0..8) " +
				"p1:breach_started@1446(1440) p1:checkin_requested@1446(1446) breach_started"},
		{name: "a run with one GNSS fix outside teaches nothing",
			steps: seq([]tping{wifi(0, 690), gnss(at(3, 710, 10)), wifi(6, 700), answer(8)}, episode(day, 700, false)),
			wantEvents: "p1:breach_started@6(0) p1:checkin_requested@6(6) breach_started p1:breach_ended@8(0..8) checkin " +
				"p1:breach_started@1446(1440) p1:checkin_requested@1446(1446) breach_started"},
		{name: "a run of unknown-source fixes teaches nothing",
			steps: seq([]tping{at(0, 690, 20), at(3, 710, 20), at(6, 700, 20), answer(8)}, episode(day, 700, false)),
			wantEvents: "p1:breach_started@6(0) p1:checkin_requested@6(6) breach_started p1:breach_ended@8(0..8) checkin " +
				"p1:breach_started@1446(1440) p1:checkin_requested@1446(1446) breach_started"},
		{name: "an answer during the dwell (no breach yet) teaches from the run",
			steps:      seq([]tping{wifi(0, 690), wifi(3, 710), answer(4)}, episode(day, 700, false)),
			wantEvents: "p1:mislocation_learned@4(0)"},
		{name: "a GNSS fix at a learned place still breaches",
			steps:      seq(episode(0, 700, true), []tping{gnss(at(day, 700, 10)), gnss(at(day+6, 700, 10))}),
			wantStates: "outside outside outside inside outside outside",
			wantEvents: learned + " p1:breach_started@1446(1440) p1:checkin_requested@1446(1446) breach_started"},
		{name: "an unknown-source fix at a learned place still breaches",
			steps:      seq(episode(0, 700, true), []tping{at(day, 700, 10), at(day+6, 700, 10)}),
			wantEvents: learned + " p1:breach_started@1446(1440) p1:checkin_requested@1446(1446) breach_started"},
		{name: "a network fix 1 m beyond the radius still breaches; 1 m within does not",
			steps:      seq(episode(0, 700, true), []tping{wifi(day, 801), wifi(day+6, 801), wifi(day+7, 799)}),
			wantStates: "outside outside outside inside outside outside uncertain/known_mislocation",
			wantEvents: learned + " p1:breach_started@1446(1440) p1:checkin_requested@1446(1446) breach_started"},
		{name: "a circle is in force until just before valid_to",
			rules:      short,
			steps:      seq(episode(0, 700, true), []tping{wifi(127.99, 700)}),
			wantStates: "outside outside outside inside uncertain/known_mislocation",
			wantEvents: learned},
		{name: "at valid_to the circle has expired",
			rules:      short,
			steps:      seq(episode(0, 700, true), []tping{wifi(128, 700), wifi(134, 700)}),
			wantStates: "outside outside outside inside outside outside",
			wantEvents: learned + " p1:breach_started@134(128) p1:checkin_requested@134(134) breach_started"},
		{name: "a fix inside extends the validity to its ts + ttl",
			rules:      short,
			steps:      seq(episode(0, 700, true), []tping{wifi(100, 700), in(101), wifi(200, 700), wifi(206, 700)}),
			wantStates: "outside outside outside inside uncertain/known_mislocation inside uncertain/known_mislocation uncertain/known_mislocation",
			wantEvents: learned},
		{name: "ttl 0 turns learning off",
			rules: func(r *processor.Rules) { r.Mislocation.TTL = 0 },
			steps: seq(episode(0, 700, true), episode(day, 700, false)),
			wantEvents: "p1:breach_started@6(0) p1:checkin_requested@6(6) breach_started p1:breach_ended@8(0..8) checkin " +
				"p1:breach_started@1446(1440) p1:checkin_requested@1446(1446) breach_started"},
		{name: "the fifth mislocation replaces the one that expires first",
			steps: seq(episode(0, 700, true), episode(60, 1300, true), episode(120, 2900, true), episode(180, 3500, true),
				// the first is extended; the second now expires first
				one(wifi(200, 700)), one(in(201)),
				episode(240, 4100, true),
				[]tping{wifi(day, 700), wifi(day+6, 700), in(day + 7), wifi(day+10, 1300), wifi(day+16, 1300)}),
			wantEvents: learned + " p1:breach_started@66(60) p1:checkin_requested@66(66) breach_started p1:mislocation_learned@68(60) p1:breach_ended@68(60..68) checkin" +
				" p1:breach_started@126(120) p1:checkin_requested@126(126) breach_started p1:mislocation_learned@128(120) p1:breach_ended@128(120..128) checkin" +
				" p1:breach_started@186(180) p1:checkin_requested@186(186) breach_started p1:mislocation_learned@188(180) p1:breach_ended@188(180..188) checkin" +
				" p1:breach_started@246(240) p1:checkin_requested@246(246) breach_started p1:mislocation_learned@248(240) p1:breach_ended@248(240..248) checkin" +
				" p1:breach_started@1456(1450) p1:checkin_requested@1456(1456) breach_started"},
		{name: "an order that ends takes its mislocations",
			steps:      append(seq(episode(0, 700, true)), step{revoke: "p1"}, step{sweep: true}),
			wantEvents: learned},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			states, events := runRules(t, mislocationRules(t, tc.rules), nil, tc.steps)
			if tc.wantStates != "" {
				if got := strings.Join(states, " "); got != tc.wantStates {
					t.Errorf("states:\n got %s\nwant %s", got, tc.wantStates)
				}
			}
			if got := strings.Join(events, " "); got != tc.wantEvents {
				t.Errorf("events:\n got %s\nwant %s", got, tc.wantEvents)
			}
		})
	}
}

// mislocationEngine is an engine over one patient p1 at home, with the
// attestation rules; its book is returned to replace the order.
func mislocationEngine(t *testing.T) (*processor.Engine, *processor.OrderBook) {
	book := processor.NewOrderBook()
	book.Put(&processor.Order{PatientID: "p1", Home: home, RadiusM: 50, District: "district-a", StartsAt: t0 - 24*3600_000, EndsAt: math.MaxInt64})
	return processor.NewEngine(mislocationRules(t, nil), book), book
}

func feed(e *processor.Engine, ts []tping) (events []processor.Event, rows []processor.Track) {
	for _, tp := range ts {
		p := ping(tp)
		var tr processor.Track
		events, _, tr = e.Process(&p, nil, events)
		rows = append(rows, tr)
	}
	return events, rows
}

func types(events []processor.Event) string {
	var s []string
	for _, e := range events {
		s = append(s, e.Type.String())
	}
	return strings.Join(s, " ")
}

// The circle of mislocation_learned is the formula's: centre the median
// latitude and longitude of the run's network fixes, radius the largest of
// min_radius_m, twice the worst accuracy and the farthest fix + 50, valid
// for ttl after the check-in; the event quotes those fixes and the check-in.
func TestTheLearnedCircle(t *testing.T) {
	e, _ := mislocationEngine(t)
	run := []tping{
		{min: 0, east: 640, acc: 20, source: "wifi"},
		{min: 2, east: 700, acc: 90, source: "WiFi"}, // the worst accuracy: 2 × 90 = 180
		{min: 4, east: 760, acc: 20, source: "cell"},
		{min: 6, east: 720, acc: 20, source: "fused-network"},
	}
	events, _ := feed(e, append(run, answer(8)))
	var got *processor.Event
	for i := range events {
		if events[i].Type == processor.MislocationLearned {
			got = &events[i]
		}
	}
	if got == nil {
		t.Fatalf("no mislocation_learned in %s", types(events))
	}
	// Median of four: the mean of the middle two, east 700 and 720.
	lons := []float64{east(640)[0], east(700)[0], east(720)[0], east(760)[0]}
	lats := []float64{east(640)[1], east(700)[1], east(720)[1], east(760)[1]}
	centre := orb.Point{(lons[1] + lons[2]) / 2, (lats[1] + lats[2]) / 2}
	if math.Abs(got.Location.Lon-centre[0]) > 1e-12 || math.Abs(got.Location.Lat-centre[1]) > 1e-9 {
		t.Errorf("centre %v,%v; want the median %v", got.Location.Lon, got.Location.Lat, centre)
	}
	far := geo.Distance(centre, east(640))
	if math.Abs(far-70) > 0.5 {
		t.Fatalf("the test's geometry is off: the farthest fix is %.1f m from the centre", far)
	}
	if want := float32(180); got.Mislocation.RadiusM != want { // 2 × 90 beats 100 and 70 + 50
		t.Errorf("radius %v, want %v", got.Mislocation.RadiusM, want)
	}
	if want := t0 + 8*60_000 + (336 * time.Hour).Milliseconds(); got.Mislocation.ValidTo != want {
		t.Errorf("valid_to %d, want the check-in + 14 days %d", got.Mislocation.ValidTo, want)
	}
	if got.StartedAt != t0 || got.At != t0+8*60_000 || got.Confidence.OutsidePings != 4 || got.Confidence.RadiusM != 180 {
		t.Errorf("event %+v; want started_at the first fix, at the check-in, 4 outside pings", *got)
	}
	if n := len(got.Evidence); n != 5 || got.Evidence[4].TS != t0+8*60_000 || got.Evidence[4].State != processor.Inside {
		t.Errorf("evidence %+v; want the four fixes and the check-in", got.Evidence)
	}
	if e.KnownMislocations() != 1 {
		t.Errorf("the engine counts %d known mislocations, want 1", e.KnownMislocations())
	}
	// The JSON carries the circle, and the radius as confidence.radius_m.
	var doc struct {
		Mislocation struct {
			RadiusM float64 `json:"radius_m"`
			ValidTo string  `json:"valid_to"`
		} `json:"mislocation"`
		Confidence struct {
			RadiusM float64 `json:"radius_m"`
		} `json:"confidence"`
	}
	if err := json.Unmarshal(got.AppendJSON(nil, e.Rules()), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Mislocation.RadiusM != 180 || doc.Confidence.RadiusM != 180 || doc.Mislocation.ValidTo != "2026-04-16T10:08:00.000Z" {
		t.Errorf("JSON circle %+v", doc)
	}

	// Far fixes make the circle bigger, up to max_radius_m.
	e2, _ := mislocationEngine(t)
	events, _ = feed(e2, []tping{wifi(0, 700), wifi(3, 1700), wifi(6, 1200), answer(8)})
	for _, ev := range events {
		if ev.Type == processor.MislocationLearned && ev.Mislocation.RadiusM != 500 {
			t.Errorf("a run 1000 m across learned a radius of %v, want max_radius_m 500", ev.Mislocation.RadiusM)
		}
	}
	if types(events) == "" || !strings.Contains(types(events), "mislocation_learned") {
		t.Errorf("no circle learned from the wide run: %s", types(events))
	}
}

// A checkpoint between learning and the next episode keeps the circle: the
// restored engine judges the episode as the first engine would.
func TestARestoreKeepsKnownMislocations(t *testing.T) {
	e, book := mislocationEngine(t)
	feed(e, episode(0, 700, true))
	fresh := processor.NewEngine(*e.Rules(), book)
	for _, rec := range e.TakeDirty(nil) {
		if err := fresh.Restore(rec.Key, rec.Value); err != nil {
			t.Fatal(err)
		}
	}
	if fresh.KnownMislocations() != 1 {
		t.Fatalf("restored engine counts %d known mislocations, want 1", fresh.KnownMislocations())
	}
	events, rows := feed(fresh, episode(day, 700, false))
	if len(events) != 0 {
		t.Errorf("after the restore the episode gave %s", types(events))
	}
	for _, r := range rows {
		if r.State != processor.Uncertain || r.Flag != processor.FlagKnownMislocation {
			t.Errorf("row %v/%v, want uncertain/known_mislocation", r.State, r.Flag)
		}
	}
	// A restore in the middle of a run keeps what the run would teach.
	e, book = mislocationEngine(t)
	feed(e, episode(0, 700, false)[:2])
	fresh = processor.NewEngine(*e.Rules(), book)
	for _, rec := range e.TakeDirty(nil) {
		if err := fresh.Restore(rec.Key, rec.Value); err != nil {
			t.Fatal(err)
		}
	}
	if events, _ := feed(fresh, []tping{wifi(6, 700), answer(8)}); !strings.Contains(types(events), "mislocation_learned") {
		t.Errorf("a run checkpointed half-way taught nothing: %s", types(events))
	}
}

// A new order (another home) forgets the circles learned under the old one.
func TestAReplacedOrderForgetsKnownMislocations(t *testing.T) {
	e, book := mislocationEngine(t)
	feed(e, episode(0, 700, true))
	book.Put(&processor.Order{PatientID: "p1", Home: east(10), RadiusM: 50, District: "district-a", StartsAt: t0 - 24*3600_000, EndsAt: math.MaxInt64})
	events, rows := feed(e, episode(day, 710, false))
	if !strings.Contains(types(events), "breach_started") || rows[0].Flag == processor.FlagKnownMislocation {
		t.Errorf("under the new order the episode gave %q, first row flag %v; want a breach", types(events), rows[0].Flag)
	}
	if e.KnownMislocations() != 0 {
		t.Errorf("the engine still counts %d known mislocations", e.KnownMislocations())
	}
	// The same order sent again (an extension: same home and start) keeps them.
	e, book = mislocationEngine(t)
	feed(e, episode(0, 700, true))
	book.Put(&processor.Order{PatientID: "p1", Home: home, RadiusM: 50, District: "district-a", StartsAt: t0 - 24*3600_000, EndsAt: t0 + 30*24*3600_000})
	if events, _ := feed(e, episode(day, 700, false)); len(events) != 0 {
		t.Errorf("an extended order forgot its circles: %s", types(events))
	}
}

// A patient who never had a mislocation keeps the size of before: the
// learning state hangs off the episode, and an idle patient has none.
func TestAPatientWithoutMislocationsStaysSmall(t *testing.T) {
	e, _ := mislocationEngine(t)
	feed(e, []tping{in(0), in(1)})
	var size int
	e.Snapshot(func(_ string, b []byte) { size = len(b) })
	// The same 38 bytes as before known mislocations (version 4).
	if size != 38 {
		t.Errorf("an idle patient's state is %d bytes, want 38", size)
	}
	// A run of real breaches without answers leaves nothing behind either.
	feed(e, []tping{out(10), out(16), in(20), in(21)})
	e.Snapshot(func(_ string, b []byte) { size = len(b) })
	if e.KnownMislocations() != 0 {
		t.Errorf("%d known mislocations without an answer", e.KnownMislocations())
	}
}

// A state written before known mislocations (version 4: the same bytes
// without the learning part) or before the network count (version 5)
// reads as the same state.
func TestAVersion4StateStillReads(t *testing.T) {
	e, _ := mislocationEngine(t)
	feed(e, []tping{out(0), out(6), in(7), in(8)}) // a breach and its return; the request is still open: an episode
	var v6 []byte
	e.Snapshot(func(_ string, b []byte) { v6 = append([]byte(nil), b...) })
	if v6[0] != 6 || !bytes.HasSuffix(v6, []byte{0, 0, 0}) {
		t.Fatalf("state % x: want version 6 ending in no network fix, a run of one source and no learning", v6)
	}
	body := v6[1 : len(v6)-3]
	for _, old := range [][]byte{append([]byte{4}, body...), append(append([]byte{5}, body...), 0, 0)} {
		var st processor.State
		if err := st.UnmarshalBinary(old); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(st.AppendBinary(nil), v6) {
			t.Errorf("the version %d state reads as % x, want % x", old[0], st.AppendBinary(nil), v6)
		}
	}
}

// A late fix is judged by the circles but changes none of them: the count
// of known mislocations the gauge reports stays the count the state holds
// (a late fix once dropped an expired circle without the gauge hearing).
func TestALateFixLeavesTheCirclesAlone(t *testing.T) {
	book := processor.NewOrderBook()
	book.Put(&processor.Order{PatientID: "p1", Home: home, RadiusM: 50, District: "district-a", StartsAt: t0 - 24*3600_000, EndsAt: math.MaxInt64})
	rules := mislocationRules(t, func(r *processor.Rules) { r.Mislocation.TTL = 2 * time.Hour }) // learned at 8: valid to 128
	e := processor.NewEngine(rules, book)
	feed(e, episode(0, 700, true))
	_, rows := feed(e, []tping{in(200), wifi(100, 700), wifi(150, 700)}) // late: one in force then, one after the circle expired
	if rows[1].State != processor.Uncertain || rows[2].State != processor.Outside {
		t.Errorf("late rows %v and %v, want uncertain (in force at 100) and outside (expired by 150)", rows[1].State, rows[2].State)
	}
	fresh := processor.NewEngine(rules, book)
	e.Snapshot(func(id string, b []byte) {
		if err := fresh.Restore(id, b); err != nil {
			t.Fatal(err)
		}
	})
	if e.KnownMislocations() != fresh.KnownMislocations() {
		t.Errorf("the gauge says %d known mislocations, the state holds %d", e.KnownMislocations(), fresh.KnownMislocations())
	}
}

// A breach's confidence says how many of its outside pings were network
// fixes (what the review queue shows), and the count survives a snapshot
// taken mid-run.
func TestABreachCountsItsNetworkFixes(t *testing.T) {
	e, _ := mislocationEngine(t)
	events, _ := feed(e, []tping{wifi(0, 900), gnss(wifi(2, 900))})
	var snap []byte
	e.Snapshot(func(_ string, b []byte) { snap = append([]byte(nil), b...) })
	var st processor.State
	if err := st.UnmarshalBinary(snap); err != nil || !bytes.Equal(st.AppendBinary(nil), snap) {
		t.Fatalf("a mid-run state does not round-trip: %v", err)
	}
	more, _ := feed(e, []tping{wifi(4, 900), wifi(6, 900)})
	events = append(events, more...)
	for _, ev := range events {
		if ev.Type == processor.BreachStarted {
			if c := ev.Confidence; c == nil || c.OutsidePings != 4 || c.NetworkPings != 3 {
				t.Errorf("confidence %+v, want 3 network fixes of 4 outside pings", c)
			}
			return
		}
	}
	t.Fatalf("no breach: %s", types(events))
}
