package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/processor"
)

// The loop's own ports, in memory: these are the pipeline's interfaces,
// not Kafka's or ClickHouse's (those are tested against real servers).
type oneMessage struct {
	once sync.Once
	m    Message
}

func (f *oneMessage) Fetch(ctx context.Context, dst []Message) ([]Message, error) {
	sent := true
	f.once.Do(func() { sent = false })
	if !sent {
		return append(dst, f.m), nil
	}
	<-ctx.Done()
	return dst, ctx.Err()
}

func (f *oneMessage) CaughtUp(context.Context) bool { return true }

type acks struct{}

func (acks) Write(_ context.Context, _ *Output, done func(error)) {
	done(nil)
}
func (acks) Produce(_ context.Context, _ []Record, done func(error)) { done(nil) }

type failingCheckpoints struct{ calls atomic.Int32 }

func (c *failingCheckpoints) Checkpoint(context.Context, int, []processor.StateRecord) error {
	c.calls.Add(1)
	return errors.New("the changelog is away")
}

func (*failingCheckpoints) Commit(context.Context, int, int64) error { return nil }

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A partition's log lines name the partition once: the logger the group
// hands over carries it already (lines once read "partition=0
// partition=0").
func TestAPartitionsLogLinesNameItOnce(t *testing.T) {
	book := processor.NewOrderBook()
	book.Put(&processor.Order{PatientID: "p-1", Home: [2]float64{37.6, 55.7}, RadiusM: 50, StartsAt: 0, EndsAt: math.MaxInt64})
	var logs syncBuffer
	cp := &failingCheckpoints{}
	var blocked atomic.Int32
	p := &Partition{ID: 3, Engine: processor.NewEngine(processor.DefaultRules(), book), Zones: func() *geo.Zones { return nil },
		Decoder: processor.PingDecoder{MaxBytes: 4096, DefaultAccuracy: 50},
		Fetcher: &oneMessage{m: Message{Offset: 0, Key: []byte("p-1"), Value: []byte(`{"patient_id":"p-1","ts":1775124000000,"lat":55.7,"lon":37.6}`), Time: time.Now()}},
		Sink:    acks{}, Producer: acks{}, Checkpointer: cp, Committer: cp,
		InFlight: semaphore.NewWeighted(1000), MaxInFlight: 1000, Blocked: &blocked,
		Topics:  Topics{Pings: "pings", Violations: "violations", PingsDLQ: "pings-dlq"},
		Metrics: NewMetrics(prometheus.NewRegistry()), Log: slog.New(slog.NewTextHandler(&logs, nil)).With("partition", 3),
		Now: func() time.Time { return time.UnixMilli(1775124060000) }, MaxBatch: 100, CommitEvery: time.Millisecond, IdleAfter: time.Hour, Tick: 10 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, time.Second) }()
	deadline := time.Now().Add(10 * time.Second)
	for cp.calls.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if cp.calls.Load() < 2 {
		t.Fatal("the loop never tried to checkpoint")
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	for _, l := range lines {
		if n := strings.Count(l, "partition="); n != 1 {
			t.Errorf("%d partition attributes in %q", n, l)
		}
	}
	if !strings.Contains(logs.String(), "checkpoint failed") {
		t.Errorf("no warning logged: %s", logs.String())
	}
}

// A loop stopped while a decided batch waits for in-flight budget drops
// that batch (it is consumed again), so its engine has seen pings the
// changelog has not: it is not clean, or a group that kept the engine for
// a quick return would take the re-read pings for duplicates and never
// store them (a two-instance drain lost exactly that many rows).
func TestALoopStoppedWaitingForBudgetIsNotClean(t *testing.T) {
	book := processor.NewOrderBook()
	book.Put(&processor.Order{PatientID: "p-1", Home: [2]float64{37.6, 55.7}, RadiusM: 50, StartsAt: 0, EndsAt: math.MaxInt64})
	budget := semaphore.NewWeighted(1)
	if !budget.TryAcquire(1) { // the other partitions hold the whole budget
		t.Fatal("a fresh semaphore refused its budget")
	}
	var blocked atomic.Int32
	p := &Partition{ID: 0, Engine: processor.NewEngine(processor.DefaultRules(), book), Zones: func() *geo.Zones { return nil },
		Decoder: processor.PingDecoder{MaxBytes: 4096, DefaultAccuracy: 50},
		Fetcher: &oneMessage{m: Message{Offset: 7, Key: []byte("p-1"), Value: []byte(`{"patient_id":"p-1","ts":1775124000000,"lat":55.7,"lon":37.6}`), Time: time.Now()}},
		Sink:    acks{}, Producer: acks{}, Checkpointer: okCheckpoints{}, Committer: okCheckpoints{},
		InFlight: budget, MaxInFlight: 1, Blocked: &blocked, Start: 7,
		Topics:  Topics{Pings: "pings", Violations: "violations", PingsDLQ: "pings-dlq"},
		Metrics: NewMetrics(prometheus.NewRegistry()), Log: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return time.UnixMilli(1775124060000) }, MaxBatch: 100, CommitEvery: time.Millisecond, IdleAfter: time.Hour, Tick: 10 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, time.Second) }()
	deadline := time.Now().Add(10 * time.Second)
	for blocked.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if blocked.Load() == 0 {
		t.Fatal("the batch never waited for budget")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p.Engine.Patients() != 1 {
		t.Fatalf("the engine holds %d patients; the ping was not decided, so the test proves nothing", p.Engine.Patients())
	}
	if p.Clean {
		t.Fatal("a loop that dropped a decided batch says its engine is the changelog's")
	}
	if p.Committed != 7 {
		t.Fatalf("committed %d; the dropped batch must be consumed again from 7", p.Committed)
	}
}

type okCheckpoints struct{}

func (okCheckpoints) Checkpoint(context.Context, int, []processor.StateRecord) error { return nil }
func (okCheckpoints) Commit(context.Context, int, int64) error                       { return nil }

// batches hands out its batches one Fetch each, then waits; calls counts
// the Fetch calls (the n+1-th starts once the n-th batch is in the inbox).
type batches struct {
	mu    sync.Mutex
	next  int
	all   [][]Message
	calls atomic.Int32
}

func (f *batches) Fetch(ctx context.Context, dst []Message) ([]Message, error) {
	f.calls.Add(1)
	f.mu.Lock()
	if f.next < len(f.all) {
		b := f.all[f.next]
		f.next++
		f.mu.Unlock()
		return append(dst, b...), nil
	}
	f.mu.Unlock()
	<-ctx.Done()
	return dst, ctx.Err()
}

func (f *batches) CaughtUp(context.Context) bool { return true }

type commits struct {
	mu   sync.Mutex
	last int64
}

func (c *commits) Checkpoint(context.Context, int, []processor.StateRecord) error { return nil }
func (c *commits) Commit(_ context.Context, _ int, next int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = max(c.last, next)
	return nil
}

// A batch dropped while it waits for budget is the last the loop decides:
// a smaller batch behind it that fits the budget must not be registered,
// or its commit would skip the dropped one. (The loop's select picks at
// random between the stop and the next batch, so the scenario runs often
// enough that a loop that went on would be caught.)
func TestNothingIsCommittedPastADroppedBatch(t *testing.T) {
	msg := func(off int64, ts int64) Message {
		return Message{Offset: off, Key: []byte("p-1"), Time: time.Now(),
			Value: fmt.Appendf(nil, `{"patient_id":"p-1","ts":%d,"lat":55.7,"lon":37.6}`, ts)}
	}
	for run := range 40 {
		book := processor.NewOrderBook()
		book.Put(&processor.Order{PatientID: "p-1", Home: [2]float64{37.6, 55.7}, RadiusM: 50, StartsAt: 0, EndsAt: math.MaxInt64})
		budget := semaphore.NewWeighted(3)
		if !budget.TryAcquire(2) { // one token free: the first batch (two rows) waits, the second (one) would fit
			t.Fatal("a fresh semaphore refused its budget")
		}
		f := &batches{all: [][]Message{{msg(7, 1775124000000), msg(8, 1775124010000)}, {msg(9, 1775124020000)}}}
		c := &commits{}
		var blocked atomic.Int32
		p := &Partition{ID: 0, Engine: processor.NewEngine(processor.DefaultRules(), book), Zones: func() *geo.Zones { return nil },
			Decoder: processor.PingDecoder{MaxBytes: 4096, DefaultAccuracy: 50}, Fetcher: f,
			Sink: acks{}, Producer: acks{}, Checkpointer: c, Committer: c,
			InFlight: budget, MaxInFlight: 3, Blocked: &blocked, Start: 7,
			Topics:  Topics{Pings: "pings", Violations: "violations", PingsDLQ: "pings-dlq"},
			Metrics: NewMetrics(prometheus.NewRegistry()), Log: slog.New(slog.DiscardHandler),
			Now: func() time.Time { return time.UnixMilli(1775124060000) }, MaxBatch: 2, CommitEvery: time.Millisecond, IdleAfter: time.Hour, Tick: time.Hour}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, time.Second) }()
		deadline := time.Now().Add(10 * time.Second)
		for (blocked.Load() == 0 || f.calls.Load() < 3) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Microsecond)
		}
		if blocked.Load() == 0 || f.calls.Load() < 3 {
			t.Fatalf("run %d: the first batch never waited with the second in the inbox", run)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if c.last > 7 || p.Committed != 7 || p.Clean {
			t.Fatalf("run %d: committed %d (Committed %d, clean %v) past the dropped batch at 7", run, c.last, p.Committed, p.Clean)
		}
	}
}
