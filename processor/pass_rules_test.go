package processor_test

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/qfence/qfence/processor"
)

// The pass rule scenarios use the road of the rule tests (rules_test.go):
// a ping is (minute, metres east, accuracy). A pass is [from, to) minutes,
// with a distance bound in metres (0: any) and a revocation minute (0:
// none). A ping's state is shown with +PASS when a pass excused it, and a
// breach event with the pass it carries.

type tpass struct {
	id, patient   string
	from, to, rev float64 // minutes after t0
	maxDist       float64
	purpose       processor.Purpose
}

func pass(id string, from, to, maxDist float64) tpass {
	return tpass{id: id, patient: "p1", from: from, to: to, maxDist: maxDist, purpose: processor.Pharmacy}
}

func (p tpass) pass() *processor.Pass {
	ms := func(min float64) int64 { return t0 + int64(min*60000) }
	out := &processor.Pass{ID: p.id, PatientID: p.patient, Purpose: p.purpose, ValidFrom: ms(p.from), ValidTo: ms(p.to), MaxDistanceM: p.maxDist}
	if p.rev != 0 {
		out.RevokedAt = ms(p.rev)
	}
	return out
}

func runPasses(t *testing.T, passes []tpass, steps []step) (states, events []string) {
	t.Helper()
	book := processor.NewOrderBook()
	for _, id := range []string{"p1", "p2"} {
		book.Put(&processor.Order{PatientID: id, Home: home, RadiusM: 50, District: "district-a", StartsAt: t0 - 24*3600_000, EndsAt: math.MaxInt64})
	}
	pb := processor.NewPassBook()
	for _, p := range passes {
		pb.Put(p.pass())
	}
	eng := processor.NewEngine(processor.DefaultRules(), book)
	eng.UsePasses(pb)
	var ev []processor.Event
	for _, s := range steps {
		switch {
		case s.ping != nil:
			p := ping(*s.ping)
			var outcome processor.Outcome
			var tr processor.Track
			ev, outcome, tr = eng.Process(&p, testZones(), ev)
			st := outcome.String()
			if outcome == processor.Accepted || outcome == processor.Late {
				st = tr.State.String()
				if tr.PassID != "" {
					st += "+" + tr.PassID
				}
				if outcome == processor.Late {
					st += "/late"
				}
			}
			states = append(states, st)
		case s.sweep:
			ev = eng.Sweep(ev)
		}
	}
	for _, e := range ev {
		if e.Type.IsCheckin() {
			continue // TestCheckins has them
		}
		d := describe(e)
		if e.Pass != nil {
			d += fmt.Sprintf(" pass=%s/%s/to%s", e.Pass.ID, e.Pass.Purpose, minute(e.Pass.ValidTo))
		}
		events = append(events, d)
	}
	return states, events
}

func TestPassRules(t *testing.T) {
	tests := []struct {
		name       string
		passes     []tpass
		steps      []step
		wantStates string
		wantEvents string
	}{
		{"a trip within its pass is excused from first to last ping",
			[]tpass{pass("A", 0, 60, 0)},
			pings(in(0), out(5), out(10), out(20), out(30), in(35), in(36)),
			"inside excused+A excused+A excused+A excused+A inside inside", ""},
		{"covered at valid_from, not at valid_to (exclusive)",
			[]tpass{pass("A", 5, 10, 0)},
			pings(in(0), out(5), out(10), out(12), out(16)),
			"inside excused+A outside outside outside",
			"p1:breach_started@16(10) pass=A/pharmacy/to10"},
		{"an overrun is dated from the first uncovered outside ping and carries the pass",
			[]tpass{pass("A", 0, 20, 0)},
			pings(in(0), out(5), out(15), out(22), out(25), out(28), in(40), in(41)),
			"inside excused+A excused+A outside outside outside inside inside",
			"p1:breach_started@28(22) pass=A/pharmacy/to20 p1:breach_ended@41(22..40) pass=A/pharmacy/to20"},
		{"a revoked pass stops covering at revoked_at",
			[]tpass{{id: "A", patient: "p1", from: 0, to: 60, rev: 10, purpose: processor.Grocery}},
			pings(in(0), out(5), out(10), out(13), out(16)),
			"inside excused+A outside outside outside",
			"p1:breach_started@16(10) pass=A/grocery/to60"},
		{"beyond max_distance_m + m the trip is a breach under the pass",
			[]tpass{pass("A", 0, 60, 900)},
			pings(in(0), out(5), out(10), out(16)),
			"inside outside outside outside",
			"p1:breach_started@10(5) pass=A/pharmacy/to60"},
		{"d - a == max_distance_m + m is still covered (accuracy in the patient's favour)",
			[]tpass{pass("A", 0, 60, 900)},
			pings(in(0), at(5, 935, 10), at(6, 935.5, 10)),
			"inside excused+A outside", ""},
		{"of two overlapping passes, the one valid longest is named",
			[]tpass{pass("A", 0, 30, 0), pass("B", 0, 20, 0)},
			pings(in(0), out(5), out(31), out(34), out(37)),
			"inside excused+A outside outside outside",
			"p1:breach_started@37(31) pass=A/pharmacy/to30"},
		{"a pass of another patient excuses nothing",
			[]tpass{{id: "X", patient: "p2", from: 0, to: 60, purpose: processor.Pet}},
			pings(in(0), out(5), out(8), out(11)),
			"inside outside outside outside",
			"p1:breach_started@11(5)"},
		{"a late ping inside an expired pass window is excused and moves nothing",
			[]tpass{pass("A", 0, 10, 0)},
			pings(in(0), in(20), out(5)),
			"inside inside excused+A/late", ""},
		{"a ping at home does not name the pass",
			[]tpass{pass("A", 0, 60, 0)},
			pings(in(0), in(1)),
			"inside inside", ""},
		{"an uncertain ping is not excused",
			[]tpass{pass("A", 0, 60, 0)},
			pings(in(0), unsure(5)),
			"inside uncertain", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			states, events := runPasses(t, tt.passes, tt.steps)
			if got := strings.Join(states, " "); got != tt.wantStates {
				t.Errorf("states:\n got  %s\n want %s", got, tt.wantStates)
			}
			if got := strings.Join(events, " "); got != tt.wantEvents {
				t.Errorf("events:\n got  %s\n want %s", got, tt.wantEvents)
			}
		})
	}
}

// The pass a run began under survives a checkpoint and restore: the
// breach_ended of a restored engine still names it.
func TestThePassOfABreachSurvivesARestore(t *testing.T) {
	book := processor.NewOrderBook()
	book.Put(&processor.Order{PatientID: "p1", Home: home, RadiusM: 50, StartsAt: t0 - 3600_000, EndsAt: math.MaxInt64})
	pb := processor.NewPassBook()
	pb.Put(pass("A", 0, 20, 0).pass())
	run := func(eng *processor.Engine, ts ...tping) (out []string) {
		var ev []processor.Event
		for _, tp := range ts {
			p := ping(tp)
			ev, _, _ = eng.Process(&p, nil, ev)
		}
		for _, e := range ev {
			if !e.Type.IsCheckin() {
				out = append(out, fmt.Sprintf("%s pass=%v", describe(e), e.Pass != nil && e.Pass.ID == "A"))
			}
		}
		return out
	}
	a := processor.NewEngine(processor.DefaultRules(), book)
	a.UsePasses(pb)
	if got := run(a, in(0), out(5), out(22), out(28)); len(got) != 1 || got[0] != "p1:breach_started@28(22) pass=true" {
		t.Fatalf("before the restore: %v", got)
	}
	b := processor.NewEngine(processor.DefaultRules(), book)
	b.UsePasses(pb)
	a.Snapshot(func(id string, state []byte) {
		if err := b.Restore(id, state); err != nil {
			t.Fatal(err)
		}
	})
	if got := run(b, in(40), in(41)); len(got) != 1 || got[0] != "p1:breach_ended@41(22..40) pass=true" {
		t.Errorf("after the restore: %v", got)
	}
}

// A breach's confidence: the run's outside pings, the smallest
// d - a - (r + m) among them, the run's span; breach_ended repeats it.
func TestBreachConfidence(t *testing.T) {
	book := processor.NewOrderBook()
	book.Put(&processor.Order{PatientID: "p1", Home: home, RadiusM: 50, StartsAt: t0 - 3600_000, EndsAt: math.MaxInt64})
	eng := processor.NewEngine(processor.DefaultRules(), book)
	var ev []processor.Event
	for _, tp := range []tping{in(0), at(5, 1000, 10), at(8, 600, 100), at(11, 900, 10), in(20), in(21)} {
		p := ping(tp)
		ev, _, _ = eng.Process(&p, nil, ev)
	}
	ev = slices.DeleteFunc(ev, func(e processor.Event) bool { return e.Type.IsCheckin() })
	if len(ev) != 2 {
		t.Fatalf("%d events, want breach_started and breach_ended", len(ev))
	}
	for _, e := range ev {
		c := e.Confidence
		if c == nil || c.OutsidePings != 3 || c.DwellS != 360 || math.Abs(float64(c.MinMarginM)-425) > 0.5 { // 600 - 100 - (50 + 25)
			t.Errorf("%s: confidence %+v, want 3 pings, 425 m, 360 s", e.Type, c)
		}
	}
}
