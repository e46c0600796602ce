package kafka

import (
	"context"
	"log/slog"
	"strconv"
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
	return o.Kafka.ReadTable(ctx, o.Kafka.cfg.Topics.Orders, o.apply, func() {
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
				o.Archive(pipeline.OrderRow{Order: *old, Revoked: true, Received: m.Time})
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
		o.Producer.Produce(context.Background(), []pipeline.Record{{Topic: o.Kafka.cfg.Topics.OrdersDLQ, Key: m.Key, Value: m.Value,
			Headers: []pipeline.Header{
				{Key: "qfence-reason", Value: []byte(rj.Reason)},
				{Key: "qfence-error", Value: []byte(rj.Msg)},
				{Key: "qfence-topic", Value: []byte(topic)},
				{Key: "qfence-partition", Value: strconv.AppendInt(nil, int64(p), 10)},
				{Key: "qfence-offset", Value: strconv.AppendInt(nil, m.Offset, 10)},
			}}}, func(err error) {
			if err != nil {
				o.Log.Error("order dead letter not written", "partition", p, "offset", m.Offset, "err", err)
			}
		})
		return
	}
	o.Book.Put(ord)
	if o.Archive != nil {
		o.Archive(pipeline.OrderRow{Order: *ord, Received: m.Time})
	}
	o.applied.Inc()
	o.Metrics.ActiveOrders.Set(float64(o.Book.Len()))
}
