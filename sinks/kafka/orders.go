package kafka

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

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
	once   sync.Once
	// The counters of OrdersApplied, resolved once (every order of a
	// million passes here at start).
	applied, revoked, rejected prometheus.Counter
}

// Loaded reports whether the topic has been read to its end once.
func (o *OrdersTable) Loaded() bool { return o.loaded.Load() }

// counters resolves the counters of OrdersApplied.
func (o *OrdersTable) counters() {
	o.once.Do(func() {
		o.applied = o.Metrics.OrdersApplied.WithLabelValues("applied")
		o.revoked = o.Metrics.OrdersApplied.WithLabelValues("revoked")
		o.rejected = o.Metrics.OrdersApplied.WithLabelValues("rejected")
	})
}

// Run reads until ctx ends.
func (o *OrdersTable) Run(ctx context.Context) error {
	o.counters()
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

// Hold reads partition p of the orders topic up to the end offset it has
// now and returns (orders.co_partitioned: before the pings partition of the
// same number decides its first ping); then it tails the partition until
// release, which stops the tail and drops the partition's orders from the
// book. An order whose key belongs to another partition (a producer
// without the Java client's partitioner) is skipped with a warning: its
// patient's pings are elsewhere.
func (o *OrdersTable) Hold(ctx context.Context, p int) (release func(), err error) {
	o.counters()
	topic := o.Kafka.cfg.Topics.Orders
	parts, err := o.Kafka.Partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	n := parts[topic]
	ends, err := o.Kafka.EndOffsets(ctx, topic, n)
	if err != nil {
		return nil, err
	}
	owns := partitionOwner(n, p)
	start := time.Now()
	tctx, cancel := context.WithCancel(ctx)
	loaded, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- o.Kafka.readTablePartition(tctx, topic, p, ends[p], true, func(m *TableRecord) {
			if !owns(m.Key) {
				o.rejected.Inc()
				o.Log.Warn("order skipped: its key belongs to another partition (produce orders with the Java client's partitioner, murmur2, as the pings)",
					"partition", p, "offset", m.Offset)
				return
			}
			o.apply(m)
		}, func() { close(loaded) })
	}()
	drop := func() {
		cancel()
		<-done
		dropped := o.Book.Drop(func(id string) bool { return owns([]byte(id)) })
		o.Metrics.ActiveOrders.Set(float64(o.Book.Len()))
		o.Log.Info("orders of a released partition dropped", "partition", p, "orders", dropped)
	}
	select {
	case <-loaded:
		o.Log.Info("orders of a partition loaded", "partition", p, "orders_held", o.Book.Len(), "took", time.Since(start).Round(time.Millisecond))
		return drop, nil
	case err := <-done:
		cancel()
		if err == nil {
			err = ctx.Err()
		}
		o.Book.Drop(func(id string) bool { return owns([]byte(id)) })
		return nil, err
	}
}

// partitionOwner says whether a key is in partition p of n by the Java
// client's partitioner (murmur2): where a patient's pings and order sit.
func partitionOwner(n, p int) func(key []byte) bool {
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	bal := &kafka.Murmur2Balancer{}
	return func(key []byte) bool { return bal.Balance(kafka.Message{Key: key}, parts...) == p }
}
