package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/processor"
)

// Partition is everything one partition's loop needs.
type Partition struct {
	ID           int
	Engine       *processor.Engine
	Zones        func() *geo.Zones
	Decoder      processor.PingDecoder
	Fetcher      Fetcher
	Sink         Sink
	Producer     Producer
	Checkpointer Checkpointer
	Committer    Committer
	// InFlight bounds the rows and records waiting for acknowledgement,
	// across all partitions (limits.max_inflight_rows).
	InFlight *semaphore.Weighted
	Topics   Topics
	// Notifier renders the notifications to patients (nil: none).
	Notifier *processor.Notifier
	Metrics  *Metrics
	Log      *slog.Logger // carries the partition already
	// Now is the wall clock (a test may drive it).
	Now func() time.Time
	// MaxBatch bounds a batch; CommitEvery spaces checkpoints and commits;
	// IdleAfter is how long a caught-up partition waits before its
	// watermark follows the wall clock; Tick is how often the loop looks.
	MaxBatch    int
	CommitEvery time.Duration
	IdleAfter   time.Duration
	Tick        time.Duration
	// Blocked is set while the loop waits for in-flight budget (not ready).
	Blocked *atomic.Int32
	// MaxInFlight is the size of InFlight: a batch never asks for more.
	MaxInFlight int64
	// Start is the partition's first offset to consume (the committed one).
	Start int64
	// Clean and Committed are set by Run when it returns: Clean when every
	// batch the engine decided was acknowledged, checkpointed and committed
	// (the engine's state is then exactly the changelog's), Committed the
	// offset it committed last.
	Clean     bool
	Committed int64
}

// Run consumes the partition until ctx ends, then stops fetching, waits
// (up to drain) for what is in flight, checkpoints and commits.
// The patient state must already be restored into Engine.
func (p *Partition) Run(ctx context.Context, drain time.Duration) error {
	fetchCtx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	// The inbox is the next batch being gathered: the fetcher fills it while
	// the loop decides the previous one.
	in := newInbox(p.MaxBatch)
	fetched := make(chan struct{})
	go func() {
		defer close(fetched)
		var msgs []Message
		for {
			var err error
			msgs, err = p.Fetcher.Fetch(fetchCtx, msgs[:0])
			if err != nil {
				in.close(err)
				return
			}
			if !in.put(fetchCtx, msgs) {
				in.close(fetchCtx.Err())
				return
			}
			clear(msgs) // the inbox copied them: drop the references
		}
	}()
	tracker := NewTracker()
	tick := time.NewTicker(p.Tick)
	defer tick.Stop()
	st := &loopState{p: p, tracker: tracker, lastMsg: p.Now(), lastCommit: time.Now(), next: p.Start}
	st.reportOpen()
	defer func() { // the partition leaves with its breaches and circles
		p.Metrics.OpenBreaches.Sub(float64(st.open))
		p.Metrics.KnownMislocations.Sub(float64(st.known))
	}()
	var runErr error
	// A batch dropped while it waited for budget ends the loop: a later
	// batch registered behind it would commit past it (its pings decided,
	// counted and never stored: a two-instance drain lost ~1,700 rows a
	// partition so).
loop:
	for !st.dropped {
		select {
		case <-in.ready:
			batch, closed := in.take(st.batch)
			st.batch = batch
			if len(batch) > 0 {
				if err := st.process(ctx, batch); err != nil {
					runErr = err
					break loop
				}
			}
			if closed {
				break loop
			}
		case <-tracker.Wake():
			st.commit(ctx, false)
		case <-tick.C:
			st.idle(ctx)
			st.commit(ctx, false)
		case <-ctx.Done():
			break loop
		}
	}
	stopFetch()
	<-fetched // the caller closes what the fetcher reads from
	if err := in.failed(); err != nil && runErr == nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
		runErr = fmt.Errorf("fetch partition %d: %w", p.ID, err)
	}
	// Drain: wait for the sinks to acknowledge what is in flight, then
	// checkpoint and commit. The sinks' own contexts outlive ours.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
	defer cancel()
	for tracker.InFlight() > 0 && !tracker.Failed() {
		select {
		case <-tracker.Wake():
			st.collect()
		case <-dctx.Done():
			p.Log.Warn("partition stopped with batches unacknowledged; they will be consumed again",
				"batches", tracker.InFlight())
			st.commit(dctx, true)
			return runErr
		}
	}
	st.commit(dctx, true)
	p.Clean = runErr == nil && !st.dropped && tracker.InFlight() == 0 && len(st.ready) == 0 && st.readyMeta == nil
	p.Committed = max(st.readyNext, p.Start)
	return runErr
}

// inbox hands fetched messages to the partition loop a batch at a time:
// the fetcher appends under a lock and wakes the loop only when the inbox
// was empty, and the loop takes everything at once. A channel of single
// messages cost two goroutine hand-offs per message (BENCHMARKS.md).
type inbox struct {
	mu     sync.Mutex
	buf    []Message
	max    int
	err    error
	closed bool
	ready  chan struct{} // size 1: messages or the end are waiting
	space  chan struct{} // size 1: the loop took a batch
}

func newInbox(max int) *inbox {
	return &inbox{buf: make([]Message, 0, max), max: max, ready: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// put appends msgs, waiting while the inbox is full; false when ctx ended.
func (b *inbox) put(ctx context.Context, msgs []Message) bool {
	for len(msgs) > 0 {
		b.mu.Lock()
		for len(b.buf) >= b.max {
			b.mu.Unlock()
			select {
			case <-b.space:
			case <-ctx.Done():
				return false
			}
			b.mu.Lock()
		}
		n := min(len(msgs), b.max-len(b.buf))
		first := len(b.buf) == 0
		b.buf = append(b.buf, msgs[:n]...)
		b.mu.Unlock()
		msgs = msgs[n:]
		if first {
			signal(b.ready)
		}
	}
	return true
}

// close records why the fetcher stopped.
func (b *inbox) close(err error) {
	b.mu.Lock()
	b.closed, b.err = true, err
	b.mu.Unlock()
	signal(b.ready)
}

// take returns the waiting messages, giving the inbox dst's array to fill
// next, and whether the fetcher has stopped.
func (b *inbox) take(dst []Message) (batch []Message, closed bool) {
	b.mu.Lock()
	batch, b.buf = b.buf, dst[:0]
	closed = b.closed
	b.mu.Unlock()
	signal(b.space)
	return batch, closed
}

func (b *inbox) failed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

type loopState struct {
	p          *Partition
	tracker    *Tracker
	batch      []Message
	events     []processor.Event // one ping's
	out        Output            // the batch's rows, events and notifications
	lastMsg    time.Time
	lastCommit time.Time
	next       int64 // the offset after the last message decided
	open       int   // open breaches last reported to the gauge
	known      int   // known mislocations last reported to theirs
	// ready accumulates the states of released batches until the next
	// checkpoint, one record per key (readyIndex), in order of first change.
	readyNext    int64
	readyMeta    []byte // the newest meta record, checkpointed last
	ready        []processor.StateRecord
	readyIndex   map[string]int32
	readyBatches [][]processor.StateRecord
	// dropped is set when a decided batch was never registered (the loop
	// stopped while it waited for in-flight budget): nothing after it may
	// be registered, and the engine holds state the changelog does not, so
	// it must not be kept.
	dropped bool
}

func (s *loopState) process(ctx context.Context, batch []Message) error {
	p := s.p
	now := p.Now()
	s.lastMsg = now
	zones := p.Zones()
	p.Engine.CapWatermark(now.UnixMilli())
	var (
		ping    processor.Ping
		records []Record
		sources []time.Time // the append time of the ping behind each event record
		counts  [processor.Duplicate + 1]int
	)
	s.out.reset()
	for i := range batch {
		m := &batch[i]
		err := p.Decoder.Decode(m.Value, now.UnixMilli(), &ping)
		if err == nil {
			err = processor.CheckKey(m.Key, &ping)
		}
		if err != nil {
			var rj *processor.Reject
			if !errors.As(err, &rj) {
				return fmt.Errorf("BUG: decoder returned %w", err)
			}
			records = append(records, p.deadLetter(m, rj))
			p.Metrics.Rejected.WithLabelValues(string(rj.Reason)).Inc()
			p.Metrics.Pings.WithLabelValues("rejected").Inc()
			continue
		}
		var outcome processor.Outcome
		var t processor.Track
		s.events, outcome, t = p.Engine.Process(&ping, zones, s.events[:0])
		counts[outcome]++
		if outcome == processor.Accepted || outcome == processor.Late {
			s.out.Rows = append(s.out.Rows, t)
		}
		if t.Checkin.Counted {
			p.Metrics.countedCheckin(p.Engine.Rules())
		}
		records, sources = s.emit(records, sources, m.Time)
	}
	s.reportOpen()
	for o := processor.Accepted; o <= processor.Duplicate; o++ {
		if counts[o] > 0 {
			p.Metrics.Pings.WithLabelValues(o.String()).Add(float64(counts[o]))
		}
	}
	s.next = batch[len(batch)-1].Offset + 1
	return s.submit(ctx, s.next, records, sources)
}

// reportOpen moves the open-breaches and known-mislocations gauges by the
// partition's change.
func (s *loopState) reportOpen() {
	n := s.p.Engine.OpenBreaches()
	s.p.Metrics.OpenBreaches.Add(float64(n - s.open))
	s.open = n
	if k := s.p.Engine.KnownMislocations(); k != s.known {
		s.p.Metrics.KnownMislocations.Add(float64(k - s.known))
		s.known = k
	}
}

// submit hands a batch's rows and records to the sinks and registers it.
func (s *loopState) submit(ctx context.Context, next int64, records []Record, sources []time.Time) error {
	p := s.p
	states := p.Engine.TakeDirty(nil)
	// The meta record says which offset this batch's results cover: a
	// restore resumes after it, without deciding again what was delivered.
	states = append(states, processor.StateRecord{Key: processor.MetaKey, Value: p.Engine.MarshalMeta(next)})
	// A batch never asks for more than the whole budget (a sweep can emit an
	// event for every patient at once), or it would wait forever.
	tokens := min(int64(s.out.Len()+len(records)), p.MaxInFlight)
	if tokens > 0 {
		if !p.InFlight.TryAcquire(tokens) {
			p.Blocked.Add(1)
			err := p.InFlight.Acquire(ctx, tokens)
			p.Blocked.Add(-1)
			if err != nil {
				// Stopping: the batch is not registered, so not committed, and
				// the engine that decided it is ahead of the changelog.
				s.dropped = true
				return nil
			}
		}
	}
	pending := 0
	if s.out.Len() > 0 {
		pending++
	}
	if len(records) > 0 {
		pending++
	}
	b := s.tracker.Add(next, pending, states, tokens)
	if pending == 0 { // nothing to wait for: released in order behind the others
		s.tracker.poke()
		return nil
	}
	release := func(err error) {
		s.tracker.Ack(b, err)
	}
	if tokens > 0 {
		var left atomic.Int32
		left.Store(int32(pending))
		inner := release
		release = func(err error) {
			if left.Add(-1) == 0 {
				p.InFlight.Release(tokens) // once both sinks are done with the batch
			}
			inner(err)
		}
	}
	if s.out.Len() > 0 {
		p.Sink.Write(ctx, &s.out, release)
	}
	if len(records) > 0 {
		p.Producer.Produce(ctx, records, func(err error) {
			if err == nil {
				now := time.Now()
				for _, t := range sources {
					p.Metrics.EventLatency.Observe(now.Sub(t).Seconds())
				}
			}
			release(err)
		})
	}
	return nil
}

// emit turns the events of one step (s.events) into records for the
// violations and notifications topics and rows for the sink; source is
// the append time of the ping behind them, for the latency histogram.
func (s *loopState) emit(records []Record, sources []time.Time, source time.Time) ([]Record, []time.Time) {
	p := s.p
	for j := range s.events {
		e := &s.events[j]
		p.Metrics.Events.WithLabelValues(e.Type.String()).Inc()
		if e.Type == processor.CheckinRejected {
			p.Metrics.Checkins.WithLabelValues("rejected", e.Reason).Inc()
		}
		records = append(records, Record{Topic: p.Topics.Violations, Key: []byte(e.PatientID), Value: e.AppendJSON(nil, p.Engine.Rules())})
		sources = append(sources, source)
		if p.Notifier == nil {
			continue
		}
		n := len(s.out.Notifications)
		s.out.Notifications = p.Notifier.For(e, s.out.Notifications)
		for _, note := range s.out.Notifications[n:] {
			p.Metrics.Notifications.WithLabelValues(note.Kind.String()).Inc()
			records = append(records, Record{Topic: p.Topics.Notifications, Key: []byte(note.PatientID), Value: note.AppendJSON(nil)})
		}
	}
	s.out.Events = append(s.out.Events, s.events...)
	return records, sources
}

func (o *Output) reset() {
	o.Rows, o.Events, o.Notifications = o.Rows[:0], o.Events[:0], o.Notifications[:0]
}

// deadLetter copies a rejected message unchanged with the contract's headers.
func (p *Partition) deadLetter(m *Message, rj *processor.Reject) Record {
	return DeadLetter(p.Topics.PingsDLQ, p.Topics.Pings, p.ID, m.Offset, m.Key, m.Value, rj)
}

// idle lets a caught-up partition's watermark follow the wall clock, so a
// silent patient loses signal even when nobody pings.
func (s *loopState) idle(ctx context.Context) {
	p := s.p
	now := p.Now()
	if now.Sub(s.lastMsg) < p.IdleAfter || now.UnixMilli() <= p.Engine.Watermark() || !p.Fetcher.CaughtUp(ctx) {
		return
	}
	s.events = p.Engine.Advance(now.UnixMilli(), s.events[:0])
	s.out.reset()
	records, sources := s.emit(nil, nil, now)
	s.reportOpen()
	// The events and the new watermark ride on a batch without messages, so
	// they are checkpointed in order behind everything before them.
	if err := s.submit(ctx, s.next, records, sources); err != nil {
		p.Log.Warn("idle watermark not submitted", "err", err)
	}
}

// collect moves released batches into the pending checkpoint.
func (s *loopState) collect() {
	next, batches, ok := s.tracker.Ready(s.readyBatches[:0])
	if !ok {
		return
	}
	if s.readyIndex == nil {
		s.readyIndex = make(map[string]int32)
	}
	for _, states := range batches {
		for _, r := range states {
			if r.Key == processor.MetaKey {
				s.readyMeta = r.Value
				continue
			}
			if i, seen := s.readyIndex[r.Key]; seen {
				s.ready[i].Value = r.Value
				continue
			}
			s.readyIndex[r.Key] = int32(len(s.ready))
			s.ready = append(s.ready, r)
		}
	}
	clear(batches)
	s.readyBatches = batches[:0]
	s.readyNext = max(s.readyNext, next)
}

// commit checkpoints the released states, then commits their offset: at
// most every CommitEvery unless forced. A failure keeps them for next time.
func (s *loopState) commit(ctx context.Context, force bool) {
	p := s.p
	s.collect()
	// Pacing is real time, not p.Now: that clock is the watermark's, which a
	// test may stop.
	if (len(s.ready) == 0 && s.readyMeta == nil) || (!force && time.Since(s.lastCommit) < p.CommitEvery) {
		return
	}
	// The meta record goes last: the changelog partition keeps order, so a
	// restore that finds it finds every state it covers.
	records := s.ready
	if s.readyMeta != nil {
		records = append(records, processor.StateRecord{Key: processor.MetaKey, Value: s.readyMeta})
	}
	if err := p.Checkpointer.Checkpoint(ctx, p.ID, records); err != nil {
		p.Log.Warn("checkpoint failed; will retry", "err", err)
		return
	}
	if s.readyNext > p.Start {
		if err := p.Committer.Commit(ctx, p.ID, s.readyNext); err != nil {
			p.Log.Warn("offset commit failed; will retry", "err", err)
			return
		}
	}
	s.lastCommit = time.Now()
	s.readyMeta = nil
	clear(s.readyIndex)
	clear(s.ready)
	s.ready = s.ready[:0]
}
