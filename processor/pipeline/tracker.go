package pipeline

import (
	"sync"

	"github.com/qfence/qfence/processor"
)

// Batch is one partition's batch of messages in flight: its rows, events
// and dead letters are with the sinks, and its offsets may be committed once
// all of them are acknowledged and every earlier batch is too.
type Batch struct {
	next    int64                   // the offset after the batch's last message
	pending int                     // acknowledgements still to come
	failed  bool                    // an acknowledgement carried an error: never committable
	states  []processor.StateRecord // the partition's changed states at the end of the batch
	tokens  int64                   // in-flight budget held until the batch is acknowledged
}

// Tracker orders the acknowledgements of one partition's batches. Sinks ack
// in any order; the tracker releases only the contiguous prefix of fully
// acknowledged batches, so a committed offset never skips unacknowledged
// work. It is safe for concurrent use: acks arrive on the sinks' goroutines.
type Tracker struct {
	mu    sync.Mutex
	queue []*Batch
	wake  chan struct{}
}

// NewTracker returns an empty tracker.
func NewTracker() *Tracker {
	return &Tracker{wake: make(chan struct{}, 1)} // size 1: a pending wake-up is enough, more would be the same one
}

// Wake is signalled after an acknowledgement that may have made a prefix ready.
func (t *Tracker) Wake() <-chan struct{} { return t.wake }

// Add registers a batch that expects `pending` acknowledgements.
func (t *Tracker) Add(next int64, pending int, states []processor.StateRecord, tokens int64) *Batch {
	b := &Batch{next: next, pending: pending, states: states, tokens: tokens}
	t.mu.Lock()
	t.queue = append(t.queue, b)
	t.mu.Unlock()
	return b
}

// Ack records one acknowledgement of b; err marks the batch failed.
func (t *Tracker) Ack(b *Batch, err error) {
	t.mu.Lock()
	b.pending--
	if err != nil {
		b.failed = true
	}
	if b.pending < 0 {
		t.mu.Unlock()
		panic("BUG: batch acknowledged more often than it was sent")
	}
	t.mu.Unlock()
	t.poke()
}

func (t *Tracker) poke() { signal(t.wake) }

// Ready pops the acknowledged prefix: the offset to commit after it (0 and
// false if none), and appends to dst the states of its batches to
// checkpoint first, in order (later records of a key supersede earlier
// ones).
func (t *Tracker) Ready(dst [][]processor.StateRecord) (next int64, states [][]processor.StateRecord, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for n < len(t.queue) && t.queue[n].pending == 0 && !t.queue[n].failed {
		next = t.queue[n].next
		dst = append(dst, t.queue[n].states)
		n++
	}
	clear(t.queue[:n])
	t.queue = t.queue[n:]
	return next, dst, n > 0
}

// InFlight is the number of batches not yet released.
func (t *Tracker) InFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.queue)
}

// Failed reports whether some batch can never be committed.
func (t *Tracker) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, b := range t.queue {
		if b.failed {
			return true
		}
	}
	return false
}
