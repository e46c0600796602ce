package processor

import (
	"testing"
	"time"

	"github.com/paulmach/orb"

	"github.com/qfence/qfence/geo"
)

// The decision's stages, each on its own (Step's table tests run them
// together).

func stageOrder() *Order {
	return &Order{PatientID: "p1", Home: orb.Point{37.6, 55.75}, RadiusM: 50, StartsAt: 0, EndsAt: 1 << 62}
}

// metresNorth is a ping d metres north of the home with accuracy a.
func metresNorth(d, a float64, ts int64) *Ping {
	return &Ping{PatientID: []byte("p1"), TS: ts, Lat: 55.75 + d/111_195, Lon: 37.6, Accuracy: a}
}

// fixOf is the fix Step starts from.
func fixOf(p *Ping, o *Order, r *Rules) fix {
	d := geo.Distance(o.Home, orb.Point{p.Lon, p.Lat})
	return fix{pt: orb.Point{p.Lon, p.Lat}, d: d, cur: Evidence{TS: p.TS, Lat: p.Lat, Lon: p.Lon, Accuracy: float32(p.Accuracy),
		Distance: float32(d), State: classify(d, p.Accuracy, o, r)}}
}

// classify: the accuracy counts in the patient's favour, both ways.
func TestStageClassify(t *testing.T) {
	r := DefaultRules() // margin 25: r + m = 75
	for _, c := range []struct {
		d, a float64
		want PingState
	}{
		{0, 10, Inside}, {74, 10, Inside}, {76, 0, Outside}, {80, 10, Uncertain}, {90, 13, Outside},
		{90, 17, Uncertain}, {5000, 600, Uncertain}, {10, 501, Uncertain},
	} {
		if got := fixOf(metresNorth(c.d, c.a, 1), stageOrder(), &r).cur.State; got != c.want {
			t.Errorf("%.1f m from home, accuracy %.1f: %s, want %s", c.d, c.a, got, c.want)
		}
	}
}

// excuse and late: a pass that covers the fix excuses it; an allowed zone
// excuses a late fix without the visit clock.
func TestStageExcuse(t *testing.T) {
	r := DefaultRules()
	p := metresNorth(800, 10, 1000)
	pass := &Pass{ID: "PX-1", ValidFrom: 0, ValidTo: 2000, MaxDistanceM: 1000}
	for _, c := range []struct {
		name    string
		mine    []*Pass
		allowed *geo.Zone
		want    PingState
		pass    string
	}{
		{"no pass", nil, nil, Outside, ""},
		{"a pass that covers it", []*Pass{pass}, nil, Excused, "PX-1"},
		{"a pass that ended", []*Pass{{ID: "PX-2", ValidFrom: 0, ValidTo: 900}}, nil, Outside, ""},
		{"in an allowed zone, late", nil, &geo.Zone{ID: "clinic-1"}, Excused, ""},
	} {
		f := fixOf(p, stageOrder(), &r)
		f.mine, f.allowed = c.mine, c.allowed
		var row Track
		f.late(p, &r, &row)
		if f.cur.State != c.want || row.PassID != c.pass {
			t.Errorf("%s: %s under %q, want %s under %q", c.name, f.cur.State, row.PassID, c.want, c.pass)
		}
	}
}

// visit: the allowed zone's clock runs over consecutive outside fixes in
// one zone and excuses them until max_minutes; a fix at home ends it.
func TestStageVisit(t *testing.T) {
	r := DefaultRules()
	clinic := &geo.Zone{ID: "clinic-1", MaxMinutes: 30}
	var st State
	for _, c := range []struct {
		min     float64
		allowed *geo.Zone
		d       float64
		want    PingState
	}{
		{0, clinic, 800, Excused}, {30, clinic, 800, Excused}, {31, clinic, 800, Outside},
		{32, nil, 0, Inside}, {33, clinic, 800, Excused}, // home ended the visit; a new one starts
	} {
		p := metresNorth(c.d, 10, int64(c.min*60_000))
		f := fixOf(p, stageOrder(), &r)
		f.allowed = c.allowed
		st.visit(p, &f)
		if f.cur.State != c.want {
			t.Errorf("minute %.0f: %s, want %s", c.min, f.cur.State, c.want)
		}
	}
}

// gap: a silence longer than signal_timeout is lost (with its check-in
// request) and the ping that ends it restores the signal.
func TestStageGap(t *testing.T) {
	r := DefaultRules()
	o := stageOrder()
	st := State{Last: Evidence{TS: 1}}
	if ev := st.gap(metresNorth(0, 10, 1+29*60_000), o, Evidence{}, &r, nil); len(ev) != 0 {
		t.Errorf("a silence under the timeout gave %d events", len(ev))
	}
	ev := st.gap(metresNorth(0, 10, 1+int64(31*time.Minute/time.Millisecond)), o, Evidence{}, &r, nil)
	var types []string
	for _, e := range ev {
		types = append(types, e.Type.String())
	}
	if len(types) != 3 || types[0] != "signal_lost" || types[1] != "checkin_requested" || types[2] != "signal_restored" {
		t.Errorf("a silence past the timeout gave %v", types)
	}
}
