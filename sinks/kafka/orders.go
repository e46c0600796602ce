package kafka

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
)

// OrdersTable reads the quarantine-orders topic as a global table: every
// partition from the beginning, with no consumer group. It is ready once it
// has read up to the end offsets it saw at start; then it keeps tailing.
type OrdersTable struct {
	Kafka    *Client
	Book     *processor.OrderBook
	Zones    func() *geo.Zones
	Producer pipeline.Producer // for the dead letters
	Metrics  *pipeline.Metrics
	Log      *slog.Logger
	MaxBytes int
	// Archive, when set, hears every order version and revocation applied
	// (the ClickHouse orders table).
	Archive func(pipeline.OrderRow)
	// NewPatient, when set, hears the patient of an order that replaced
	// none (the passes table looks for that patient's passes).
	NewPatient func(patient string)

	loaded atomic.Bool
	// The counters of OrdersApplied, resolved once (every order of a
	// million passes here at start).
	applied, revoked, rejected prometheus.Counter
}

// Loaded reports whether the topic has been read to its end once.
func (o *OrdersTable) Loaded() bool { return o.loaded.Load() }

// Run reads until ctx ends.
func (o *OrdersTable) Run(ctx context.Context) error {
	o.applied = o.Metrics.OrdersApplied.WithLabelValues("applied")
	o.revoked = o.Metrics.OrdersApplied.WithLabelValues("revoked")
	o.rejected = o.Metrics.OrdersApplied.WithLabelValues("rejected")
	return o.Kafka.ReadTable(ctx, o.Kafka.cfg.Topics.Orders, true, o.apply, func() {
		o.loaded.Store(true)
		o.Log.Info("orders loaded", "orders", o.Book.Len())
	})
}

func (o *OrdersTable) apply(m *TableRecord) {
	topic, p := o.Kafka.cfg.Topics.Orders, m.Partition
	if m.Tombstone {
		if old := o.Book.Revoke(m.Key); old != nil {
			o.revoked.Inc()
			if o.Archive != nil {
				o.Archive(pipeline.OrderRow{Order: old, Revoked: true, Received: m.Time})
			}
		}
		o.Metrics.ActiveOrders.Set(float64(o.Book.Len()))
		return
	}
	ord, err := processor.DecodeOrder(m.Key, m.Value, o.MaxBytes, o.Zones())
	if err != nil {
		rj, _ := err.(*processor.Reject)
		o.rejected.Inc()
		o.Log.Warn("order rejected", "partition", p, "offset", m.Offset, "reason", rj.Reason)
		deadLetter(o.Producer, o.Log, pipeline.DeadLetter(o.Kafka.cfg.Topics.OrdersDLQ, topic, p, m.Offset, m.Key, m.Value, rj))
		return
	}
	if old := o.Book.Put(ord); old == nil && o.NewPatient != nil {
		o.NewPatient(ord.PatientID)
	}
	if o.Archive != nil {
		o.Archive(pipeline.OrderRow{Order: ord, Received: m.Time})
	}
	o.applied.Inc()
	o.Metrics.ActiveOrders.Set(float64(o.Book.Len()))
}

// deadLetter produces one dead letter; a failure (only when stopping) is
// logged: the table is read again at the next start.
func deadLetter(p pipeline.Producer, log *slog.Logger, r pipeline.Record) {
	p.Produce(context.Background(), []pipeline.Record{r}, func(err error) {
		if err != nil {
			log.Error("dead letter not written", "topic", r.Topic, "err", err)
		}
	})
}
