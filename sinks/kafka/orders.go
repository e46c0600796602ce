package kafka

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
	"github.com/qfence/qfence/sinks/edge"
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
	topic := o.Kafka.cfg.Topics.Orders
	o.applied = o.Metrics.OrdersApplied.WithLabelValues("applied")
	o.revoked = o.Metrics.OrdersApplied.WithLabelValues("revoked")
	o.rejected = o.Metrics.OrdersApplied.WithLabelValues("rejected")
	parts, err := o.Kafka.Partitions(ctx, topic)
	if err != nil {
		return err
	}
	n := parts[topic]
	ends, err := o.Kafka.EndOffsets(ctx, topic, n)
	if err != nil {
		return err
	}
	var left atomic.Int32
	left.Store(int32(n))
	caughtUp := func() {
		if left.Add(-1) == 0 {
			o.loaded.Store(true)
			o.Log.Info("orders loaded", "orders", o.Book.Len())
		}
	}
	eg, ctx := errgroup.WithContext(ctx)
	for p := 0; p < n; p++ {
		eg.Go(func() error { return o.readPartition(ctx, topic, p, ends[p], caughtUp) })
	}
	if n == 0 {
		o.loaded.Store(true)
	}
	return eg.Wait()
}

func (o *OrdersTable) readPartition(ctx context.Context, topic string, p int, end int64, caughtUp func()) error {
	r, err := o.Kafka.reader(topic, p, kafka.FirstOffset)
	if err != nil {
		return err
	}
	defer r.Close()
	if end == 0 {
		caughtUp()
	}
	for attempt := 0; ; {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// The broker is away: the reader keeps its offset and reconnects.
			if attempt%20 == 0 {
				o.Log.Warn("reading orders failed; retrying", "partition", p, "err", err)
			}
			_ = edge.Sleep(ctx, edge.Backoff(attempt))
			attempt++
			continue
		}
		attempt = 0
		o.apply(topic, p, &m)
		if m.Offset == end-1 {
			caughtUp()
		}
	}
}

func (o *OrdersTable) apply(topic string, p int, m *kafka.Message) {
	if m.Value == nil {
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
