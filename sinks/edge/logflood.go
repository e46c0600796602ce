package edge

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// FloodInterval is how long a repeated warning stays quiet after its first.
const FloodInterval = 10 * time.Second

// maxFloodKeys bounds the warnings remembered at once.
const maxFloodKeys = 1000

// Quiet wraps h so that a flood of bad input never floods the log: of a
// warning or error repeated with the same message and reason, the first
// is logged, the repeats within interval are counted, and one line then
// says how many there were ("… and 101 more like it in the last 10s"),
// when the next such record comes or at the next record of any kind after
// the interval. now is the clock (nil: time.Now).
func Quiet(h slog.Handler, interval time.Duration, now func() time.Time) slog.Handler {
	if now == nil {
		now = time.Now
	}
	return &quiet{inner: h, s: &floodState{interval: interval, now: now, seen: map[floodKey]*floodEntry{}}}
}

type floodKey struct {
	level  slog.Level
	msg    string
	reason string
}

type floodEntry struct {
	start time.Time // the window's first record
	more  int       // records suppressed in the window
}

type floodState struct {
	mu       sync.Mutex
	interval time.Duration
	now      func() time.Time
	seen     map[floodKey]*floodEntry
}

type quiet struct {
	inner slog.Handler
	s     *floodState
}

func (q *quiet) Enabled(ctx context.Context, l slog.Level) bool { return q.inner.Enabled(ctx, l) }

func (q *quiet) WithAttrs(as []slog.Attr) slog.Handler {
	return &quiet{inner: q.inner.WithAttrs(as), s: q.s}
}

func (q *quiet) WithGroup(name string) slog.Handler {
	return &quiet{inner: q.inner.WithGroup(name), s: q.s}
}

func (q *quiet) Handle(ctx context.Context, r slog.Record) error {
	now := q.s.now()
	summaries := q.s.due(now) // what an interval has ended for
	for _, sm := range summaries {
		_ = q.inner.Handle(ctx, sm)
	}
	if r.Level < slog.LevelWarn {
		return q.inner.Handle(ctx, r)
	}
	k := floodKey{level: r.Level, msg: r.Message}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "reason" {
			k.reason = a.Value.String()
			return false
		}
		return true
	})
	q.s.mu.Lock()
	e := q.s.seen[k]
	switch {
	case e != nil && now.Sub(e.start) < q.s.interval:
		e.more++
		q.s.mu.Unlock()
		return nil
	case e == nil && len(q.s.seen) >= maxFloodKeys:
		clear(q.s.seen) // bounded: forget, and log again
	}
	q.s.seen[k] = &floodEntry{start: now}
	q.s.mu.Unlock()
	return q.inner.Handle(ctx, r)
}

// due removes the windows that ended by now and returns a summary record
// for each that suppressed something.
func (s *floodState) due(now time.Time) []slog.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []slog.Record
	for k, e := range s.seen {
		if now.Sub(e.start) < s.interval {
			continue
		}
		delete(s.seen, k)
		if e.more == 0 {
			continue
		}
		r := slog.NewRecord(now, k.level, fmt.Sprintf("%s … and %d more like it in the last %s", k.msg, e.more, s.interval), 0)
		if k.reason != "" {
			r.AddAttrs(slog.String("reason", k.reason))
		}
		r.AddAttrs(slog.Int("repeats", e.more))
		out = append(out, r)
	}
	return out
}
