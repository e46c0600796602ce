package clickhouse

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/processor"
	"github.com/qfence/qfence/processor/pipeline"
	"github.com/qfence/qfence/sinks/edge"
)

// Sink is the analysts' sink: pings, events and orders, batched into
// native inserts. It implements pipeline.Sink: rows are acknowledged only
// after the insert that holds them succeeded. A failed insert is retried
// with backoff from qfence's own buffer (a clickhouse-go batch cannot be
// reused after a failed Send), so an outage delays rows but loses none.
type Sink struct {
	// Rules are the rule values the events are decided by, stored with
	// each event for its dossier (set before Run).
	Rules processor.Rules
	// Budget is limits.max_inflight_rows (set before Run; 0: none). Once
	// half of it waits here, the sink inserts at once instead of keeping
	// its pace of two inserts a second: the pipeline stops fetching at the
	// budget, so pacing then would cap an instance near Budget/0.7 s
	// (BENCHMARKS.md), and batches that large are what ClickHouse likes.
	Budget int
	// Gap is the least time between two flushes that half the budget does
	// not hurry (set before Run; 0: minInsertGap).
	Gap time.Duration
	// AuditDropped counts the audit rows dropped because maxAuditRows
	// waited already (qfence_api_audit_dropped_total).
	AuditDropped atomic.Int64

	conn    driver.Conn
	dials   *conns
	schema  Schema
	cfg     config.ClickHouse
	pseudo  *pseudonymizer
	metrics *edge.Metrics
	log     *slog.Logger

	mu      sync.Mutex
	pending chBuffer
	kick    chan struct{} // size 1: a pending flush request is enough
	failing atomic.Bool   // the last insert failed: not ready
	// unreachable is why the last probe failed (nil when it answered).
	unreachable atomic.Pointer[string]

	// Reused by the flush goroutine for every block.
	views    chunkViews
	inserted []int64
}

// chunkViews is what a ping chunk gives clickhouse-go for one block: its
// string columns as strings (views into the chunk, or pseudonyms), and its
// verdicts as the nullable column clickhouse-go takes.
type chunkViews struct {
	strs     [nStrCols][]string
	verified []*uint8
	counted  []*uint8
	flags    [][]string
}

// dropViews forgets the last chunk's views once its insert is over, so
// they keep nothing alive and cannot be read after the chunk is reused.
func (c *Sink) dropViews() {
	for i := range c.views.strs {
		clear(c.views.strs[i])
	}
}

// chBuffer is what waits for the next flush.
type chBuffer struct {
	pings   []*pingColumns // full chunks, then the one being filled
	rows    int
	events  []processor.Event
	notes   []processor.Notification
	orders  []pipeline.OrderRow
	passes  []pipeline.PassRow
	audit   []pipeline.AuditRow
	waiters []func(error)
}

// Open connects, learns the server's version and prepares the
// sink (the schema must exist: see Migrate).
func Open(ctx context.Context, cfg config.ClickHouse, pseudonymizeKey config.Secret, metrics *edge.Metrics, log *slog.Logger) (*Sink, error) {
	dials := &conns{}
	conn, v, err := dialClickHouse(ctx, cfg, dials, distributedSync(cfg))
	if err != nil {
		return nil, err
	}
	c := &Sink{conn: conn, dials: dials, cfg: cfg, metrics: metrics, log: log, kick: make(chan struct{}, 1),
		schema: Schema{DB: cfg.Database, F: FeaturesOf(v), RetentionDays: cfg.RetentionDays, Cluster: cfg.Cluster}}
	if pseudonymizeKey != "" {
		c.pseudo = newPseudonymizer([]byte(pseudonymizeKey))
	}
	log.Info("clickhouse connected", "addr", cfg.Addr, "version", fmt.Sprintf("%d.%d", v.Major, v.Minor),
		"compression", Compression(cfg).String(),
		"ttl", c.schema.F.TTL, "datetime64", c.schema.F.DateTime64, "pseudonymized", c.pseudo != nil)
	return c, nil
}

// Write implements pipeline.Sink.
func (c *Sink) Write(_ context.Context, out *pipeline.Output, done func(error)) {
	c.mu.Lock()
	c.pending.addPings(out.Rows, c.schema.F.DateTime64)
	c.pending.events = append(c.pending.events, out.Events...)
	c.pending.notes = append(c.pending.notes, out.Notifications...)
	c.pending.waiters = append(c.pending.waiters, done)
	full := c.pending.rows >= c.cfg.BatchRows || c.urgent()
	c.mu.Unlock()
	if full {
		c.nudge()
	}
}

// WriteOrders stores order versions (no acknowledgement: the orders topic
// is read again at every start, so a lost write comes back).
func (c *Sink) WriteOrders(rows []pipeline.OrderRow) {
	c.mu.Lock()
	c.pending.orders = append(c.pending.orders, rows...)
	c.mu.Unlock()
}

// ArchivePass stores one pass version or deletion (no acknowledgement,
// like orders).
func (c *Sink) ArchivePass(r pipeline.PassRow) {
	c.mu.Lock()
	c.pending.passes = append(c.pending.passes, r)
	c.mu.Unlock()
}

// Audit stores one API request (no acknowledgement: the trail is best
// effort across a ClickHouse outage only as far as the buffer goes: at
// most maxAuditRows wait, and what comes beyond is dropped and counted).
func (c *Sink) Audit(r pipeline.AuditRow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending.audit) >= maxAuditRows {
		c.AuditDropped.Add(1)
		return
	}
	c.pending.audit = append(c.pending.audit, r)
}

// maxAuditRows bounds the audit rows waiting for ClickHouse (a row is a few
// hundred bytes: the API bounds its path), and auditChunk the rows of one
// INSERT.
const (
	maxAuditRows = 20_000
	auditChunk   = 5_000
)

// Stored calls done once every row handed to the sink before it is
// inserted, with the flush's error (the OrdersTable's Archived).
func (c *Sink) Stored(done func(error)) {
	c.mu.Lock()
	c.pending.waiters = append(c.pending.waiters, done)
	c.mu.Unlock()
}

// ArchiveOrder stores one order version (the OrdersTable's Archive).
func (c *Sink) ArchiveOrder(r pipeline.OrderRow) { c.WriteOrders([]pipeline.OrderRow{r}) }

func (c *Sink) nudge() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Pending is how many ping rows wait for the next flush.
func (c *Sink) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending.rows
}

// Ready says why the sink is not ready, or "". It reads what the sink's
// own probe and inserts found: a readiness check never dials ClickHouse.
func (c *Sink) Ready(context.Context) string {
	if why := c.unreachable.Load(); why != nil {
		return *why
	}
	if c.failing.Load() {
		return "clickhouse inserts are failing (retrying)"
	}
	return ""
}

// probeEvery spaces the sink's reachability probes.
const probeEvery = 2 * time.Second

// probe pings the server every probeEvery until ctx ends, keeping
// unreachable current.
func (c *Sink) probe(ctx context.Context) {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, probeEvery)
		err := c.conn.Ping(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			why := "clickhouse unreachable: " + err.Error()
			c.unreachable.Store(&why)
		} else {
			c.unreachable.Store(nil)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// urgent reports whether half the in-flight budget waits for this sink
// (c.mu held).
func (c *Sink) urgent() bool { return c.Budget > 0 && c.pending.rows >= c.Budget/2 }

// waitGap waits until the gap (Gap, or minInsertGap) has passed since
// last, or less when half the budget comes to wait meanwhile: the pipeline
// stops at the budget, and sleeping the gap out (as the sink did) held a
// backlog drain at the default budget half of its time (BENCHMARKS.md).
// False when ctx ended.
func (c *Sink) waitGap(ctx context.Context, last time.Time) bool {
	least := c.Gap
	if least == 0 {
		least = minInsertGap
	}
	gap := time.NewTimer(least - time.Since(last))
	defer gap.Stop()
	for {
		c.mu.Lock()
		urgent := c.urgent()
		c.mu.Unlock()
		if urgent {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-gap.C:
			return true
		case <-c.kick:
		}
	}
}

// minInsertGap keeps inserts to at most two per second per table, however
// fast rows arrive: ClickHouse wants few large inserts.
const minInsertGap = 500 * time.Millisecond

// Run flushes every clickhouse.flush_interval, or sooner when
// clickhouse.batch_rows rows wait, until ctx ends; then it flushes what is
// left, retrying until stop ends. Retention runs at start and daily.
func (c *Sink) Run(ctx, stop context.Context) error {
	defer c.conn.Close()
	// Once stop ends, a flush waiting on a hung server is cut short: its
	// rows are consumed again at the next start.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-stop.Done():
			c.dials.closeAll()
		case <-done:
		}
	}()
	probeCtx, stopProbe := context.WithCancel(ctx)
	probed := make(chan struct{})
	go func() { defer close(probed); c.probe(probeCtx) }()
	defer func() { stopProbe(); <-probed }()
	if !c.schema.F.TTL {
		c.dropExpired(ctx)
	}
	tick := time.NewTicker(c.cfg.FlushInterval)
	defer tick.Stop()
	daily := time.NewTicker(24 * time.Hour)
	defer daily.Stop()
	last := time.Time{}
	for {
		select {
		case <-ctx.Done():
			c.flush(stop)
			return nil
		case <-tick.C:
		case <-c.kick:
			if !c.waitGap(ctx, last) {
				continue
			}
		case <-daily.C:
			if !c.schema.F.TTL {
				c.dropExpired(ctx)
			}
			continue
		}
		last = time.Now()
		c.flush(stop)
	}
}

// flush inserts everything pending, retrying until it succeeds or ctx ends,
// then tells the waiters.
func (c *Sink) flush(ctx context.Context) {
	c.mu.Lock()
	b := c.pending
	c.pending = chBuffer{}
	c.mu.Unlock()
	if b.rows+len(b.events)+len(b.notes)+len(b.orders)+len(b.passes)+len(b.audit) == 0 && len(b.waiters) == 0 {
		return
	}
	err := c.retry(ctx, "pings", b.rows, func(ctx context.Context) error { return c.insertPings(ctx, b.pings) })
	if err == nil {
		err = c.retry(ctx, "events", len(b.events), func(ctx context.Context) error { return c.insertEvents(ctx, b.events) })
	}
	if err == nil {
		err = c.retry(ctx, "notifications", len(b.notes), func(ctx context.Context) error { return c.insertNotifications(ctx, b.notes) })
	}
	if err == nil {
		err = c.retry(ctx, "orders", len(b.orders), func(ctx context.Context) error { return c.insertOrders(ctx, b.orders) })
	}
	if err == nil {
		err = c.retry(ctx, "passes", len(b.passes), func(ctx context.Context) error { return c.insertPasses(ctx, b.passes) })
	}
	for _, w := range b.waiters {
		w(err)
	}
	// The audit trail last, after the acknowledgements: its rows never
	// hold up the pings' commits.
	for rows := b.audit; err == nil && len(rows) > 0; rows = rows[min(len(rows), auditChunk):] {
		chunk := rows[:min(len(rows), auditChunk)]
		err = c.retry(ctx, "api_audit", len(chunk), func(ctx context.Context) error { return c.insertAudit(ctx, chunk) })
	}
	for _, p := range b.pings {
		p.reset()
		chunkPool.Put(p)
	}
}

func (c *Sink) retry(ctx context.Context, table string, n int, insert func(context.Context) error) error {
	if n == 0 {
		return nil
	}
	for attempt := 0; ; attempt++ {
		start := time.Now()
		ictx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		err := insert(ictx)
		cancel()
		if err == nil {
			c.failing.Store(false)
			c.metrics.ObserveFlush("clickhouse", start, n)
			return nil
		}
		c.failing.Store(true)
		c.metrics.SinkErrors.WithLabelValues("clickhouse").Inc()
		if attempt == 0 || attempt%20 == 0 {
			c.log.Warn("clickhouse insert failed; retrying", "table", table, "rows", n, "attempt", attempt+1, "err", err)
		}
		if edge.Sleep(ctx, edge.Backoff(attempt)) != nil {
			return fmt.Errorf("insert %d rows into %s: gave up when stopping: %w", n, table, err)
		}
	}
}
