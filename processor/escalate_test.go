package processor_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/qfence/qfence/processor"
)

// breach_escalated (contract 2): a breach still open escalate_after after
// its breach_started, at breach_started.at + escalate_after, noticed by the
// next ping or by the watermark. With breach_after 5m: out at 0, breach at 5,
// escalation due at 5 + 15 = 20.
func TestBreachEscalation(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
		want  string
	}{
		{"still out after escalate_after: escalated at breach_started.at + escalate_after, by the next ping",
			pings(out(0), out(5), out(12), out(19), out(21), out(30)),
			"p1:breach_started@5(0) p1:breach_escalated@20(0)"},
		{"back one ping before it: no escalation",
			pings(out(0), out(5), in(19), in(19.5), in(25)),
			"p1:breach_started@5(0) p1:breach_ended@19.5(0..19)"},
		{"a return that starts exactly at it: no escalation",
			pings(out(0), out(5), in(20), in(21)),
			"p1:breach_started@5(0) p1:breach_ended@21(0..20)"},
		{"a return broken by an outside ping: escalated after all",
			pings(out(0), out(5), in(18), out(19), in(25), in(26)),
			"p1:breach_started@5(0) p1:breach_escalated@20(0) p1:breach_ended@26(0..25)"},
		{"a silent patient is escalated by the watermark (another patient's pings)",
			[]step{{ping: &[]tping{out(0)}[0]}, {ping: &[]tping{out(5)}[0]}, {ping: &[]tping{of("p2", in(10))}[0]}, {ping: &[]tping{of("p2", in(25))}[0]}, {sweep: true}},
			"p1:breach_started@5(0) p1:breach_escalated@20(0)"},
		{"escalated once, however long the breach lasts",
			pings(out(0), out(5), out(21), out(40), out(60), in(70), in(71)),
			"p1:breach_started@5(0) p1:breach_escalated@20(0) p1:breach_ended@71(0..70)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, events := runRules(t, processor.DefaultRules(), nil, tt.steps)
			var got []string
			for _, e := range events {
				if !strings.Contains(e, "signal") && !strings.Contains(e, "checkin") {
					got = append(got, e)
				}
			}
			if s := strings.Join(got, " "); s != tt.want {
				t.Errorf("events:\n got  %s\n want %s", s, tt.want)
			}
		})
	}
}

// The escalation quotes the breach's pings so far, carries its confidence,
// and survives a checkpoint between breach_started and its escalation.
func TestEscalationEvidenceSurvivesARestore(t *testing.T) {
	book := processor.NewOrderBook()
	book.Put(&processor.Order{PatientID: "p1", Home: home, RadiusM: 50, StartsAt: t0 - 3600_000, EndsAt: math.MaxInt64})
	r := processor.DefaultRules()
	r.EscalateAfter = 10 * time.Minute
	a := processor.NewEngine(r, book)
	run := func(eng *processor.Engine, ts ...tping) (ev []processor.Event) {
		for _, tp := range ts {
			p := ping(tp)
			ev, _, _ = eng.Process(&p, nil, ev)
		}
		return ev
	}
	run(a, out(0), out(5), out(8))
	b := processor.NewEngine(r, book)
	a.Snapshot(func(id string, state []byte) {
		if err := b.Restore(id, state); err != nil {
			t.Fatal(err)
		}
	})
	ev := run(b, out(12), out(16))
	if len(ev) != 1 || ev[0].Type != processor.BreachEscalated || ev[0].At != t0+15*60_000 {
		t.Fatalf("after the restore: %v", ev)
	}
	e := ev[0]
	if len(e.Evidence) != 4 || e.Evidence[0].TS != t0 || e.Evidence[3].TS != t0+12*60_000 || e.Confidence == nil || e.Confidence.OutsidePings != 2 {
		t.Errorf("evidence %d pings (first %d, last %d), confidence %+v", len(e.Evidence), e.Evidence[0].TS, e.Evidence[len(e.Evidence)-1].TS, e.Confidence)
	}
}
