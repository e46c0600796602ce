package pipeline

import (
	"errors"
	"testing"

	"github.com/qfence/qfence/processor"
)

func TestTrackerReleasesOnlyTheAcknowledgedPrefix(t *testing.T) {
	tr := NewTracker()
	b1 := tr.Add(10, 2, []processor.StateRecord{{Key: "a", Value: []byte("1")}}, 0)
	b2 := tr.Add(20, 1, []processor.StateRecord{{Key: "a", Value: []byte("2")}}, 0)
	b3 := tr.Add(30, 2, nil, 0)

	tr.Ack(b3, nil) // out of order: nothing is ready
	tr.Ack(b3, nil)
	if _, _, ok := tr.Ready(nil); ok {
		t.Fatal("a later batch made an earlier one committable")
	}
	tr.Ack(b1, nil)
	if _, _, ok := tr.Ready(nil); ok {
		t.Fatal("a half-acknowledged batch was released")
	}
	tr.Ack(b1, nil)
	next, states, ok := tr.Ready(nil)
	if !ok || next != 10 || len(states) != 1 || len(states[0]) != 1 || string(states[0][0].Value) != "1" {
		t.Fatalf("after b1: next %d, states %v, ok %v; want 10 with a=1", next, states, ok)
	}
	tr.Ack(b2, nil)
	next, states, ok = tr.Ready(nil)
	if !ok || next != 30 || len(states) != 2 || len(states[0]) != 1 || string(states[0][0].Value) != "2" || len(states[1]) != 0 {
		t.Fatalf("after b2: next %d, states %v; want 30 (b2 and b3) with a=2", next, states)
	}
	if tr.InFlight() != 0 {
		t.Fatalf("%d batches left", tr.InFlight())
	}
}

func TestTrackerNeverReleasesPastAFailedBatch(t *testing.T) {
	tr := NewTracker()
	b1 := tr.Add(10, 1, nil, 0)
	b2 := tr.Add(20, 1, nil, 0)
	tr.Ack(b2, nil)
	tr.Ack(b1, errors.New("sink gave up"))
	if _, _, ok := tr.Ready(nil); ok {
		t.Fatal("a failed batch was released")
	}
	if !tr.Failed() {
		t.Fatal("Failed() = false with a failed batch")
	}
}
