package sinks

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/qfence/qfence/config"
	"github.com/qfence/qfence/processor"
)

// ClickHouse is the analysts' sink: pings, events and orders, batched into
// native inserts. It implements processor.Sink: rows are acknowledged only
// after the insert that holds them succeeded. A failed insert is retried
// with backoff from qfence's own buffer (a clickhouse-go batch cannot be
// reused after a failed Send), so an outage delays rows but loses none.
type ClickHouse struct {
	conn    driver.Conn
	dials   *conns
	schema  Schema
	cfg     config.ClickHouse
	pseudo  *pseudonymizer
	metrics *Metrics
	log     *slog.Logger

	mu      sync.Mutex
	pending chBuffer
	kick    chan struct{} // size 1: a pending flush request is enough
	failing atomic.Bool   // the last insert failed: not ready

	// Reused by the flush goroutine for every block.
	ids      []string
	inserted []int64
}

// chBuffer is what waits for the next flush.
type chBuffer struct {
	pings   []*pingColumns // full chunks, then the one being filled
	rows    int
	events  []processor.Event
	orders  []OrderRow
	waiters []func(error)
}

// chunkRows is the size of a ping chunk, and so of a native block: rows
// are gathered into fixed-size chunks recycled through a pool and sent one
// block per chunk within one INSERT (the server squashes them into one
// part). Growing one slice per column to a whole flush copied it again and
// again, and a multi-megabyte copy cannot be preempted, so it stalled the
// garbage collector too (BENCHMARKS.md).
const chunkRows = 16384

var chunkPool = sync.Pool{New: func() any { return newPingColumns(chunkRows) }}

// pingColumns is a chunk of pending ping rows already in ClickHouse's
// column layout: Write converts on the partitions' goroutines, a flush
// hands the columns to the batch whole (row-by-row appends go through
// reflection and ran at a third of clickhouse-client's rate). DeviceID and
// Source are copied into the chunk's own bytes: aliasing them would keep
// every whole Kafka message alive until the insert (about 300 bytes per
// row in flight, BENCHMARKS.md).
type pingColumns struct {
	bytes               []byte // backs dev and src
	ids, district, zone []string
	ts                  []int64 // Unix ms for DateTime64, Unix seconds for DateTime (what clickhouse-go takes)
	ms                  []uint16
	lat, lon            []float64
	acc, dist           []float32
	state, flag         []int8
	inBreach, mock      []uint8
	dev, src            [][]byte
}

func newPingColumns(n int) *pingColumns {
	return &pingColumns{
		ids: make([]string, 0, n), district: make([]string, 0, n), zone: make([]string, 0, n),
		ts: make([]int64, 0, n), ms: make([]uint16, 0, n), lat: make([]float64, 0, n), lon: make([]float64, 0, n),
		acc: make([]float32, 0, n), dist: make([]float32, 0, n), state: make([]int8, 0, n), flag: make([]int8, 0, n),
		inBreach: make([]uint8, 0, n), mock: make([]uint8, 0, n), dev: make([][]byte, 0, n), src: make([][]byte, 0, n),
		bytes: make([]byte, 0, 32*n),
	}
}

func (p *pingColumns) len() int { return len(p.ids) }

// reset empties the chunk for reuse, dropping what it references.
func (p *pingColumns) reset() {
	clear(p.ids)
	clear(p.district)
	clear(p.zone)
	clear(p.dev)
	clear(p.src)
	p.bytes = p.bytes[:0]
	p.ids, p.district, p.zone, p.ts, p.ms = p.ids[:0], p.district[:0], p.zone[:0], p.ts[:0], p.ms[:0]
	p.lat, p.lon, p.acc, p.dist = p.lat[:0], p.lon[:0], p.acc[:0], p.dist[:0]
	p.state, p.flag, p.inBreach, p.mock, p.dev, p.src = p.state[:0], p.flag[:0], p.inBreach[:0], p.mock[:0], p.dev[:0], p.src[:0]
}

func (p *pingColumns) add(r *processor.Track, datetime64 bool) {
	p.ids = append(p.ids, r.PatientID) // pseudonymised at the flush
	p.district, p.zone = append(p.district, r.District), append(p.zone, r.Zone)
	if datetime64 {
		p.ts = append(p.ts, r.TS)
	} else {
		p.ts, p.ms = append(p.ts, r.TS/1000), append(p.ms, uint16(r.TS%1000))
	}
	p.lat, p.lon = append(p.lat, r.Lat), append(p.lon, r.Lon)
	p.acc, p.dist = append(p.acc, r.Accuracy), append(p.dist, r.Distance)
	p.state, p.flag = append(p.state, int8(r.State)), append(p.flag, int8(r.Flag)) // the Enum8 values are the Go constants
	p.inBreach, p.mock = append(p.inBreach, b2u(r.InBreach)), append(p.mock, b2u(r.Mock))
	p.dev, p.src = append(p.dev, p.copyBytes(r.DeviceID)), append(p.src, p.copyBytes(r.Source))
}

// copyBytes copies b into the chunk's bytes. When they are full a new
// array takes over; the rows before keep the old one alive until reset.
func (p *pingColumns) copyBytes(b []byte) []byte {
	if len(p.bytes)+len(b) > cap(p.bytes) {
		p.bytes = make([]byte, 0, max(cap(p.bytes), len(b)))
	}
	start := len(p.bytes)
	p.bytes = append(p.bytes, b...)
	return p.bytes[start:len(p.bytes):len(p.bytes)]
}

// addPings appends rows to the buffer's chunks.
func (b *chBuffer) addPings(rows []processor.Track, datetime64 bool) {
	for i := range rows {
		n := len(b.pings)
		if n == 0 || b.pings[n-1].len() == chunkRows {
			b.pings = append(b.pings, chunkPool.Get().(*pingColumns))
			n++
		}
		b.pings[n-1].add(&rows[i], datetime64)
	}
	b.rows += len(rows)
}

// OrderRow is one order version as received, or a revocation.
type OrderRow struct {
	Order    processor.Order
	Revoked  bool
	Received time.Time
}

// OpenClickHouse connects, learns the server's version and prepares the
// sink (the schema must exist: see Migrate).
func OpenClickHouse(ctx context.Context, cfg config.ClickHouse, pseudonymizeKey config.Secret, metrics *Metrics, log *slog.Logger) (*ClickHouse, error) {
	dials := &conns{}
	conn, v, err := dialClickHouse(ctx, cfg, dials)
	if err != nil {
		return nil, err
	}
	c := &ClickHouse{conn: conn, dials: dials, cfg: cfg, metrics: metrics, log: log, kick: make(chan struct{}, 1),
		schema: Schema{DB: cfg.Database, F: FeaturesOf(v), RetentionDays: cfg.RetentionDays}}
	if pseudonymizeKey != "" {
		c.pseudo = newPseudonymizer([]byte(pseudonymizeKey))
	}
	log.Info("clickhouse connected", "addr", cfg.Addr, "version", fmt.Sprintf("%d.%d", v.Major, v.Minor),
		"compression", compressionOf(cfg).String(),
		"ttl", c.schema.F.TTL, "datetime64", c.schema.F.DateTime64, "pseudonymized", c.pseudo != nil)
	return c, nil
}

// ConnectClickHouse connects as qfence does (address, credentials, TLS,
// compression, timeouts), for the tools that query what qfence stored.
func ConnectClickHouse(ctx context.Context, cfg config.ClickHouse) (driver.Conn, error) {
	conn, _, err := dialClickHouse(ctx, cfg, &conns{})
	return conn, err
}

// chDialTimeout bounds a connection and its handshake.
const chDialTimeout = 5 * time.Second

// dialClickHouse connects through dials, which can close every connection
// it made.
func dialClickHouse(ctx context.Context, cfg config.ClickHouse, dials *conns) (driver.Conn, Version, error) {
	tlsCfg, err := TLSConfig(cfg.TLS)
	if err != nil {
		return nil, Version{}, fmt.Errorf("clickhouse.tls: %w", err)
	}
	dials.tls = tlsCfg
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr: []string{cfg.Addr}, DialContext: dials.dial,
		Auth:        clickhouse.Auth{Username: cfg.Username, Password: string(cfg.Password)},
		Compression: &clickhouse.Compression{Method: compressionOf(cfg)},
		DialTimeout: chDialTimeout, ReadTimeout: cfg.Timeout, MaxOpenConns: 4,
	})
	if err != nil {
		return nil, Version{}, fmt.Errorf("clickhouse %s: %w", cfg.Addr, err)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := conn.Ping(pctx); err != nil {
		conn.Close()
		var ex *clickhouse.Exception
		if errors.As(err, &ex) { // the server answered and said no
			return nil, Version{}, fmt.Errorf("clickhouse %s refused the connection (check clickhouse.username and clickhouse.password): %w", cfg.Addr, err)
		}
		return nil, Version{}, fmt.Errorf("clickhouse %s does not answer (is it running? check clickhouse.addr and clickhouse.tls): %w", cfg.Addr, err)
	}
	sv, err := conn.ServerVersion()
	if err != nil {
		conn.Close()
		return nil, Version{}, fmt.Errorf("clickhouse server version: %w", err)
	}
	return conn, Version{int(sv.Version.Major), int(sv.Version.Minor)}, nil
}

// conns dials ClickHouse (over TLS when configured) and can close every
// connection it made at once. clickhouse-go's handshake waits for the
// server up to the dial timeout whatever the context says, so with the
// server hung a last flush would hold SIGTERM past shutdown_timeout by that
// much; closing the connections ends the wait.
type conns struct {
	tls  *tls.Config
	mu   sync.Mutex
	open map[*trackedConn]struct{}
}

type trackedConn struct {
	net.Conn
	set *conns
}

func (d *conns) dial(ctx context.Context, addr string) (net.Conn, error) {
	nd := &net.Dialer{Timeout: chDialTimeout}
	var c net.Conn
	var err error
	if d.tls != nil {
		c, err = (&tls.Dialer{NetDialer: nd, Config: d.tls}).DialContext(ctx, "tcp", addr)
	} else {
		c, err = nd.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	t := &trackedConn{Conn: c, set: d}
	d.mu.Lock()
	if d.open == nil {
		d.open = make(map[*trackedConn]struct{})
	}
	d.open[t] = struct{}{}
	d.mu.Unlock()
	return t, nil
}

func (t *trackedConn) Close() error {
	t.set.mu.Lock()
	delete(t.set.open, t)
	t.set.mu.Unlock()
	return t.Conn.Close()
}

// closeAll closes every open connection: what waits on one fails at once.
func (d *conns) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for t := range d.open {
		_ = t.Conn.Close()
	}
}

// compressionOf is clickhouse.compression's method. auto follows
// clickhouse-client since ClickHouse 21.4: no compression to a loopback
// address, where it only costs CPU on both ends (LZ4 was 8 % of qfence's
// CPU in the drain benchmark, and the server's to undo), LZ4 elsewhere.
func compressionOf(cfg config.ClickHouse) clickhouse.CompressionMethod {
	switch cfg.Compression {
	case "none":
		return clickhouse.CompressionNone
	case "zstd":
		return clickhouse.CompressionZSTD
	case "auto":
		host, _, _ := net.SplitHostPort(cfg.Addr)
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return clickhouse.CompressionNone
		}
	}
	return clickhouse.CompressionLZ4
}

// Migrate creates or upgrades the schema; running it again changes nothing.
func Migrate(ctx context.Context, cfg config.ClickHouse, log *slog.Logger) error {
	conn, v, err := dialClickHouse(ctx, cfg, &conns{})
	if err != nil {
		return err
	}
	defer conn.Close()
	s := Schema{DB: cfg.Database, F: FeaturesOf(v), RetentionDays: cfg.RetentionDays}
	applied := map[uint32]bool{}
	if rows, err := conn.Query(ctx, fmt.Sprintf("SELECT version FROM %s.schema_migrations", cfg.Database)); err == nil {
		for rows.Next() {
			var ver uint32
			if err := rows.Scan(&ver); err != nil {
				rows.Close()
				return fmt.Errorf("read schema_migrations: %w", err)
			}
			applied[ver] = true
		}
		rows.Close()
	}
	for i, stmts := range s.Migrations() {
		ver := uint32(i + 1)
		if applied[ver] {
			continue
		}
		for _, stmt := range stmts {
			if err := conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("migration %d: %w\n%s", ver, err, stmt)
			}
		}
		// A batch, not INSERT … VALUES through Exec: the latter hangs on 18.16.
		b, err := conn.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.schema_migrations (version, applied_at)", cfg.Database))
		if err == nil {
			if err = b.Append(ver, time.Now().UTC()); err == nil {
				err = send(b, 1, "schema_migrations")
			}
		}
		if err != nil {
			return fmt.Errorf("record migration %d: %w", ver, err)
		}
		log.Info("schema migrated", "database", cfg.Database, "version", ver, "server", fmt.Sprintf("%d.%d", v.Major, v.Minor))
	}
	return nil
}

// Write implements processor.Sink.
func (c *ClickHouse) Write(_ context.Context, rows []processor.Track, events []processor.Event, done func(error)) {
	c.mu.Lock()
	c.pending.addPings(rows, c.schema.F.DateTime64)
	c.pending.events = append(c.pending.events, events...)
	c.pending.waiters = append(c.pending.waiters, done)
	full := c.pending.rows >= c.cfg.BatchRows
	c.mu.Unlock()
	if full {
		c.nudge()
	}
}

// WriteOrders stores order versions (no acknowledgement: the orders topic
// is read again at every start, so a lost write comes back).
func (c *ClickHouse) WriteOrders(rows []OrderRow) {
	c.mu.Lock()
	c.pending.orders = append(c.pending.orders, rows...)
	c.mu.Unlock()
}

// ArchiveOrder stores one order version (the OrdersTable's Archive).
func (c *ClickHouse) ArchiveOrder(r OrderRow) { c.WriteOrders([]OrderRow{r}) }

func (c *ClickHouse) nudge() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Ready says why the sink is not ready, or "".
func (c *ClickHouse) Ready(ctx context.Context) string {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.conn.Ping(pctx); err != nil {
		return "clickhouse unreachable: " + err.Error()
	}
	if c.failing.Load() {
		return "clickhouse inserts are failing (retrying)"
	}
	return ""
}

// minInsertGap keeps inserts to at most two per second per table, however
// fast rows arrive: ClickHouse wants few large inserts.
const minInsertGap = 500 * time.Millisecond

// Run flushes every clickhouse.flush_interval, or sooner when
// clickhouse.batch_rows rows wait, until ctx ends; then it flushes what is
// left, retrying until stop ends. Retention runs at start and daily.
func (c *ClickHouse) Run(ctx, stop context.Context) error {
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
			if wait := minInsertGap - time.Since(last); wait > 0 {
				if sleep(ctx, wait) != nil {
					continue
				}
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
func (c *ClickHouse) flush(ctx context.Context) {
	c.mu.Lock()
	b := c.pending
	c.pending = chBuffer{}
	c.mu.Unlock()
	if b.rows+len(b.events)+len(b.orders) == 0 && len(b.waiters) == 0 {
		return
	}
	err := c.retry(ctx, "pings", b.rows, func(ctx context.Context) error { return c.insertPings(ctx, b.pings) })
	if err == nil {
		err = c.retry(ctx, "events", len(b.events), func(ctx context.Context) error { return c.insertEvents(ctx, b.events) })
	}
	if err == nil {
		err = c.retry(ctx, "orders", len(b.orders), func(ctx context.Context) error { return c.insertOrders(ctx, b.orders) })
	}
	for _, w := range b.waiters {
		w(err)
	}
	for _, p := range b.pings {
		p.reset()
		chunkPool.Put(p)
	}
}

func (c *ClickHouse) retry(ctx context.Context, table string, n int, insert func(context.Context) error) error {
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
			c.metrics.observeFlush("clickhouse", start, n)
			return nil
		}
		c.failing.Store(true)
		c.metrics.SinkErrors.WithLabelValues("clickhouse").Inc()
		if attempt == 0 || attempt%20 == 0 {
			c.log.Warn("clickhouse insert failed; retrying", "table", table, "rows", n, "attempt", attempt+1, "err", err)
		}
		if sleep(ctx, backoff(attempt)) != nil {
			return fmt.Errorf("insert %d rows into %s: gave up when stopping: %w", n, table, err)
		}
	}
}

// send checks that the batch holds every row before sending it.
func send(b driver.Batch, want int, table string) error {
	if got := b.Rows(); got != want {
		_ = b.Abort()
		return fmt.Errorf("BUG: %s batch holds %d rows, want %d", table, got, want)
	}
	return b.Send()
}

func (c *ClickHouse) id(patient string) string {
	if c.pseudo == nil {
		return patient
	}
	return c.pseudo.of(patient)
}

// appendTime appends a millisecond time as DateTime64, or DateTime plus ms.
func (c *ClickHouse) appendTime(vals []any, ms int64) []any {
	t := time.UnixMilli(ms).UTC()
	if c.schema.F.DateTime64 {
		return append(vals, t)
	}
	return append(vals, t.Truncate(time.Second), uint16(ms%1000))
}

// insertPings sends the chunks as one INSERT, a native block per chunk,
// each checked to hold the chunk's rows. The column order is
// Schema.Columns("pings").
func (c *ClickHouse) insertPings(ctx context.Context, chunks []*pingColumns) error {
	b, err := c.conn.PrepareBatch(ctx, c.schema.Insert("pings"))
	if err != nil {
		return err
	}
	inserted := c.inserted[:0] // DateTime: Unix seconds
	now := time.Now().Unix()
	for range chunkRows {
		inserted = append(inserted, now)
	}
	c.inserted = inserted
	cols := make([]any, 0, 16)
	for _, p := range chunks {
		n := p.len()
		ids := p.ids
		if c.pseudo != nil {
			ids = c.ids[:0]
			for _, id := range p.ids {
				ids = append(ids, c.pseudo.of(id))
			}
			c.ids = ids
		}
		cols = append(cols[:0], ids, p.ts)
		if !c.schema.F.DateTime64 {
			cols = append(cols, p.ms)
		}
		cols = append(cols, p.lat, p.lon, p.acc, p.state, p.dist, p.district, p.zone, p.inBreach, p.flag, p.mock, p.dev, p.src, inserted[:n])
		for i, col := range cols {
			if err := b.Column(i).Append(col); err != nil {
				_ = b.Abort()
				return fmt.Errorf("append pings column %s: %w", c.schema.Columns("pings")[i], err)
			}
		}
		if got := b.Rows(); got != n {
			_ = b.Abort()
			return fmt.Errorf("BUG: pings block holds %d rows, want %d", got, n)
		}
		if err := b.Flush(); err != nil {
			_ = b.Abort()
			return err
		}
	}
	return b.Send()
}

func (c *ClickHouse) insertEvents(ctx context.Context, events []processor.Event) error {
	b, err := c.conn.PrepareBatch(ctx, c.schema.Insert("events"))
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	vals := make([]any, 0, 32)
	for i := range events {
		e := &events[i]
		var ended *time.Time
		if e.EndedAt != 0 {
			t := time.UnixMilli(e.EndedAt).UTC()
			if !c.schema.F.DateTime64 {
				t = t.Truncate(time.Second)
			}
			ended = &t
		}
		vals = append(vals[:0], e.IDString(), e.Type.String(), c.id(e.PatientID))
		vals = c.appendTime(vals, e.At)
		vals = c.appendTime(vals, e.StartedAt)
		vals = append(vals, ended, e.DurationS, e.Reason, e.Location.Lat, e.Location.Lon, e.Location.Accuracy, e.Location.Distance,
			e.MaxDistance, e.Home[1], e.Home[0], e.RadiusM, e.District, e.Zone, string(processor.AppendEvidenceJSON(nil, e.Evidence)), now)
		if err := b.Append(vals...); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append event: %w", err)
		}
	}
	return send(b, len(events), "events")
}

func (c *ClickHouse) insertOrders(ctx context.Context, rows []OrderRow) error {
	b, err := c.conn.PrepareBatch(ctx, c.schema.Insert("orders"))
	if err != nil {
		return err
	}
	for _, r := range rows {
		o := &r.Order
		var ends *time.Time
		if !o.Open() && o.EndsAt != 0 {
			t := time.UnixMilli(o.EndsAt).UTC()
			ends = &t
		}
		if err := b.Append(c.id(o.PatientID), orderVersion(r), b2u(r.Revoked), o.Home[1], o.Home[0], o.RadiusM,
			time.UnixMilli(o.StartsAt).UTC(), ends, o.District, r.Received.UTC()); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append order: %w", err)
		}
	}
	return send(b, len(rows), "orders")
}

// orderVersion identifies an order version by its content, so reading the
// orders topic again writes the same rows, which collapse.
func orderVersion(r OrderRow) uint64 {
	h := fnv.New64a()
	o := &r.Order
	fmt.Fprintf(h, "%s|%v|%v|%v|%d|%d|%s|%v", o.PatientID, o.Home[0], o.Home[1], o.RadiusM, o.StartsAt, o.EndsAt, o.District, r.Revoked)
	return h.Sum64()
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// dropExpired is retention for servers without TTL: it drops every day
// partition older than clickhouse.retention_days.
func (c *ClickHouse) dropExpired(ctx context.Context) {
	cutoff := time.Now().UTC().AddDate(0, 0, -c.cfg.RetentionDays).Format("20060102")
	for _, t := range Tables {
		rows, err := c.conn.Query(ctx, fmt.Sprintf(
			"SELECT DISTINCT partition FROM system.parts WHERE database = '%s' AND table = '%s' AND active AND partition < '%s'",
			c.cfg.Database, t.Name, cutoff))
		if err != nil {
			c.log.Warn("retention: list partitions failed", "table", t.Name, "err", err)
			continue
		}
		var parts []string
		for rows.Next() {
			var p string
			if rows.Scan(&p) == nil {
				parts = append(parts, p)
			}
		}
		rows.Close()
		for _, p := range parts {
			if err := c.conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s.%s DROP PARTITION %s", c.cfg.Database, t.Name, p)); err != nil {
				c.log.Warn("retention: drop partition failed", "table", t.Name, "partition", p, "err", err)
				continue
			}
			c.log.Info("retention: partition dropped", "table", t.Name, "partition", p, "retention_days", c.cfg.RetentionDays)
		}
	}
}

// DropExpired runs retention now (for tests and operators).
func (c *ClickHouse) DropExpired(ctx context.Context) { c.dropExpired(ctx) }

// pseudonymizer maps patient ids to the first 32 hex digits of their
// HMAC-SHA256 under the configured key. Only the flush goroutine uses it.
type pseudonymizer struct {
	key   []byte
	cache map[string]string
}

func newPseudonymizer(key []byte) *pseudonymizer {
	return &pseudonymizer{key: key, cache: make(map[string]string)}
}

// Pseudonym is the pseudonym of id under key (shared/CONTRACT.md 3.2).
func Pseudonym(key []byte, id string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

func (p *pseudonymizer) of(id string) string {
	if v, ok := p.cache[id]; ok {
		return v
	}
	if len(p.cache) > 2_000_000 { // bound the cache; it refills with who pings now
		clear(p.cache)
	}
	v := Pseudonym(p.key, id)
	p.cache[strings.Clone(id)] = v
	return v
}
