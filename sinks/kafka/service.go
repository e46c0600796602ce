package kafka

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
	"github.com/qfence/qfence/sinks/edge"
)

// Service is qfence's Kafka side assembled: the orders table, then the
// consumer group with its producer and changelog, over one Sink.
type Service struct {
	cfg      *config.Config
	kafka    *Client
	orders   *OrdersTable
	passes   *PassesTable
	group    *Group
	disps    *Dispositions
	producer *Producer
	log      *slog.Logger
	// unreachable is why the cluster did not answer the last probe (nil
	// when it did): /readyz and every scrape read it, none dials.
	unreachable atomic.Pointer[string]
}

// probeEvery spaces the reachability probes: a broker lost shows in
// readiness within about this, and a probe costs one connection.
const probeEvery = 2 * time.Second

// probe keeps unreachable current until ctx ends.
func (s *Service) probe(ctx context.Context) error {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		if err := s.kafka.Reachable(ctx); err != nil && ctx.Err() == nil {
			why := "kafka unreachable: " + err.Error()
			s.unreachable.Store(&why)
		} else {
			s.unreachable.Store(nil)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Parts are what the daemon builds from the configuration and hands the
// Kafka side, which builds nothing of the kind itself: the rules, the
// notifier, the decoders and the partition loops' settings (PartsOf).
type Parts struct {
	Rules    processor.Rules
	Notifier *processor.Notifier // nil: no notifications
	Pings    processor.PingDecoder
	Passes   processor.PassDecoder
	Loop     config.Loop
}

// PartsOf are the parts of cfg (keys verify the passes; none: not
// checked): the one place they are made, for the daemon and the tests.
func PartsOf(cfg *config.Config, keys []ed25519.PublicKey) (Parts, error) {
	notifier, err := cfg.Notifier()
	if err != nil {
		return Parts{}, fmt.Errorf("notification templates: %w", err)
	}
	return Parts{Rules: cfg.EngineRules(), Notifier: notifier, Pings: cfg.PingDecoder(), Passes: cfg.PassDecoder(keys), Loop: cfg.Loop()}, nil
}

// ServiceDeps are what the caller provides.
type ServiceDeps struct {
	Config  *config.Config
	Parts   Parts
	Book    *processor.OrderBook
	Zones   func() *geo.Zones
	Sink    pipeline.Sink
	Metrics *pipeline.Metrics
	Edge    *edge.Metrics
	Log     *slog.Logger
	// Now is the wall clock; nil is time.Now (tests drive it).
	Now func() time.Time
	// Observe hears partitions being taken and released (see Group).
	Observe func(partition int, owned bool)
	// ArchiveOrders, when set, stores every order version (ClickHouse);
	// OrdersArchived tells when what it was handed is stored (see
	// OrdersTable.Archived).
	ArchiveOrders  func(pipeline.OrderRow)
	OrdersArchived func(done func(error))
	// Passes is the table of QR passes (nil: a new empty one);
	// ArchivePasses, when set, stores every pass version held.
	Passes        *processor.PassBook
	ArchivePasses func(pipeline.PassRow)
	// PassRescan spaces the passes rescans for new patients (default a
	// minute; tests shorten it).
	PassRescan time.Duration
	// StoreDispositions, when set, stores dispositions now (ClickHouse):
	// the dispositions topic is consumed only with it.
	StoreDispositions func(context.Context, []processor.Disposition) error
}

// NewService prepares the Kafka side; Run starts it.
func NewService(d ServiceDeps) (*Service, error) {
	k, err := NewClient(d.Config.Kafka, d.Log)
	if err != nil {
		return nil, err
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Passes == nil {
		d.Passes = processor.NewPassBook()
	}
	p := d.Parts
	if p.Notifier != nil {
		p.Notifier.OnCut = d.Metrics.NotificationsCut.Inc
	}
	producer := k.NewProducer(d.Edge)
	s := &Service{cfg: d.Config, kafka: k, producer: producer, log: d.Log}
	s.passes = &PassesTable{Kafka: k, Book: d.Passes, Orders: d.Book, Producer: producer, Metrics: d.Metrics, Log: d.Log,
		Decoder: p.Passes, Archive: d.ArchivePasses, Now: d.Now, RescanEvery: d.PassRescan}
	s.orders = &OrdersTable{Kafka: k, Book: d.Book, Zones: d.Zones, Producer: producer, Metrics: d.Metrics,
		Log: d.Log, MaxBytes: d.Config.Limits.MaxMessageBytes, Archive: d.ArchiveOrders, Archived: d.OrdersArchived, NewPatient: s.passes.Want}
	s.group = &Group{Kafka: k, Orders: d.Book, Passes: d.Passes, Zones: d.Zones, Rules: p.Rules, Notifier: p.Notifier, Decoder: p.Pings,
		Sink: d.Sink, Producer: producer, Changelog: k.NewChangelog(), Metrics: d.Metrics, Edge: d.Edge, Log: d.Log,
		Now: d.Now, Loop: p.Loop, Observe: d.Observe}
	if d.Config.Orders.CoPartitioned {
		// Every pass is held: no rescan for a patient whose order arrives.
		k.CoPartitionedOrders, s.passes.All, s.group.PartitionOrders, s.orders.NewPatient = true, true, s.orders, nil
	}
	if d.StoreDispositions != nil {
		s.disps = &Dispositions{Kafka: k, Producer: producer, Store: d.StoreDispositions, Stored: d.Metrics.Disposition,
			Rejected: func(r processor.Reason) { d.Metrics.DispositionsRejected.WithLabelValues(string(r)).Inc() },
			Log:      d.Log, MaxBytes: d.Config.Limits.MaxMessageBytes}
	}
	return s, nil
}

// PublishDisposition produces a disposition to the dispositions topic and
// returns once the broker acknowledged it.
func (s *Service) PublishDisposition(ctx context.Context, d *processor.Disposition) error {
	return s.kafka.PublishDisposition(ctx, s.producer, d)
}

// Group exposes the consumer group (for tests: which partitions it owns).
func (s *Service) Group() *Group { return s.group }

// OrdersLoaded reports whether the orders topic has been read to its end.
func (s *Service) OrdersLoaded() bool { return s.orders.Loaded() }

// PassesLoaded reports whether the passes topic has been read to its end
// once: until then a pass check cannot say "unknown".
func (s *Service) PassesLoaded() bool { return s.passes.Loaded() }

// Ready says why the Kafka side is not ready, or "" when it is.
func (s *Service) Ready(ctx context.Context) string {
	if !s.OrdersLoaded() {
		return "orders not yet read to the end of " + s.cfg.Kafka.Topics.Orders
	}
	if !s.passes.Loaded() {
		return "passes not yet read to the end of " + s.cfg.Kafka.Topics.Passes
	}
	if why := s.unreachable.Load(); why != nil {
		return *why
	}
	return s.group.Ready()
}

// Run checks the topics, reads the orders to their end, then consumes pings
// until ctx ends. On the way out the partitions drain and commit, and the
// producer's last records are acknowledged.
func (s *Service) Run(ctx context.Context) error {
	defer s.kafka.Close()
	if err := s.waitBrokers(ctx); err != nil {
		return err
	}
	if err := s.kafka.EnsureTopics(ctx); err != nil {
		return err
	}
	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error { return s.probe(ectx) })
	eg.Go(func() error { return s.orders.RunArchive(ectx) })
	if s.cfg.Orders.CoPartitioned {
		// Each partition's orders load when it is assigned (Group).
		s.orders.loaded.Store(true)
		s.log.Info("orders co-partitioned with pings: each partition's load when it is assigned", "topic", s.cfg.Kafka.Topics.Orders)
	} else {
		eg.Go(func() error { return s.orders.Run(ectx) })
	}
	if s.disps != nil { // people's decisions do not wait for the tables
		eg.Go(func() error { return s.disps.Run(ectx) })
	}
	// The passes after the orders (a pass is held only for a patient the
	// orders know), the pings after both: a ping is judged against the
	// tables as read to their ends at start.
	wait := func(loaded func() bool) bool {
		for !loaded() {
			if edge.Sleep(ectx, 20*time.Millisecond) != nil {
				return false
			}
		}
		return true
	}
	eg.Go(func() error {
		if !wait(s.orders.Loaded) {
			return nil
		}
		return s.passes.Run(ectx)
	})
	eg.Go(func() error {
		if !wait(s.orders.Loaded) || !wait(s.passes.Loaded) {
			return nil
		}
		return s.group.Run(ectx)
	})
	err := eg.Wait()
	if cerr := s.producer.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close producer: %w", cerr)
	}
	if cerr := s.group.Changelog.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close changelog: %w", cerr)
	}
	return err
}

// waitBrokers waits for a broker to answer, logging while it does not.
func (s *Service) waitBrokers(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		err := s.kafka.Reachable(ctx)
		if err == nil || errors.Is(err, context.Canceled) {
			return ctx.Err()
		}
		if attempt%10 == 0 {
			s.log.Warn("kafka unreachable; retrying (check kafka.brokers)", "brokers", s.kafka.brokers, "err", err)
		}
		if err := edge.Sleep(ctx, edge.Backoff(attempt)); err != nil {
			return err
		}
	}
}
