package processor_test

import (
	"math"
	"strings"
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

// TakeDirty's records stay as they were taken, whatever the engine does
// next: they wait in memory until their batch is checkpointed while the
// engine goes on deciding (and taking) later batches. A dropped patient's
// record is a tombstone; the others restore to the state taken.
func TestTakenStatesOutliveTheNextTake(t *testing.T) {
	book := processor.NewOrderBook()
	for _, id := range []string{"p1", "p2", "p3"} {
		book.Put(&processor.Order{PatientID: id, Home: home, RadiusM: 50, StartsAt: t0 - 3600_000, EndsAt: math.MaxInt64})
	}
	eng := processor.NewEngine(processor.DefaultRules(), book)
	step := func(tps ...tping) {
		for _, tp := range tps {
			p := ping(tp)
			eng.Process(&p, testZones(), nil)
		}
	}
	step(of("p2", in(0)), of("p1", out(0)), of("p3", in(0)), of("p1", out(1)))
	first := eng.TakeDirty(nil)
	kept := map[string]string{}
	var order []string
	for _, r := range first {
		kept[r.Key], order = string(r.Value), append(order, r.Key)
	}
	if got := strings.Join(order, " "); got != "p2 p1 p3" {
		t.Fatalf("taken in order %q, want the order of first change, p2 p1 p3", got)
	}
	// Every patient changes again, one of them grows an episode, and one is
	// dropped (its order revoked, noticed by the sweep).
	step(of("p1", out(2)), of("p2", out(2)), of("p3", in(2)), of("p2", out(3)), of("p1", in(3)))
	book.Revoke([]byte("p3"))
	eng.Advance(t0+3*3600_000, nil)
	second := eng.TakeDirty(nil)
	for _, r := range first {
		if string(r.Value) != kept[r.Key] {
			t.Errorf("%s's first record changed after the second take", r.Key)
		}
	}
	restored := processor.NewEngine(processor.DefaultRules(), book)
	tombstones := 0
	for _, r := range second {
		if r.Value == nil {
			tombstones++
			if r.Key != "p3" {
				t.Errorf("a tombstone for %s, which still has an order", r.Key)
			}
			continue
		}
		if string(r.Value) == kept[r.Key] {
			t.Errorf("%s's second record equals its first", r.Key)
		}
		if err := restored.Restore(r.Key, r.Value); err != nil {
			t.Errorf("%s's second record does not restore: %v", r.Key, err)
		}
	}
	if tombstones != 1 || len(second) != 3 {
		t.Errorf("second take: %d records, %d tombstones; want 3 and p3's", len(second), tombstones)
	}
	if again := eng.TakeDirty(nil); len(again) != 0 {
		t.Errorf("a take with nothing changed gave %d records", len(again))
	}
}
