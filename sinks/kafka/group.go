package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/geo"
	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
	"github.com/qfence/qfence/sinks/edge"
)

// Group consumes the pings topic in the consumer group: one goroutine per
// assigned partition owns that partition's patients (pipeline.Partition),
// restored from the changelog before its first ping.
type Group struct {
	Kafka  *Client
	Orders *processor.OrderBook
	Passes *processor.PassBook
	Zones  func() *geo.Zones
	Rules  processor.Rules
	// Notifier renders notifications to patients (nil: none).
	Notifier  *processor.Notifier
	Decoder   processor.PingDecoder
	Sink      pipeline.Sink
	Producer  pipeline.Producer
	Changelog *Changelog
	Metrics   *pipeline.Metrics
	Edge      *edge.Metrics
	Log       *slog.Logger
	Now       func() time.Time
	// Loop tunes the partition loops (config.Loop).
	Loop config.Loop
	// Observe, when set, hears when this instance starts owning a partition
	// (after its state is restored) and stops (after its last commit).
	Observe func(partition int, owned bool)
	// PartitionOrders, when set (orders.co_partitioned), holds the orders
	// of each partition while it is assigned: loaded before its state is
	// restored, dropped once it is released.
	PartitionOrders interface {
		Hold(ctx context.Context, partition int) (release func(), err error)
	}

	inFlight  *semaphore.Weighted
	blocked   atomic.Int32
	restoring atomic.Int32
	// kept are the engines of partitions this instance gave up cleanly (its
	// state checkpointed and its offset committed), with where the
	// changelog and the offset stood then: given the partition back with
	// nothing written since by anyone, it resumes without a restore (a
	// broker restart or a rebalance that hands everything back otherwise
	// re-read every changelog).
	kept   map[int]keptEngine
	joined atomic.Bool
	mu     sync.Mutex
	owned  map[int]bool
}

// Ready says why the group is not ready, or "" when it is: it has joined,
// every assigned partition is restored, and the sinks are not holding it
// back.
func (g *Group) Ready() string {
	switch {
	case !g.joined.Load():
		return "not yet a member of the consumer group"
	case g.restoring.Load() > 0:
		return fmt.Sprintf("restoring the state of %d partitions", g.restoring.Load())
	case g.blocked.Load() > 0:
		return "back-pressure: limits.max_inflight_rows rows wait for the sinks"
	}
	return ""
}

// Owned returns the partitions this instance processes now.
func (g *Group) Owned() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []int
	for p := range g.owned {
		out = append(out, p)
	}
	return out
}

// Run joins the group and processes assignments until ctx ends; then the
// partitions drain, checkpoint and commit before it returns.
func (g *Group) Run(ctx context.Context) error {
	g.inFlight = semaphore.NewWeighted(g.Loop.MaxInFlight)
	topic := g.Kafka.cfg.Topics.Pings
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: g.Kafka.cfg.GroupID, Brokers: g.Kafka.brokers, Dialer: g.Kafka.dialer, Topics: []string{topic},
		StartOffset: kafka.FirstOffset, WatchPartitionChanges: true, PartitionWatchInterval: 10 * time.Second,
		HeartbeatInterval: g.Kafka.cfg.HeartbeatInterval, SessionTimeout: g.Kafka.cfg.SessionTimeout, RebalanceTimeout: g.Loop.Drain + 5*time.Second,
		JoinGroupBackoff: time.Second,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			g.Log.Warn("consumer group", "err", fmt.Sprintf(msg, args...))
		}),
	})
	if err != nil {
		return fmt.Errorf("consumer group %s: %w", g.Kafka.cfg.GroupID, err)
	}
	lctx, stopLag := context.WithCancel(ctx)
	eg, ectx := errgroup.WithContext(lctx)
	eg.Go(func() error { return g.lagLoop(ectx) })
	defer func() {
		cg.Close() // ends the generation: partitions drain and commit first
		stopLag()  // also when Run returns an error of its own
		_ = eg.Wait()
	}()
	for {
		gen, err := cg.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				return nil
			}
			if errors.Is(err, kafka.InvalidSessionTimeout) {
				// Retrying cannot help: no broker will take this member.
				return fmt.Errorf("consumer group %s: the brokers refuse kafka.session_timeout %s: it must lie within their group.min.session.timeout.ms and group.max.session.timeout.ms (Kafka's defaults: 6s and 30m); set kafka.session_timeout inside that range or change the brokers' settings: %w",
					g.Kafka.cfg.GroupID, g.Kafka.cfg.SessionTimeout, err)
			}
			g.Log.Warn("consumer group: no generation; retrying", "err", err)
			if err := edge.Sleep(ctx, time.Second); err != nil {
				return nil
			}
			continue
		}
		g.joined.Store(true)
		assigned := gen.Assignments[topic]
		g.Log.Info("partitions assigned", "generation", gen.ID, "partitions", len(assigned))
		g.forget(assigned)
		for _, a := range assigned {
			g.restoring.Add(1)
			gen.Start(func(gctx context.Context) {
				g.runPartition(gctx, gen, topic, a)
			})
		}
	}
}

type keptEngine struct {
	eng          *processor.Engine
	changelogEnd int64
	committed    int64
}

// keep remembers a cleanly released partition's engine; take hands it
// back when nothing moved since.
func (g *Group) keep(p int, k keptEngine) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.kept == nil {
		g.kept = map[int]keptEngine{}
	}
	g.kept[p] = k
}

func (g *Group) take(ctx context.Context, a kafka.PartitionAssignment) *processor.Engine {
	g.mu.Lock()
	k, ok := g.kept[a.ID]
	delete(g.kept, a.ID)
	g.mu.Unlock()
	if !ok || a.Offset != k.committed {
		return nil
	}
	end, err := g.Changelog.End(ctx, a.ID)
	if err != nil || end != k.changelogEnd {
		return nil
	}
	return k.eng
}

// forget drops the kept engines of partitions not assigned any more.
func (g *Group) forget(assigned []kafka.PartitionAssignment) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for p := range g.kept {
		if !slices.ContainsFunc(assigned, func(a kafka.PartitionAssignment) bool { return a.ID == p }) {
			delete(g.kept, p)
		}
	}
}

func (g *Group) runPartition(gctx context.Context, gen *kafka.Generation, topic string, a kafka.PartitionAssignment) {
	log := g.Log.With("partition", a.ID)
	start := time.Now()
	var (
		eng     *processor.Engine
		covered int64
		skipped int
		n       int
		err     error
	)
	if g.PartitionOrders != nil {
		release, err := g.PartitionOrders.Hold(gctx, a.ID)
		if err != nil {
			g.restoring.Add(-1)
			if gctx.Err() == nil {
				log.Error("loading the partition's orders failed", "err", err)
			}
			return
		}
		defer release() // after the partition's last commit
	}
	if eng = g.take(gctx, a); eng != nil {
		g.restoring.Add(-1)
		log.Info("partition resumed with the state this instance held (nothing written to it since)", "patients", eng.Patients())
		g.run(gctx, gen, topic, a, eng, log)
		return
	}
	// A restore that fails (a leader moving, a broker restarting) is tried
	// again here, with backoff, while the partition is ours: handing the
	// partition back to the group made the group rebalance in a loop.
	for attempt := 0; ; attempt++ {
		eng = processor.NewEngine(g.Rules, g.Orders)
		eng.UsePasses(g.Passes)
		covered, skipped = -1, 0
		n, err = g.Changelog.Restore(gctx, a.ID, func(key string, value []byte) error {
			var err error
			if key == processor.MetaKey {
				covered, err = eng.UnmarshalMeta(value)
			} else {
				err = eng.Restore(key, value)
			}
			if err != nil {
				// One bad record must not stop the partition: that patient (or
				// the partition's watermark) starts afresh.
				skipped++
				g.Metrics.StateRestoreErrors.Inc()
				log.Warn("a qfence-state record could not be decoded; skipped (its patient starts from no state)", "err", err)
			}
			return nil
		})
		if err == nil || gctx.Err() != nil {
			break
		}
		log.Warn("restore partition state failed; retrying", "attempt", attempt+1, "err", err)
		if edge.Sleep(gctx, edge.Backoff(attempt)) != nil {
			break
		}
	}
	g.restoring.Add(-1)
	if err != nil {
		return // the generation ended while restoring
	}
	log.Info("partition state restored", "records", n, "skipped", skipped, "patients", eng.Patients(), "took", time.Since(start).Round(time.Millisecond))
	if covered > 0 && covered > a.Offset { // a.Offset is FirstOffset (-2) when nothing was committed
		g.resumeAfterCheckpoint(gen, topic, &a, covered, log)
	}
	g.run(gctx, gen, topic, a, eng, log)
}

// resumeAfterCheckpoint moves the start past what the checkpoint covers.
func (g *Group) resumeAfterCheckpoint(gen *kafka.Generation, topic string, a *kafka.PartitionAssignment, covered int64, log *slog.Logger) {
	// Messages before the offset the checkpoint covers were decided, stored
	// and emitted before it was written: deciding them again against the
	// newer state would store them again as late pings. Resume after them.
	log.Info("resuming after the checkpoint", "committed", a.Offset, "covered", covered, "skipped_messages", covered-a.Offset)
	if err := gen.CommitOffsets(map[string]map[int]int64{topic: {a.ID: covered}}); err != nil {
		log.Warn("commit of the checkpointed offset failed; it is committed with the next batch", "err", err)
	}
	a.Offset = covered
}

// run consumes a partition whose engine is ready, until the generation
// ends; a clean end keeps the engine for a quick return.
func (g *Group) run(gctx context.Context, gen *kafka.Generation, topic string, a kafka.PartitionAssignment, eng *processor.Engine, log *slog.Logger) {
	g.setOwned(a.ID, true)
	defer g.setOwned(a.ID, false)
	p := &pipeline.Partition{
		ID: a.ID, Engine: eng, Zones: g.Zones, Decoder: g.Decoder, Fetcher: newFetcher(g.Kafka.fetch, topic, a.ID, a.Offset, log), Sink: g.Sink,
		Producer: g.Producer, Checkpointer: g.Changelog, Committer: committer{gen, topic},
		InFlight: g.inFlight, MaxInFlight: g.Loop.MaxInFlight, Blocked: &g.blocked, Start: a.Offset,
		Topics: pipeline.Topics{Pings: topic, Violations: g.Kafka.cfg.Topics.Violations, PingsDLQ: g.Kafka.cfg.Topics.PingsDLQ,
			Notifications: g.Kafka.cfg.Topics.Notifications},
		Notifier: g.Notifier, Metrics: g.Metrics, Log: log, Now: g.Now,
		MaxBatch: g.Loop.MaxBatch, CommitEvery: g.Loop.CommitEvery, IdleAfter: g.Loop.IdleAfter, Tick: g.Loop.Tick,
	}
	if err := p.Run(gctx, g.Loop.Drain); err != nil {
		log.Error("partition stopped", "err", err)
	}
	if !p.Clean || g.PartitionOrders != nil { // co-partitioned: its orders leave with it
		return
	}
	// The changelog's end now is where this engine's state was written
	// last: no one else can have written since, because the group gives
	// the partition to another member only after this function returns
	// (kafka-go's generation waits for its functions). The generation's
	// context is over, so ask with a fresh one.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 5*time.Second)
	defer cancel()
	if end, err := g.Changelog.End(ctx, a.ID); err == nil {
		g.keep(a.ID, keptEngine{eng: eng, changelogEnd: end, committed: p.Committed})
	}
}

func (g *Group) setOwned(p int, owned bool) {
	g.mu.Lock()
	if g.owned == nil {
		g.owned = make(map[int]bool)
	}
	if owned {
		g.owned[p] = true
		g.Edge.PartitionOwned.WithLabelValues(strconv.Itoa(p)).Set(1)
	} else {
		delete(g.owned, p)
		g.Edge.PartitionOwned.DeleteLabelValues(strconv.Itoa(p))
	}
	g.mu.Unlock()
	if g.Observe != nil {
		g.Observe(p, owned)
	}
}

// committer commits through the generation that owns the partition.
type committer struct {
	gen   *kafka.Generation
	topic string
}

func (c committer) Commit(_ context.Context, partition int, next int64) error {
	return c.gen.CommitOffsets(map[string]map[int]int64{c.topic: {partition: next}})
}

// lagLoop refreshes qfence_consumer_lag from the group's committed offsets
// and the partitions' end offsets (kafka-go's Reader lag is wrong in a
// group), every 10 s.
func (g *Group) lagLoop(ctx context.Context) error {
	topic := g.Kafka.cfg.Topics.Pings
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		if parts, err := g.Kafka.Partitions(ctx, topic); err == nil {
			n := parts[topic]
			ends, err1 := g.Kafka.EndOffsets(ctx, topic, n)
			committed, err2 := g.Kafka.CommittedOffsets(ctx, topic, n)
			if err1 == nil && err2 == nil {
				for p, end := range ends {
					c := committed[p]
					if c < 0 {
						c = 0
					}
					g.Edge.ConsumerLag.WithLabelValues(topic, strconv.Itoa(p)).Set(float64(max(0, end-c)))
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
