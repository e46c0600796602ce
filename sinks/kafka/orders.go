package kafka

import (
	"context"
	"log/slog"
	"maps"
	"slices"
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
	// Archived, when set with Archive, calls done once everything handed
	// to Archive before it is stored (the sink's next flush). The offsets
	// so stored are committed for the group <kafka.group_id>-orders-archive,
	// and a later start hands Archive only the records after them: an
	// instance holding ten million orders no longer stores them all again
	// at every start (that cost 12 s of a 38 s start and 420 MiB of peak
	// RSS, BENCHMARKS.md). Without it every record is archived at every
	// read, which is safe too (the rows collapse).
	Archived func(done func(error))
	// NewPatient, when set, hears the patient of an order that replaced
	// none (the passes table looks for that patient's passes).
	NewPatient func(patient string)

	loaded atomic.Bool
	once   sync.Once
	// archive tracks, per partition, the offset from which records are
	// archived (what the archive group committed) and the offset after the
	// last record handed to Archive.
	archiveMu   sync.Mutex
	archiveFrom map[int]int64
	archiveNext map[int]int64
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

// ArchiveGroup is the consumer group whose offsets of the orders topic say
// what the archive has stored.
func (o *OrdersTable) ArchiveGroup() string { return o.Kafka.cfg.GroupID + "-orders-archive" }

// archiveFromStored learns where the archive stopped, for partitions
// (all when nil). Without Archived, or when the group cannot be read, it
// archives from the start.
func (o *OrdersTable) archiveFromStored(ctx context.Context, n int, partitions ...int) {
	if o.Archive == nil || o.Archived == nil {
		return
	}
	from, err := o.Kafka.groupOffsets(ctx, o.ArchiveGroup(), o.Kafka.cfg.Topics.Orders, n)
	if err != nil {
		o.Log.Warn("the orders archive's offsets could not be read: every order is archived again (the rows collapse)", "err", err)
		return
	}
	o.archiveMu.Lock()
	defer o.archiveMu.Unlock()
	if o.archiveFrom == nil {
		o.archiveFrom, o.archiveNext = map[int]int64{}, map[int]int64{}
	}
	for p, off := range from {
		if len(partitions) == 0 || slices.Contains(partitions, p) {
			o.archiveFrom[p] = max(off, 0)
		}
	}
}

// archive hands the row of record m to Archive unless an earlier start
// stored it.
func (o *OrdersTable) archive(m *TableRecord, row pipeline.OrderRow) {
	if o.Archive == nil {
		return
	}
	o.archiveMu.Lock()
	skip := m.Offset < o.archiveFrom[m.Partition]
	if !skip && o.archiveNext != nil {
		o.archiveNext[m.Partition] = m.Offset + 1
	}
	o.archiveMu.Unlock()
	if !skip {
		o.Archive(row)
	}
}

// RunArchive commits, every few seconds, the offsets of the orders the
// archive has stored (see Archived), until ctx ends.
func (o *OrdersTable) RunArchive(ctx context.Context) error {
	if o.Archive == nil || o.Archived == nil {
		return nil
	}
	t := time.NewTicker(archiveCommitEvery)
	defer t.Stop()
	committed := map[int]int64{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		o.archiveMu.Lock()
		next := maps.Clone(o.archiveNext)
		o.archiveMu.Unlock()
		maps.DeleteFunc(next, func(p int, off int64) bool { return committed[p] == off })
		if len(next) == 0 {
			continue
		}
		stored := make(chan error, 1)
		o.Archived(func(err error) { stored <- err })
		select {
		case <-ctx.Done():
			return nil
		case err := <-stored:
			if err != nil {
				continue // the sink retries; so do we, next time
			}
		}
		if err := o.Kafka.commitAs(ctx, o.ArchiveGroup(), o.Kafka.cfg.Topics.Orders, next); err != nil {
			if ctx.Err() == nil {
				o.Log.Warn("committing the orders archive's offsets failed; retrying (a start meanwhile archives those orders again)", "err", err)
			}
			continue
		}
		maps.Copy(committed, next)
	}
}

// archiveCommitEvery spaces the commits of the orders archive's offsets.
const archiveCommitEvery = 5 * time.Second

// Run reads until ctx ends.
func (o *OrdersTable) Run(ctx context.Context) error {
	o.counters()
	if parts, err := o.Kafka.Partitions(ctx, o.Kafka.cfg.Topics.Orders); err == nil {
		o.archiveFromStored(ctx, parts[o.Kafka.cfg.Topics.Orders])
	}
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
			o.archive(m, pipeline.OrderRow{Order: old, Revoked: true, Received: m.Time})
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
	o.archive(m, pipeline.OrderRow{Order: ord, Received: m.Time})
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
	o.archiveFromStored(ctx, n, p)
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
