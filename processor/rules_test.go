package processor_test

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/paulmach/orb"
	orbgeo "github.com/paulmach/orb/geo"

	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/processor"
)

// The rule tests draw every scenario on one straight road east of home:
//
//	home ●───r=50───┊─m=25─┊······· east (metres) ·······▶
//	                50     75
//
// A ping is (minute, metres east of home, accuracy). The clinic, an allowed
// zone, is a 200 m circle 2 km east; "clinic15" allows 15 minutes.
var (
	home = orb.Point{37.62, 55.75}
	t0   = time.Date(2026, 4, 2, 10, 0, 0, 0, time.UTC).UnixMilli()
)

func east(m float64) orb.Point { return orbgeo.PointAtBearingAndDistance(home, 90, m) }

func testZones() *geo.Zones {
	return geo.NewZones([]*geo.Zone{
		geo.NewCircleZone("clinic", geo.Allowed, east(2000), 200, 0),
		geo.NewCircleZone("clinic15", geo.Allowed, east(5000), 200, 15),
		geo.NewCircleZone("district-a", geo.District, home, 20000, 0),
	})
}

type tping struct {
	patient string  // "" is p1
	min     float64 // minutes after t0
	east    float64 // metres east of home
	acc     float64
	mock    bool
	checkin byte    // 'v' verified, 'f' failed, 0 none
	request float64 // the minute of the request the check-in names (0: none)
	device  string  // the ping's device_id ("": none)
	attest  byte    // the check-in's attestation: 's' signed as it is, 'x' signed for another fix, 0 none
	source  string  // the fix's source ("": none)
}

func in(min float64) tping         { return tping{min: min, east: 5, acc: 10} }
func out(min float64) tping        { return tping{min: min, east: 1000, acc: 10} }
func unsure(min float64) tping     { return tping{min: min, east: 100, acc: 60} }
func clinic(min float64) tping     { return tping{min: min, east: 2000, acc: 10} }
func of(p string, t tping) tping   { t.patient = p; return t }
func at(min, m, acc float64) tping { return tping{min: min, east: m, acc: acc} }
func mocked(t tping) tping         { t.mock = true; return t }
func minute(ms int64) string       { return fmt.Sprintf("%g", float64(ms-t0)/60000) }
func ping(t tping) processor.Ping {
	p := east(t.east)
	id := t.patient
	if id == "" {
		id = "p1"
	}
	png := processor.Ping{PatientID: []byte(id), TS: t0 + int64(t.min*60000), Lat: p[1], Lon: p[0], Accuracy: t.acc, Mock: t.mock}
	if t.checkin != 0 {
		png.Checkin = processor.Checkin{Present: true, Verified: t.checkin == 'v', Method: []byte("selfie")}
		if t.request != 0 {
			png.Checkin.RequestID, png.Checkin.HasRequestID = requestID(id, t.request), true
		}
	}
	if t.device != "" {
		png.DeviceID = []byte(t.device)
	}
	if t.source != "" {
		png.Source = []byte(t.source)
	}
	if t.attest != 0 {
		st := processor.StatementOf(&png, "qfence", processor.IntegrityStrong)
		if t.attest == 'x' {
			st.Fix.Lat, st.Fix.Lon = home[1], home[0] // a forger's claim to be at home
		}
		jws, err := st.Sign(attestKey, "k1")
		if err != nil {
			panic(err)
		}
		png.Attestation = []byte(jws)
	}
	return png
}

// requestID is the id of patient's check-in request made at minute min.
func requestID(patient string, min float64) [16]byte {
	e := processor.Event{Type: processor.CheckinRequested, PatientID: patient, StartedAt: t0 + int64(min*60000)}
	return e.ID()
}

// describe renders an event compactly: type@at(start..end) reason.
func describe(e processor.Event) string {
	s := fmt.Sprintf("%s:%s@%s(%s", e.PatientID, e.Type, minute(e.At), minute(e.StartedAt))
	if e.EndedAt != 0 {
		s += ".." + minute(e.EndedAt)
	}
	s += ")"
	if e.Reason != "" {
		s += " " + e.Reason
	}
	return s
}

// step is one thing that happens in a rule scenario.
type step struct {
	ping   *tping
	revoke string // revoke this patient's order
	sweep  bool   // end of input: sweep at the watermark
}

func pings(ts ...tping) []step {
	s := make([]step, len(ts))
	for i := range ts {
		s[i] = step{ping: &ts[i]}
	}
	return s
}

func runRules(t *testing.T, r processor.Rules, order func(*processor.Order), steps []step) (states []string, events []string) {
	t.Helper()
	book := processor.NewOrderBook()
	for _, id := range []string{"p1", "p2"} {
		o := &processor.Order{PatientID: id, Home: home, RadiusM: 50, District: "district-a",
			StartsAt: t0 - 24*3600_000, EndsAt: math.MaxInt64}
		if order != nil {
			order(o)
		}
		book.Put(o)
	}
	eng := processor.NewEngine(r, book)
	zones := testZones()
	var ev []processor.Event
	for _, s := range steps {
		switch {
		case s.ping != nil:
			p := ping(*s.ping)
			var outcome processor.Outcome
			var tr processor.Track
			ev, outcome, tr = eng.Process(&p, zones, ev)
			st := outcome.String()
			if outcome == processor.Accepted || outcome == processor.Late {
				st = tr.State.String()
				if tr.Flag != processor.FlagNone {
					st += "/" + tr.Flag.String()
				}
				if outcome == processor.Late && tr.Flag != processor.FlagLate {
					t.Fatalf("late ping row has flag %q, want late", tr.Flag)
				}
			}
			states = append(states, st)
		case s.revoke != "":
			book.Revoke([]byte(s.revoke))
		case s.sweep:
			ev = eng.Sweep(ev)
		}
	}
	for _, e := range ev {
		events = append(events, describe(e))
	}
	return states, events
}

func TestRules(t *testing.T) {
	withRules := func(f func(*processor.Rules)) processor.Rules {
		r := processor.DefaultRules()
		if f != nil {
			f(&r)
		}
		return r
	}
	tests := []struct {
		name       string
		rules      processor.Rules
		order      func(*processor.Order)
		steps      []step
		wantStates string
		wantEvents string
	}{
		{
			name:       "a ping at home is inside",
			steps:      pings(in(0)),
			wantStates: "inside",
		},
		{
			name:       "a ping confidently beyond r+m is outside",
			steps:      pings(out(0)),
			wantStates: "outside",
		},
		{
			name:       "a ping whose accuracy reaches back within r+m is uncertain",
			steps:      pings(at(0, 100, 30)), // d-a = 70 <= 75
			wantStates: "uncertain",
		},
		{
			name:       "a ping with d-a exactly r+m is not confidently outside",
			steps:      pings(at(0, 105, 30)), // d-a = 75 (to a few ulp) — see the exact test below
			wantStates: "uncertain",
		},
		{
			name:       "accuracy exactly max_accuracy_m is still judged",
			steps:      pings(at(0, 5, 500)),
			wantStates: "inside",
		},
		{
			name:       "accuracy above max_accuracy_m is uncertain even at home",
			steps:      pings(at(0, 5, 500.5)),
			wantStates: "uncertain",
		},
		{
			name:       "two outside pings spanning breach_after start a breach at the first one",
			steps:      pings(out(0), out(5)),
			wantStates: "outside outside",
			wantEvents: "p1:breach_started@5(0)",
		},
		{
			name:       "a breach is confirmed by the second ping only",
			steps:      pings(out(0), out(30)),
			wantStates: "outside outside",
			wantEvents: "p1:breach_started@30(0)",
		},
		{
			name:       "outside pings spanning less than breach_after are no breach",
			steps:      pings(out(0), out(2), out(4.9), in(10)),
			wantStates: "outside outside outside inside",
		},
		{
			name:       "breach_min_pings holds back a long run of too few pings",
			rules:      withRules(func(r *processor.Rules) { r.BreachMinPings = 3 }),
			steps:      pings(out(0), out(10), out(11)),
			wantStates: "outside outside outside",
			wantEvents: "p1:breach_started@11(0)",
		},
		{
			name:       "an uncertain ping inside an outside run neither extends nor resets it",
			steps:      pings(out(0), unsure(3), out(5)),
			wantStates: "outside uncertain outside",
			wantEvents: "p1:breach_started@5(0)",
		},
		{
			name:       "an uncertain ping does not count towards breach_min_pings",
			steps:      pings(out(0), unsure(6), out(7)),
			wantStates: "outside uncertain outside",
			wantEvents: "p1:breach_started@7(0)",
		},
		{
			name:       "an inside ping resets the run",
			steps:      pings(out(0), in(3), out(4), out(8), out(9)),
			wantStates: "outside inside outside outside outside",
			wantEvents: "p1:breach_started@9(4)",
		},
		{
			name:       "an excused ping resets the run",
			steps:      pings(out(0), clinic(3), out(4), out(8)),
			wantStates: "outside excused outside outside",
		},
		{
			name:       "time in an allowed zone is excused however long without max_minutes",
			steps:      pings(clinic(0), clinic(20), clinic(40), clinic(60), clinic(80)),
			wantStates: "excused excused excused excused excused",
		},
		{
			name: "time in an allowed zone beyond max_minutes is outside",
			steps: pings(at(0, 5000, 10), at(10, 5000, 10), at(15, 5000, 10), at(16, 5000, 10),
				at(21, 5000, 10)),
			wantStates: "excused excused excused outside outside",
			wantEvents: "p1:breach_started@21(16)",
		},
		{
			name:       "a breach ends at the first of return_min_pings consecutive inside pings",
			steps:      pings(out(0), out(5), out(10), in(20), in(21)),
			wantStates: "outside outside outside inside inside",
			wantEvents: "p1:breach_started@5(0) p1:breach_ended@21(0..20)",
		},
		{
			name:       "an outside ping between inside pings restarts the return",
			steps:      pings(out(0), out(5), in(20), out(21), in(22), unsure(22.5), in(23)),
			wantStates: "outside outside inside outside inside uncertain inside",
			wantEvents: "p1:breach_started@5(0) p1:breach_escalated@20(0) p1:breach_ended@23(0..22)",
		},
		{
			name:       "return_min_pings of one ends the breach at once",
			rules:      withRules(func(r *processor.Rules) { r.ReturnMinPings = 1 }),
			steps:      pings(out(0), out(5), in(9)),
			wantStates: "outside outside inside",
			wantEvents: "p1:breach_started@5(0) p1:breach_ended@9(0..9)",
		},
		{
			name:       "a late ping that would have opened a breach changes nothing",
			steps:      pings(out(0), in(10), out(6), in(11)),
			wantStates: "outside inside outside/late inside",
		},
		{
			name:       "an exact repeat is a duplicate",
			steps:      pings(out(0), out(0)),
			wantStates: "outside duplicate",
		},
		{
			name: "a teleport is implausible and the ping after it is judged from the last plausible one",
			// 50 km in one minute, then home again: the return is plausible
			// against the ping before the teleport.
			steps:      pings(in(0), at(1, 50000, 10), in(2), in(3)),
			wantStates: "inside outside/speed inside inside",
			wantEvents: "p1:implausible_location@1(1) speed",
		},
		{
			name:       "a teleport does not move the breach state",
			steps:      pings(out(0), at(1, 50000, 10), in(2), out(6)),
			wantStates: "outside outside/speed inside outside",
			wantEvents: "p1:implausible_location@1(1) speed",
		},
		{
			name:       "speed is judged beyond both accuracy radii",
			steps:      pings(at(0, 5, 400), at(0.1, 800, 400)), // 795 m in 6 s, but the circles overlap
			wantStates: "inside outside",
		},
		{
			name:       "mock locations are implausible once per episode and never breach",
			steps:      pings(mocked(out(0)), mocked(out(6)), mocked(out(12)), in(13), mocked(in(14))),
			wantStates: "outside/mock_provider outside/mock_provider outside/mock_provider inside inside/mock_provider",
			wantEvents: "p1:implausible_location@0(0) mock_provider p1:implausible_location@14(14) mock_provider",
		},
		{
			name:       "a ping for a patient whose order has not started is no_order",
			order:      func(o *processor.Order) { o.StartsAt = t0 + 60*60000 },
			steps:      pings(out(0), out(10), in(60)),
			wantStates: "no_order no_order inside",
		},
		{
			name: "an order revoked mid-breach closes it with order_ended at the watermark",
			steps: []step{{ping: &[]tping{out(0)}[0]}, {ping: &[]tping{out(5)}[0]},
				{ping: &[]tping{of("p2", in(7))}[0]}, {ping: &[]tping{of("p2", in(35))}[0]}, {revoke: "p1"},
				{ping: &[]tping{of("p2", in(61))}[0]}},
			wantStates: "outside outside inside inside inside",
			wantEvents: "p1:breach_started@5(0) p1:breach_escalated@20(0) p1:breach_ended@61(0..61) order_ended",
		},
		{
			name: "an order that ends mid-breach closes it at ends_at",
			order: func(o *processor.Order) {
				if o.PatientID == "p1" {
					o.EndsAt = t0 + 30*60000
				}
			},
			steps:      append(pings(out(0), out(5), out(29.5), out(31), of("p2", in(31))), step{sweep: true}),
			wantStates: "outside outside outside no_order inside",
			wantEvents: "p1:breach_started@5(0) p1:breach_escalated@20(0) p1:breach_ended@30(0..30) order_ended",
		},
		{
			name: "an idle patient loses signal while others keep the watermark moving",
			steps: pings(in(0), of("p2", in(0)), of("p2", in(10)), of("p2", in(20)), of("p2", in(30)),
				of("p2", in(40)), in(45)),
			wantStates: "inside inside inside inside inside inside inside",
			wantEvents: "p1:signal_lost@30(0) p1:signal_restored@45(0..45)",
		},
		{
			name:       "a patient's own ping after a long silence gives signal_lost then signal_restored",
			steps:      pings(in(0), in(31)),
			wantStates: "inside inside",
			wantEvents: "p1:signal_lost@30(0) p1:signal_restored@31(0..31)",
		},
		{
			name:       "a gap of exactly signal_timeout is not a loss",
			steps:      pings(in(0), in(30)),
			wantStates: "inside inside",
		},
		{
			name:       "the end of input sweeps for lost signals at the newest ts",
			steps:      append(pings(in(0), of("p2", in(45))), step{sweep: true}),
			wantStates: "inside inside",
			wantEvents: "p1:signal_lost@30(0)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.rules
			if r == (processor.Rules{}) {
				r = processor.DefaultRules()
			}
			states, events := runRules(t, r, tt.order, tt.steps)
			events = withoutCheckins(events) // TestCheckins has them
			if got := strings.Join(states, " "); got != tt.wantStates {
				t.Errorf("states:\n got  %s\n want %s", got, tt.wantStates)
			}
			if got := strings.Join(events, " "); got != tt.wantEvents {
				t.Errorf("events:\n got  %s\n want %s", got, tt.wantEvents)
			}
		})
	}
}

// withoutCheckins drops the check-in events of described events, for the
// tests of other rules.
func withoutCheckins(events []string) []string {
	var out []string
	for _, e := range events {
		if !strings.Contains(e, ":checkin_") {
			out = append(out, e)
		}
	}
	return out
}

// TestBoundaryIsExact pins the two boundaries to the bit: d == r+m is
// inside, and d-a == r+m is uncertain, not outside.
func TestBoundaryIsExact(t *testing.T) {
	r := processor.DefaultRules()
	p := east(300)
	d := geo.Distance(home, p)
	radius := d - r.MarginM
	for radius+r.MarginM != d { // find the radius that makes r+m == d exactly
		radius = math.Nextafter(radius, d)
	}
	const small = 100.0
	acc := d - (small + r.MarginM)
	for d-acc != small+r.MarginM { // and the accuracy that makes d-a == r+m exactly
		acc = math.Nextafter(acc, d-acc-(small+r.MarginM)+acc)
	}
	tests := []struct {
		name   string
		radius float64
		acc    float64
		want   processor.PingState
	}{
		{"d exactly r+m is inside", radius, 10, processor.Inside},
		{"one ulp beyond r+m with no accuracy is outside", math.Nextafter(radius, 0), 0, processor.Outside},
		{"d-a exactly r+m is uncertain", small, acc, processor.Uncertain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			book := processor.NewOrderBook()
			book.Put(&processor.Order{PatientID: "p1", Home: home, RadiusM: tt.radius, StartsAt: 0, EndsAt: math.MaxInt64})
			eng := processor.NewEngine(r, book)
			png := processor.Ping{PatientID: []byte("p1"), TS: t0, Lat: p[1], Lon: p[0], Accuracy: tt.acc}
			_, _, tr := eng.Process(&png, nil, nil)
			if tr.State != tt.want {
				t.Errorf("got %s, want %s (d=%v r=%v a=%v)", tr.State, tt.want, d, tt.radius, tt.acc)
			}
		})
	}
}
