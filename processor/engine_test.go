package processor_test

import (
	"math"
	"testing"

	"github.com/qfence/qfence/processor"
)

// The engine keeps the order of a patient's last ping in the patient's
// state and uses it without asking the book; a replaced or revoked order
// must still take effect on the very next ping.
func TestEngineSeesOrderChangesOnTheNextPing(t *testing.T) {
	book := processor.NewOrderBook()
	put := func(radius float64) {
		book.Put(&processor.Order{PatientID: "p1", Home: home, RadiusM: radius, StartsAt: t0 - 3600_000, EndsAt: math.MaxInt64})
	}
	put(50)
	eng := processor.NewEngine(processor.DefaultRules(), book)
	step := func(tp tping) (processor.Outcome, processor.Track) {
		p := ping(tp)
		_, out, tr := eng.Process(&p, nil, nil)
		return out, tr
	}
	if out, tr := step(at(0, 300, 10)); out != processor.Accepted || tr.State != processor.Outside {
		t.Fatalf("300 m out with a 50 m radius: %v %v, want accepted outside", out, tr.State)
	}
	put(1000) // the home circle grows: the next ping is inside
	if n := book.Len(); n != 1 {
		t.Fatalf("a replaced order counts %d orders, want 1", n)
	}
	if out, tr := step(at(1, 300, 10)); out != processor.Accepted || tr.State != processor.Inside {
		t.Fatalf("after the order grew to 1 km: %v %v, want accepted inside", out, tr.State)
	}
	book.Revoke([]byte("p1"))
	book.Revoke([]byte("nobody"))
	if n := book.Len(); n != 0 {
		t.Fatalf("after the revocations the book counts %d orders, want 0", n)
	}
	if out, _ := step(at(2, 300, 10)); out != processor.NoOrder {
		t.Fatalf("after the order was revoked: %v, want no_order", out)
	}
	put(50) // a new order: used again
	if out, tr := step(at(3, 300, 10)); out != processor.Accepted || tr.State != processor.Outside {
		t.Fatalf("after a new order: %v %v, want accepted outside", out, tr.State)
	}
}

// Under qfence run the watermark is capped at the wall clock: one ping
// dated ahead (within max_clock_skew) cannot end another patient's order
// or lose their signal before its time. Replay sets no cap.
func TestAPingFromTheFutureDoesNotMoveTheCappedWatermark(t *testing.T) {
	book := processor.NewOrderBook()
	book.Put(&processor.Order{PatientID: "p1", Home: home, RadiusM: 50, StartsAt: t0 - 3600_000, EndsAt: t0 + 10*60_000})
	book.Put(&processor.Order{PatientID: "p2", Home: home, RadiusM: 50, StartsAt: t0 - 3600_000, EndsAt: math.MaxInt64})
	for _, capped := range []bool{true, false} {
		eng := processor.NewEngine(processor.DefaultRules(), book)
		if capped {
			eng.CapWatermark(t0 + 60_000) // the wall clock
		}
		p := ping(at(0, 0, 10))
		eng.Process(&p, nil, nil)
		p = ping(at(0, 0, 10))
		p.PatientID, p.TS = []byte("p2"), t0+4*3600_000 // hours ahead
		eng.Process(&p, nil, nil)
		want := int64(t0 + 4*3600_000)
		if capped {
			want = t0 + 60_000
		}
		if got := eng.Watermark(); got != want {
			t.Errorf("capped %v: watermark %s, want %s", capped, processor.FormatTS(got), processor.FormatTS(want))
		}
	}
}
