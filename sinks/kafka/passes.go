package kafka

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
)

// PassesTable reads the passes topic as a global table, like the orders,
// into a PassBook. The topic may carry a whole city's passes, most of them
// for people under no order: it holds only the passes of patients the
// order book knows, so memory grows with the patients, not the residents.
// When an order arrives for a new patient, that patient's passes already
// on the topic are found by a rescan (at most one a minute, reading only
// to the end offsets of its start). Passes that ended more than a day ago
// leave memory: no ping that is not late can use them.
type PassesTable struct {
	Kafka    *Client
	Book     *processor.PassBook
	Orders   *processor.OrderBook
	Decoder  processor.PassDecoder
	Producer pipeline.Producer // for the dead letters
	Metrics  *pipeline.Metrics
	Log      *slog.Logger
	// Archive, when set, hears every pass version and deletion held.
	Archive func(pipeline.PassRow)
	// Now is the wall clock (expiry).
	Now func() time.Time
	// RescanEvery spaces the rescans for new patients (default a minute).
	RescanEvery time.Duration
	// All holds every pass, whoever's (orders.co_partitioned: the book then
	// holds only the orders of this instance's partitions, which change
	// with every rebalance, and a pass must be there before its patient's
	// first ping).
	All bool

	loaded atomic.Bool
	mu     sync.Mutex
	wanted map[string]bool // new patients whose passes a rescan must find
	// recent holds the newest passes of people under no order (at most
	// recentCap, oldest out first), so that an order produced just after
	// its patient's pass finds it at once instead of at the next rescan.
	recent      map[string][]*processor.Pass
	recentQ     []string
	recentBytes int
}

// recentCap and recentMaxBytes bound the passes kept for people under no
// order: about two minutes of a twelve-million city's passes, some 12 MB;
// by bytes too, since a pass may carry up to limits.max_message_bytes of
// strings (60,000 unsigned 3 KB passes once cost 170 MB).
const (
	recentCap      = 20_000
	recentMaxBytes = 16 << 20
)

// passKeep is how long after its end a pass stays in memory.
const passKeep = 24 * time.Hour

// Loaded reports whether the topic has been read to its end once.
func (t *PassesTable) Loaded() bool { return t.loaded.Load() }

// Want asks the next rescan for the passes of a patient whose order just
// arrived (OrdersTable.NewPatient).
func (t *PassesTable) Want(patient string) {
	t.mu.Lock()
	recent := t.forgetRecent(patient)
	if t.loaded.Load() {
		if t.wanted == nil {
			t.wanted = make(map[string]bool)
		}
		t.wanted[patient] = true
	}
	t.mu.Unlock()
	for _, p := range recent {
		err := t.Decoder.Verify(p)
		if err == nil {
			_, err = t.Book.Apply(p)
		}
		if rj, ok := err.(*processor.Reject); ok {
			t.Log.Warn("pass rejected", "reason", rj.Reason) // its message was read before the order: not dead-lettered
			continue
		}
		t.archive(pipeline.PassRow{Pass: *p, Received: t.Now()})
	}
	if len(recent) > 0 {
		t.Metrics.ActivePasses.Set(float64(t.Book.Len()))
	}
}

// keepRecent remembers a pass of someone under no order, in case their
// order is on its way.
func (t *PassesTable) keepRecent(p *processor.Pass) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.recent == nil {
		t.recent = make(map[string][]*processor.Pass)
	}
	t.recent[p.PatientID] = append(t.recent[p.PatientID], p)
	t.recentQ = append(t.recentQ, p.PatientID)
	t.recentBytes += p.Size()
	for len(t.recentQ) > recentCap || t.recentBytes > recentMaxBytes {
		t.forgetRecent(t.recentQ[0])
		t.recentQ = t.recentQ[1:]
	}
}

// forgetRecent drops (and returns) the recent passes of patient; t.mu is
// held.
func (t *PassesTable) forgetRecent(patient string) []*processor.Pass {
	ps := t.recent[patient]
	for _, p := range ps {
		t.recentBytes -= p.Size()
	}
	delete(t.recent, patient)
	return ps
}

// RecentBytes is what the passes of people under no order hold now.
func (t *PassesTable) RecentBytes() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.recentBytes
}

// Run reads the topic, then tails it, expires old passes every ten
// minutes and rescans for new patients every minute, until ctx ends.
func (t *PassesTable) Run(ctx context.Context) error {
	topic := t.Kafka.cfg.Topics.Passes
	outcome := func(o string) prometheus.Counter { return t.Metrics.Passes.WithLabelValues(o) }
	applied, deleted, rejected, notPatient, expired := outcome("applied"), outcome("deleted"), outcome("rejected"), outcome("not_a_patient"), outcome("expired")
	apply := func(m *TableRecord, only map[string]bool) {
		defer func() { t.Metrics.ActivePasses.Set(float64(t.Book.Len())) }()
		if m.Tombstone {
			if only != nil {
				return // a rescan applies only what a new patient needs
			}
			if old := t.Book.Delete(string(m.Key)); old != nil {
				deleted.Inc()
				t.archive(pipeline.PassRow{Pass: *old, Deleted: true, Received: m.Time})
			}
			return
		}
		// While loading (and rescanning), a pass of someone under no order is
		// passed over without a parse: most of a city's passes are. Not one
		// whose pass_id is held: only a message that passes its check may
		// touch a held pass.
		if !t.loaded.Load() || only != nil {
			if id, ok := processor.PassPatient(m.Value); ok && (!t.knows(id) || (only != nil && !only[string(id)])) &&
				t.Book.ByID(string(m.Key)) == nil {
				if only == nil {
					notPatient.Inc()
				}
				return
			}
		}
		// Parse every other pass, verify only those that would touch the
		// book: a signature costs fifty times a parse.
		p, err := t.Decoder.Parse(m.Key, m.Value)
		var prev *processor.Pass
		held := false
		if err == nil {
			prev, held = t.Book.ByID(p.ID), t.knows([]byte(p.PatientID))
			if held || prev != nil {
				err = t.Decoder.Verify(p)
			}
			if err == nil {
				err = processor.CheckVersion(p, prev) // Apply checks again, under the book's lock
			}
		}
		if err == nil && held && (only == nil || only[p.PatientID]) && p.End() >= t.Now().Add(-passKeep).UnixMilli() {
			if _, err = t.Book.Apply(p); err == nil {
				applied.Inc()
				t.archive(pipeline.PassRow{Pass: *p, Received: m.Time})
				return
			}
		}
		if err != nil {
			if only != nil {
				return // dead-lettered when first read
			}
			rj, _ := err.(*processor.Reject)
			rejected.Inc()
			t.Log.Warn("pass rejected", "partition", m.Partition, "offset", m.Offset, "reason", rj.Reason)
			deadLetter(t.Producer, t.Log, pipeline.DeadLetter(t.Kafka.cfg.Topics.PassesDLQ, topic, m.Partition, m.Offset, m.Key, m.Value, rj))
			return
		}
		switch {
		case only != nil && !only[p.PatientID]:
			return
		case !held:
			notPatient.Inc()
			if old := t.Book.Delete(p.ID); old != nil { // a new version, verified, for someone else
				t.archive(pipeline.PassRow{Pass: *old, Deleted: true, Received: m.Time})
			}
			if only == nil && p.End() >= t.Now().UnixMilli() {
				t.keepRecent(p)
			}
		default: // ended more than passKeep ago
			expired.Inc()
			t.Book.Delete(p.ID)
		}
	}
	done := make(chan error, 1)
	go func() {
		done <- t.Kafka.ReadTable(ctx, topic, true, func(m *TableRecord) { apply(m, nil) }, func() {
			t.loaded.Store(true)
			t.Log.Info("passes loaded", "passes", t.Book.Len())
		})
	}()
	if t.RescanEvery <= 0 {
		t.RescanEvery = time.Minute
	}
	rescan := time.NewTicker(t.RescanEvery)
	defer rescan.Stop()
	expiry := time.NewTicker(10 * time.Minute)
	defer expiry.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-expiry.C:
			if n := t.Book.Expire(t.Now().Add(-passKeep).UnixMilli()); n > 0 {
				expired.Add(float64(n))
				t.Metrics.ActivePasses.Set(float64(t.Book.Len()))
			}
		case <-rescan.C:
			t.mu.Lock()
			only := t.wanted
			t.wanted = nil
			t.mu.Unlock()
			if len(only) == 0 {
				continue
			}
			start := time.Now()
			if err := t.Kafka.ReadTable(ctx, topic, false, func(m *TableRecord) { apply(m, only) }, func() {}); err != nil {
				t.Log.Warn("passes rescan for new patients failed; retried at the next", "err", err)
				for p := range only {
					t.Want(p)
				}
				continue
			}
			t.Log.Info("passes rescanned for new patients", "patients", len(only), "took", time.Since(start).Round(time.Millisecond))
		}
	}
}

// knows reports whether the table holds the passes of patient.
func (t *PassesTable) knows(patient []byte) bool { return t.All || t.Orders.Get(patient) != nil }

func (t *PassesTable) archive(r pipeline.PassRow) {
	if t.Archive != nil {
		t.Archive(r)
	}
}
