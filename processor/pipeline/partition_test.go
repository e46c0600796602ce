package pipeline

import (
	"context"
	"errors"
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
